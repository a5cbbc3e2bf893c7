"""RAW frames (rawpy/LibRaw): a Bayer DNG written here with tifffile reads as linear 16-bit RGB with the camera
white balance, fuses from the command line to a 16-bit TIFF, and bad or unreadable RAW input is a one-line error."""
import importlib.util
import sys

import cv2
import numpy as np
import pytest
from helpers import need

import pyfusion
from pyfusion.cli import main
from pyfusion.io import RAW_EXTENSIONS, FusionInputError, read_image

from fusionlab.commands.fuzz_readers import write_dng

HAVE_RAW = all(importlib.util.find_spec(m) is not None for m in ("rawpy", "tifffile"))


@pytest.fixture(autouse=True)
def _needs_rawpy():
    need(HAVE_RAW, "rawpy and tifffile are not installed (requirements.txt)")


def scene(h=64, w=96, seed=0):
    """A smooth colour texture in [0.05, 0.85] (linear), H and W even."""
    rng = np.random.default_rng(seed)
    return 0.05 + 0.8 * cv2.GaussianBlur(rng.random((h, w, 3)), (0, 0), 2.0)


def test_dng_reads_as_linear_16bit_rgb(tmp_path):
    s = scene()
    write_dng(tmp_path / "a.dng", s)
    write_dng(tmp_path / "b.dng", s / 2)
    a, b = read_image(tmp_path / "a.dng"), read_image(tmp_path / "b.dng")
    assert a.dtype == np.uint16 and a.shape == (64, 96, 3)
    inner = (slice(4, -4), slice(4, -4))
    # the camera is linear sRGB: the scene comes back, up to the demosaicing error (and the 12-bit raw)
    assert np.abs(a[inner] / 65535.0 - s[inner]).mean() < 0.01
    # linear: half the light, half the value
    ratio = a[inner].astype(np.float64) / np.maximum(b[inner], 1)
    assert abs(np.median(ratio) - 2.0) < 0.01
    assert np.unique(a & 255).size == 256   # the low byte carries data


def test_camera_white_balance_is_applied(tmp_path):
    """A grey scene shot under a tinted light (AsShotNeutral 0.5, 1, 0.7) comes out grey."""
    neutral = np.array([0.5, 1.0, 0.7])
    write_dng(tmp_path / "tint.dng", np.full((32, 32, 3), 0.4) * neutral, neutral=tuple(neutral))
    img = read_image(tmp_path / "tint.dng")[4:-4, 4:-4].reshape(-1, 3).mean(axis=0)
    assert np.ptp(img) / img.mean() < 0.01, img


def bands(n, tmp_path, ext=".dng"):
    """``n`` RAW frames of one scene, frame k sharp in the k-th vertical band and blurred elsewhere."""
    s = scene(96, 96)
    blur = cv2.GaussianBlur(s, (0, 0), 3.0)
    edges = np.linspace(0, 96, n + 1).astype(int)
    paths = []
    for k in range(n):
        f = blur.copy()
        f[:, edges[k]:edges[k + 1]] = s[:, edges[k]:edges[k + 1]]
        write_dng(tmp_path / f"f{k}{ext}", f)
        paths.append(str(tmp_path / f"f{k}{ext}"))
    return paths


@pytest.mark.parametrize("ext", [".tif", ".png"])
def test_raw_stack_fuses_to_16bit_from_the_command(tmp_path, ext):
    frames = bands(3, tmp_path)
    out = tmp_path / f"fused{ext}"
    assert main(["fuse", *frames, "-o", str(out)]) == 0
    fused = read_image(out)
    expected = pyfusion.fuse([read_image(f) for f in frames]).fused
    assert fused.dtype == np.uint16 and fused.shape == (96, 96, 3)
    np.testing.assert_array_equal(fused, expected)
    assert np.unique(fused & 255).size == 256


def test_a_batch_reads_raw_stacks(tmp_path):
    """A folder of DNG frames is a stack for `pyfusion batch` too: 16-bit TIFF out, equal to the command's."""
    stack = tmp_path / "in" / "s1"
    stack.mkdir(parents=True)
    frames = bands(3, stack)
    assert main(["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--ext", ".tif", "--threads", "1",
                 "--workers", "1"]) == 0
    fused = read_image(tmp_path / "out" / "s1.tif")
    np.testing.assert_array_equal(fused, pyfusion.fuse([read_image(f) for f in frames]).fused)


def test_raw_to_jpeg_is_refused_before_fusing(tmp_path, capsys, monkeypatch):
    frames = bands(2, tmp_path)
    monkeypatch.setattr(pyfusion.fusion, "fuse", lambda *a, **k: pytest.fail("fused before checking the output"))
    assert main(["fuse", *frames, "-o", str(tmp_path / "fused.jpg")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and ".jpg cannot store uint16 pixels" in err
    assert not (tmp_path / "fused.jpg").exists()


def test_without_rawpy_one_line_error(tmp_path, capsys, monkeypatch):
    frames = bands(2, tmp_path)
    monkeypatch.setitem(sys.modules, "rawpy", None)   # import rawpy raises ImportError
    assert main(["fuse", *frames, "-o", str(tmp_path / "fused.tif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "RAW frames need rawpy: pip install pyfusion-mfif[raw]" in err
    assert not (tmp_path / "fused.tif").exists()


@pytest.mark.parametrize("ext, content", [(".nef", "png"), (".dng", "text"), (".cr2", "tiff")])
def test_not_a_raw_file_is_a_one_line_error(tmp_path, capsys, ext, content):
    img = np.zeros((32, 32, 3), np.uint8)
    data = {"png": cv2.imencode(".png", img)[1].tobytes(), "tiff": cv2.imencode(".tif", img)[1].tobytes(),
            "text": b"this is not a raw file\n" * 10}[content]
    bad = tmp_path / f"bad{ext}"
    bad.write_bytes(data)
    with pytest.raises(FusionInputError, match="not a RAW file LibRaw reads"):
        read_image(bad)
    good = bands(1, tmp_path)[0]
    assert main(["fuse", good, str(bad), "-o", str(tmp_path / "fused.tif")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a RAW file LibRaw reads" in err


def test_raw_extensions_cover_the_common_cameras():
    assert {".dng", ".cr2", ".cr3", ".nef", ".arw", ".raf", ".orf", ".rw2", ".pef"} <= set(RAW_EXTENSIONS)
