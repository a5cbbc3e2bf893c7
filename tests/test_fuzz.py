"""The readers under mutated input (``python -m fusionlab fuzz-readers``, bounded here), and the bugs it found:
decoder messages on standard error, grey-filled truncated JPEG scans, PNG and JPEG headers declaring huge images."""
import argparse
import time
import zlib

import cv2
import numpy as np
import pytest

from fusionlab.commands.fuzz_readers import FORMATS, run_cases
from pyfusion.cli import main
from pyfusion.io import FusionInputError, read_image


def fuzz(cases):
    """Run the cases in a watched child (per-case timeout 10 s); returns the records."""
    records = run_cases(cases, argparse.Namespace(seed=0, timeout=10.0), log=lambda m: None)
    assert len(records) == len(cases)
    return records


def assert_all_clean(records):
    bad = [r for r in records if r["status"] not in ("ok", "error")]
    assert not bad, bad[:5]


def test_seeded_mutations_through_the_reader():
    records = fuzz([("reader", fmt, k) for fmt in FORMATS for k in range(30)])
    assert_all_clean(records)
    for fmt in FORMATS:   # the mutations reach both outcomes in every format
        got = {r["status"] for r in records if r["fmt"] == fmt}
        assert got == {"ok", "error"} or fmt == "png" and "error" in got, (fmt, got)


@pytest.mark.slow
def test_seeded_mutations_through_fuse_and_batch():
    cases = [("fuse", fmt, k) for fmt in FORMATS for k in range(6)]
    cases += [("batch", fmt, k) for fmt in FORMATS if fmt != "dng" for k in range(2)]
    assert_all_clean(fuzz(cases))


# ------------------------------------------------------------------------------------ regressions
def texture(size=64):
    rng = np.random.default_rng(0)
    return cv2.GaussianBlur(rng.integers(0, 256, (size, size, 3)).astype(np.uint8), (0, 0), 1.0)


def png_with_bad_filter_byte(size=64) -> bytes:
    """An 8-bit RGB PNG whose first row's filter type is 9 (libpng: "bad adaptive filter value"), CRCs valid."""
    def chunk(kind, payload):
        return len(payload).to_bytes(4, "big") + kind + payload + zlib.crc32(kind + payload).to_bytes(4, "big")

    rows = np.zeros((size, 1 + 3 * size), np.uint8)
    rows[:, 1:] = texture(size).reshape(size, -1)
    rows[0, 0] = 9
    header = size.to_bytes(4, "big") * 2 + bytes([8, 2, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows.tobytes()))
            + chunk(b"IEND", b""))


def test_decoder_messages_go_into_the_error_not_to_stderr(tmp_path, capfd):
    bad = tmp_path / "bad.png"
    bad.write_bytes(png_with_bad_filter_byte())
    with pytest.raises(FusionInputError, match="libpng error: bad adaptive filter value") as e:
        read_image(bad)
    assert "\n" not in str(e.value)
    assert capfd.readouterr().err == ""
    good = tmp_path / "good.png"
    cv2.imwrite(str(good), texture())
    assert main(["fuse", str(bad), str(good), "-o", str(tmp_path / "out.png")]) == 2
    err = capfd.readouterr().err
    assert err.count("\n") == 1 and err.startswith("pyfusion fuse: error: ") and "libpng" in err


def test_decoder_warnings_on_a_readable_jpeg_are_not_printed(tmp_path, capfd):
    data = cv2.imencode(".jpg", texture())[1].tobytes()
    path = tmp_path / "trailing.jpg"
    path.write_bytes(data[:-2] + b"\x00" * 10 + data[-2:])   # libjpeg: "10 extraneous bytes before marker 0xd9"
    assert read_image(path).shape == (64, 64, 3)
    assert capfd.readouterr().err == ""


def test_truncated_jpeg_scan_is_an_error(tmp_path):
    """libjpeg fills a scan cut short with grey and only warns; the reader refuses the frame."""
    data = cv2.imencode(".jpg", texture())[1].tobytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[:len(data) * 2 // 3] + b"\xff\xd9")
    with pytest.raises(FusionInputError, match="truncated image data"):
        read_image(path)


def test_jpeg_header_declaring_more_pixels_than_the_file_holds(tmp_path):
    """A 30000x30000 SOF in a 2 kB file: refused from the header at once (libjpeg took 18 s and 5 GB to grey-fill
    it), while a flat 4000x3000 JPEG (the most compressed there is) still reads."""
    data = bytearray(cv2.imencode(".jpg", texture())[1].tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = (30000).to_bytes(2, "big") * 2
    path = tmp_path / "huge.jpg"
    path.write_bytes(data)
    t0 = time.perf_counter()
    with pytest.raises(FusionInputError, match="declares 30000x30000 pixels, more than its"):
        read_image(path)
    assert time.perf_counter() - t0 < 1.0
    flat = tmp_path / "flat.jpg"
    flat.write_bytes(cv2.imencode(".jpg", np.full((3000, 4000), 128, np.uint8),
                                  [cv2.IMWRITE_JPEG_OPTIMIZE, 1, cv2.IMWRITE_JPEG_PROGRESSIVE, 1])[1].tobytes())
    assert read_image(flat).shape == (3000, 4000)


def test_png_header_declaring_more_pixels_than_the_file_holds(tmp_path):
    """A 32767x32767 IHDR (CRC valid) in a 12 kB file: refused from the header (libpng first allocated the
    declared image: 2 GB), while a flat 4000x3000 PNG at the strongest compression (about 1000:1) still reads."""
    data = bytearray(cv2.imencode(".png", texture())[1].tobytes())
    data[16:24] = (32767).to_bytes(4, "big") * 2
    data[29:33] = zlib.crc32(bytes(data[12:29])).to_bytes(4, "big")
    path = tmp_path / "huge.png"
    path.write_bytes(data)
    with pytest.raises(FusionInputError, match="declares 32767x32767 pixels, more than its"):
        read_image(path)
    flat = tmp_path / "flat.png"
    flat.write_bytes(cv2.imencode(".png", np.zeros((3000, 4000), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])[1])
    assert read_image(flat).shape == (3000, 4000)
