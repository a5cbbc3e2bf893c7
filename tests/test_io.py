"""Reading, writing (atomic), validation and bit-depth conversions."""
import os

import cv2
import numpy as np
import pytest

import pyfusion.io as pio
from pyfusion.io import FusionInputError, from_unit, read_image, to_unit, validate_images, write_image


def rgb(h=20, w=24, dtype=np.uint8, seed=0):
    hi = np.iinfo(dtype).max
    return np.random.default_rng(seed).integers(0, hi + 1, size=(h, w, 3), dtype=np.int64).astype(dtype)


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("colour", [False, True])
def test_roundtrip_keeps_bit_depth_and_channels(tmp_path, ext, dtype, colour):
    img = rgb(dtype=dtype)
    if not colour:
        img = img[:, :, 0].copy()
    path = write_image(tmp_path / f"x{ext}", img)
    back = read_image(path)
    assert back.dtype == img.dtype and back.shape == img.shape
    np.testing.assert_array_equal(back, img)


def test_channel_order_on_disk_is_bgr(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    img[..., 0] = 200  # red
    write_image(tmp_path / "red.png", img)
    raw = cv2.imread(str(tmp_path / "red.png"), cv2.IMREAD_UNCHANGED)
    assert raw[0, 0].tolist() == [0, 0, 200]
    assert read_image(tmp_path / "red.png")[0, 0].tolist() == [200, 0, 0]


def test_alpha_channel_is_dropped(tmp_path):
    bgra = np.zeros((16, 16, 4), np.uint8)
    bgra[..., 0], bgra[..., 2], bgra[..., 3] = 10, 30, 128
    cv2.imwrite(str(tmp_path / "a.png"), bgra)
    img = read_image(tmp_path / "a.png")
    assert img.shape == (16, 16, 3)
    assert img[0, 0].tolist() == [30, 0, 10]


def test_float_tiff_roundtrip(tmp_path):
    img = np.random.default_rng(0).random((16, 17)).astype(np.float32)
    np.testing.assert_array_equal(read_image(write_image(tmp_path / "f.tif", img)), img)


@pytest.mark.parametrize("content, what", [
    (None, "no such file"), (b"", "empty"), (b"not an image at all", "cannot decode"),
])
def test_unreadable_files(tmp_path, content, what):
    path = tmp_path / "bad.png"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(FusionInputError, match=what):
        read_image(path)


@pytest.mark.parametrize("ext", [".png", ".jpg", ".tif"])
def test_truncated_files_are_rejected(tmp_path, ext):
    ok, buf = cv2.imencode(ext, rgb(64, 64))
    data = buf.tobytes()
    path = tmp_path / f"t{ext}"
    path.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(FusionInputError) as e:
        read_image(path)
    assert "\n" not in str(e.value)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(FusionInputError, match="directory"):
        read_image(tmp_path)


def test_nonfinite_float_tiff_is_rejected(tmp_path):
    img = np.zeros((16, 16), np.float32)
    img[3, 3] = np.nan
    cv2.imwrite(str(tmp_path / "n.tif"), img)
    with pytest.raises(FusionInputError, match="non-finite"):
        read_image(tmp_path / "n.tif")


def test_write_refuses_existing_file_unless_forced(tmp_path):
    path = tmp_path / "o.png"
    write_image(path, rgb())
    with pytest.raises(FusionInputError, match="already exists"):
        write_image(path, rgb(seed=1))
    np.testing.assert_array_equal(read_image(path), rgb())
    write_image(path, rgb(seed=1), force=True)
    np.testing.assert_array_equal(read_image(path), rgb(seed=1))


@pytest.mark.parametrize("name, img, what", [
    ("o.xyz", rgb(), "unsupported output format"),
    ("o.jpg", rgb(dtype=np.uint16), "cannot store uint16"),
    ("o.png", rgb().astype(np.float32), "cannot store float32"),
    ("missing/o.png", rgb(), "does not exist"),
])
def test_write_errors_leave_nothing(tmp_path, name, img, what):
    with pytest.raises(FusionInputError, match=what):
        write_image(tmp_path / name, img)
    assert list(tmp_path.iterdir()) == []


def test_failed_replace_leaves_nothing_and_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "o.png"
    write_image(path, rgb())
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pio.os, "replace", boom)
    with pytest.raises(FusionInputError, match="No space left"):
        write_image(path, rgb(seed=2), force=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.png"]
    assert path.read_bytes() == before


def test_interrupted_write_leaves_nothing(tmp_path, monkeypatch):
    def boom(fd):
        raise KeyboardInterrupt

    monkeypatch.setattr(pio.os, "fsync", boom)
    with pytest.raises(KeyboardInterrupt):
        write_image(tmp_path / "o.png", rgb())
    assert list(tmp_path.iterdir()) == []


def test_written_file_has_normal_permissions(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = write_image(tmp_path / "p.png", rgb())
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_unit_conversions_match_matlab_rounding():
    assert to_unit(np.array([255], np.uint8))[0] == 1.0
    assert to_unit(np.array([65535], np.uint16))[0] == 1.0
    # MATLAB uint8() rounds half away from zero and saturates
    x = np.array([2.5, 3.5, 254.5, 300.0, -4.0]) / 255.0
    np.testing.assert_array_equal(from_unit(x, np.uint8), [3, 4, 255, 255, 0])
    assert from_unit(np.array([40000.5 / 65535]), np.uint16)[0] == 40001
    assert from_unit(np.array([1.2]), np.float32).dtype == np.float32


@pytest.mark.parametrize("images, what", [
    ([rgb()], "at least two"),
    ([rgb(), rgb(20, 25)], "size 25x20 differs"),
    ([rgb(), rgb()[:, :, 0]], "channel"),
    ([rgb(), rgb(dtype=np.uint16)], "pixel type"),
    ([rgb().astype(np.int32), rgb().astype(np.int32)], "unsupported pixel type"),
    ([np.zeros((20, 20, 4), np.uint8)] * 2, "alpha"),
    ([np.full((20, 20), np.inf), np.zeros((20, 20))], "non-finite"),
    ([np.full((20, 20), 2.0), np.zeros((20, 20))], r"\[0, 1\]"),
])
def test_validate_images_errors(images, what):
    with pytest.raises(FusionInputError, match=what) as e:
        validate_images(images)
    assert "\n" not in str(e.value)
    assert isinstance(e.value, ValueError)


def test_minimum_size_is_the_callers():
    """Each method states its smallest side (cnn: its 16x16 patch); the I/O layer only enforces it."""
    validate_images([rgb(15, 30), rgb(15, 30)])
    with pytest.raises(FusionInputError, match=r"30x15 is smaller than 16x16 \(the patch\)"):
        validate_images([rgb(15, 30), rgb(15, 30)], min_size=16, min_reason="the patch")


# ------------------------------------------------------------------------------------------ decoder limits
def _png_chunk(kind: bytes, payload: bytes) -> bytes:
    import struct
    import zlib

    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def _huge_png(width=60000, height=60000) -> bytes:
    """A few-byte PNG declaring ``width x height`` (valid IHDR CRC, one tiny IDAT, IEND)."""
    import struct
    import zlib

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", zlib.compress(b"\0" * 16))
            + _png_chunk(b"IEND", b""))


def _huge_jpeg(width=60000, height=60000) -> bytes:
    """A real small JPEG whose SOF0 frame header is patched to declare ``width x height``."""
    ok, buf = cv2.imencode(".jpg", rgb(16, 16))
    data = bytearray(buf.tobytes())
    i = data.index(b"\xff\xc0")
    data[i + 5:i + 7] = height.to_bytes(2, "big")
    data[i + 7:i + 9] = width.to_bytes(2, "big")
    return bytes(data)


def _huge_tiff(width=60000, height=60000) -> bytes:
    """A little-endian baseline TIFF header declaring ``width x height`` 8-bit gray, one short strip."""
    import struct

    entries = [(256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
               (273, 4, 1, 8 + 2 + 12 * 9 + 4), (277, 3, 1, 1), (278, 4, 1, height), (279, 4, 1, 16)]
    ifd = struct.pack("<H", len(entries)) + b"".join(
        struct.pack("<HHI", tag, typ, cnt) + (struct.pack("<HH", val, 0) if typ == 3 else struct.pack("<I", val))
        for tag, typ, cnt, val in entries) + struct.pack("<I", 0)
    return b"II*\x00" + struct.pack("<I", 8) + ifd + b"\0" * 16


@pytest.mark.parametrize("ext, make", [(".png", _huge_png), (".jpg", _huge_jpeg)])
def test_image_above_decoder_limit_is_one_line_error(tmp_path, ext, make):
    path = tmp_path / f"huge{ext}"
    path.write_bytes(make())
    assert pio.image_header_size(path.read_bytes()) == (60000, 60000)
    with pytest.raises(FusionInputError, match=r"image of 60000x60000 exceeds the decoder limit") as e:
        read_image(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_tiff_above_decoder_limit_is_one_line_error(tmp_path):
    path = tmp_path / "huge.tif"
    path.write_bytes(_huge_tiff())
    assert pio.image_header_size(path.read_bytes()) == (60000, 60000)
    with pytest.raises(FusionInputError, match=r"image of 60000x60000 exceeds the decoder limit") as e:
        read_image(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_opencv_refusal_is_one_line_error(tmp_path, monkeypatch):
    """A format whose header is not parsed here: OpenCV's own limit check (an exception) becomes one line."""
    path = tmp_path / "huge.tif"
    path.write_bytes(_huge_tiff())
    monkeypatch.setattr(pio, "image_header_size", lambda data: None)
    with pytest.raises(FusionInputError, match="exceeds the decoder limit") as e:
        read_image(path)
    assert "\n" not in str(e.value) and str(path) in str(e.value)


def test_real_tiff_header_size(tmp_path):
    for dtype in (np.uint8, np.uint16):
        path = write_image(tmp_path / f"t{np.dtype(dtype).itemsize}.tif", rgb(21, 34, dtype=dtype))
        assert pio.image_header_size(path.read_bytes()) == (34, 21)


def test_decoder_limit_follows_the_constant(tmp_path, monkeypatch):
    path = write_image(tmp_path / "s.png", rgb(20, 24))
    assert pio.image_header_size(path.read_bytes()) == (24, 20)
    monkeypatch.setattr(pio, "MAX_IMAGE_PIXELS", 24 * 20 - 1)
    with pytest.raises(FusionInputError, match=r"image of 24x20 exceeds the decoder limit \(479 pixels"):
        read_image(path)
    monkeypatch.setattr(pio, "MAX_IMAGE_PIXELS", 24 * 20)
    assert read_image(path).shape == (20, 24, 3)


def test_jpeg_header_size_is_read(tmp_path):
    ok, buf = cv2.imencode(".jpg", rgb(33, 47))
    assert pio.image_header_size(buf.tobytes()) == (47, 33)
    assert pio.image_header_size(b"GIF89a....") is None


def test_replace_block_between_markers_appends_or_refuses(tmp_path):
    """One writer of generated doc blocks: replaces between the markers and keeps the rest byte for byte, appends
    the markers to a file without them (append=True) or refuses it untouched (append=False); a new file holds
    just the block."""
    from fusionlab.docblocks import has_block, replace_block

    doc = tmp_path / "d.md"
    doc.write_text("# title\n\ntext\n")
    replace_block(doc, "x", "one")
    replace_block(doc, "x", "two\n")
    text = doc.read_text()
    assert text == "# title\n\ntext\n\n<!-- x:start -->\n\ntwo\n\n<!-- x:end -->\n" and has_block(text, "x")
    doc.write_text("a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n")
    assert replace_block(doc, "x", "new", append=False) == "a\n<!-- x:start -->\n\nnew\n\n<!-- x:end -->\nb\n"
    hand = tmp_path / "hand.md"
    hand.write_text("# hand-written\n<!-- x:end -->\n")
    with pytest.raises(ValueError, match="refusing"):
        replace_block(hand, "x", "new")
    plain = tmp_path / "plain.md"
    plain.write_text("plain\n")
    with pytest.raises(ValueError, match="refusing"):
        replace_block(plain, "x", "new", append=False)
    assert plain.read_text() == "plain\n"
    assert replace_block(tmp_path / "new.md", "x", "b", append=False) == "<!-- x:start -->\n\nb\n\n<!-- x:end -->\n"


# ------------------------------------------------------------------------- 16-bit frames, end to end
def low_byte_frames(n, size=64, colour=True, seed=3):
    """``n`` 16-bit frames whose low byte is random (it carries information the high byte does not): a texture
    in the high byte, frame k sharp in the k-th vertical band and blurred (at 16 bits) elsewhere."""
    rng = np.random.default_rng(seed)
    shape = (size, size, 3) if colour else (size, size)
    coarse, fine = (cv2.GaussianBlur(rng.random(shape), (0, 0), s) for s in (4.0, 1.0))
    high = 255 * np.clip(0.5 + 6 * (coarse - coarse.mean()) + 2 * (fine - fine.mean()), 0, 1)
    sharp = np.floor(high) * 256 + rng.integers(0, 256, shape)
    blur = from_unit(cv2.GaussianBlur(sharp, (0, 0), 2.0) / 65535.0, np.uint16)
    sharp = sharp.astype(np.uint16)
    edges = np.linspace(0, size, n + 1).astype(int)
    frames = []
    for k in range(n):
        f = blur.copy()
        f[:, edges[k]:edges[k + 1]] = sharp[:, edges[k]:edges[k + 1]]
        frames.append(f)
    return frames


def fuse_at_16_bits(frames, *, series=False, **options):
    """The float reference: the frames as floats in [0, 1], fused, rounded to 16 bits at the end (in series: at
    the end of each pair, as the series method rounds its intermediate results to the sources' dtype)."""
    import pyfusion

    if series:
        current = frames[0]
        for nxt in frames[1:]:
            current = fuse_at_16_bits([current, nxt], **options)
        return current
    return from_unit(pyfusion.fuse([to_unit(f) for f in frames], **options).fused, np.uint16)


def assert_keeps_low_byte(fused, reference):
    assert fused.dtype == np.uint16
    np.testing.assert_array_equal(fused, reference)
    assert np.unique(fused & 255).size == 256


@pytest.mark.parametrize("n, options", [(2, {}), (3, {}), (3, {"series": True}), (2, {"method": "dwt"})],
                         ids=["pair", "one-pass", "series", "dwt"])
@pytest.mark.parametrize("colour", [True, False], ids=["rgb", "gray"])
def test_16bit_frames_fuse_to_16bit(n, options, colour):
    import pyfusion

    frames = low_byte_frames(n, colour=colour)
    assert_keeps_low_byte(pyfusion.fuse(frames, **options).fused, fuse_at_16_bits(frames, **options))


def test_16bit_frames_fuse_to_16bit_with_alignment():
    import pyfusion
    from pyfusion.align import align

    frames = low_byte_frames(3)
    aligned, _ = align(frames)
    assert all(a.dtype == np.uint16 for a in aligned)
    assert_keeps_low_byte(pyfusion.fuse(frames, align=True).fused, fuse_at_16_bits(aligned))


@pytest.mark.parametrize("ext", [".png", ".tif"])
@pytest.mark.parametrize("n, flags", [(2, []), (3, []), (3, ["--series"]), (3, ["--align"])],
                         ids=["pair", "one-pass", "series", "align"])
def test_16bit_files_fuse_to_16bit_from_the_command(tmp_path, ext, n, flags):
    import pyfusion
    from pyfusion.cli import main

    frames = low_byte_frames(n)
    paths = [str(write_image(tmp_path / f"f{k}{ext}", f)) for k, f in enumerate(frames)]
    out = tmp_path / f"fused{ext}"
    assert main(["fuse", *paths, "-o", str(out), *flags]) == 0
    options = {"series": True} if "--series" in flags else {}
    expected = pyfusion.fuse(frames, align="--align" in flags, **options).fused
    assert_keeps_low_byte(read_image(out), expected)


@pytest.mark.slow
def test_16bit_stacks_fuse_to_16bit_in_a_batch(tmp_path):
    import pyfusion
    from pyfusion.cli import main

    stacks = {"a": low_byte_frames(3, seed=1), "b": low_byte_frames(2, colour=False, seed=2)}
    for name, frames in stacks.items():
        (tmp_path / "in" / name).mkdir(parents=True)
        for k, f in enumerate(frames):
            write_image(tmp_path / "in" / name / f"f{k}.tif", f)
    args = [str(tmp_path / "in"), str(tmp_path / "out"), "--ext", ".tif", "--workers", "1", "--no-progress"]
    assert main(["batch", *args]) == 0
    for name, frames in stacks.items():
        assert_keeps_low_byte(read_image(tmp_path / "out" / f"{name}.tif"), pyfusion.fuse(frames).fused)
