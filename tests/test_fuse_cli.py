"""``pyfusion fuse`` (pyfusion.cli) run as a subprocess: user errors exit 2 with one line, successes write the files.

Successful runs swap pyfusion.net for a fake module (a focus measure, no Caffe) inside the subprocess.
"""
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]

# Runs `pyfusion fuse` with a fake pyfusion.net: score = 1 where A has more local variance than B.
FAKE_NET = r"""
import sys, types
import numpy as np
from pyfusion.models import get as get_model
net = types.ModuleType("pyfusion.net")
def score_map(a, b, **options):
    h, w = get_model("cnn").score_shape(*a.shape[:2])
    s = np.zeros((h, w), np.float32)
    for i in range(h):
        for j in range(w):
            s[i, j] = a[2*i:2*i+16, 2*j:2*j+16].var() > b[2*i:2*i+16, 2*j:2*j+16].var()
    return s
net.score_map = score_map
sys.modules["pyfusion.net"] = net
import pyfusion
pyfusion.net = net
from pyfusion.cli import main
sys.exit(main(["fuse", *sys.argv[1:]]))
"""


def run(*args, fake=True):
    cmd = [sys.executable, "-c", FAKE_NET] if fake else [sys.executable, "-m", "pyfusion", "fuse"]
    return subprocess.run(cmd + [str(a) for a in args], capture_output=True, text=True, cwd=ROOT, timeout=120)


def write(path, img):
    cv2.imwrite(str(path), img[..., ::-1] if img.ndim == 3 else img)
    return path


def sources(tmp_path, dtype=np.uint8, colour=False, h=32, w=40):
    rng = np.random.default_rng(0)
    sharp = rng.random((h, w, 3) if colour else (h, w))
    blur = cv2.GaussianBlur(sharp, (7, 7), 2.0)
    left = np.zeros(sharp.shape, bool)
    left[:, : w // 2] = True
    scale = np.iinfo(dtype).max
    a = np.round(np.where(left, sharp, blur) * scale).astype(dtype)
    b = np.round(np.where(left, blur, sharp) * scale).astype(dtype)
    return write(tmp_path / "a.png", a), write(tmp_path / "b.png", b), a, b


def assert_user_error(res, what):
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("pyfusion fuse: error: ") and what in lines[0], lines[0]
    assert "Traceback" not in res.stderr


def test_missing_file(tmp_path):
    a, _, _, _ = sources(tmp_path)
    assert_user_error(run(a, tmp_path / "nope.png", "-o", tmp_path / "f.png", fake=False), "no such file")


def test_unreadable_and_truncated_files(tmp_path):
    a, b, _, _ = sources(tmp_path)
    (tmp_path / "junk.png").write_text("hello")
    assert_user_error(run(a, tmp_path / "junk.png", "-o", tmp_path / "f.png", fake=False), "cannot decode")
    data = b.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    assert_user_error(run(a, tmp_path / "cut.png", "-o", tmp_path / "f.png", fake=False), "truncated")
    assert not (tmp_path / "f.png").exists()


def test_mismatched_size_channels_and_tiny_images(tmp_path):
    a, _, img, _ = sources(tmp_path)
    write(tmp_path / "small.png", img[:, :-2])
    write(tmp_path / "rgb.png", np.dstack([img] * 3))
    write(tmp_path / "t1.png", img[:15, :15])
    write(tmp_path / "t2.png", img[:15, :15])
    out = tmp_path / "f.png"
    assert_user_error(run(a, tmp_path / "small.png", "-o", out, fake=False), "differs")
    assert_user_error(run(a, tmp_path / "rgb.png", "-o", out, fake=False), "channel")
    assert_user_error(run(tmp_path / "t1.png", tmp_path / "t2.png", "-o", out, fake=False), "smaller than")


def test_existing_output_needs_force_and_bad_arguments(tmp_path):
    a, b, _, _ = sources(tmp_path)
    out = tmp_path / "f.png"
    out.write_bytes(b"keep me")
    assert_user_error(run(a, b, "-o", out, fake=False), "already exists")
    assert out.read_bytes() == b"keep me"
    assert_user_error(run(a, b, fake=False), "required")
    assert_user_error(run(a, "-o", tmp_path / "g.png", fake=False), "at least two")
    assert_user_error(run(a, b, "-o", tmp_path / "g.png", "--model", tmp_path / "none.caffemodel", fake=False),
                      "model file not found")
    assert_user_error(run(a, b, "-o", tmp_path / "g.png", "--method", "nope", fake=False), "invalid choice")
    assert_user_error(run(a, b, "-o", tmp_path / "g.png", "--threads", "0", fake=False), "threads must be >= 1")


def test_fuses_and_writes_maps_with_verbose_timings(tmp_path):
    a, b, img_a, img_b = sources(tmp_path, colour=True)
    out, maps = tmp_path / "f.png", tmp_path / "maps"
    res = run(a, b, "-o", out, "--maps", maps, "-v")
    assert res.returncode == 0, res.stderr
    assert res.stderr == ""
    for stage in ("score_map", "focus_map", "binary_map", "cleaned_map", "decision_map", "fused", "total"):
        assert f"time {stage}" in res.stdout
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)[..., ::-1]
    assert fused.shape == img_a.shape and fused.dtype == np.uint8
    assert np.abs(fused[:, :4].astype(int) - img_a[:, :4]).max() <= 2  # the sharp left of A
    for name in ("score", "focus", "binary", "cleaned", "decision"):
        m = cv2.imread(str(maps / f"{name}.png"), cv2.IMREAD_UNCHANGED)
        assert m.dtype == np.uint8 and m.ndim == 2
    assert cv2.imread(str(maps / "focus.png"), cv2.IMREAD_UNCHANGED).shape == img_a.shape[:2]
    assert cv2.imread(str(maps / "score.png"), cv2.IMREAD_UNCHANGED).shape == (9, 13)
    # maps exist now: a second run needs --force; with it, the same bytes come out (deterministic)
    before = out.read_bytes()
    assert_user_error(run(a, b, "-o", tmp_path / "g.png", "--maps", maps), "already exists")
    res = run(a, b, "-o", out, "--maps", maps, "--force")
    assert res.returncode == 0, res.stderr
    assert out.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png", "f.png", "maps"]


@pytest.mark.parametrize("colour", [False, True])
def test_16_bit_in_16_bit_out(tmp_path, colour):
    a, b, img_a, _ = sources(tmp_path, dtype=np.uint16, colour=colour)
    out = tmp_path / "f.png"
    res = run(a, b, "-o", out, "--backend", "onnx")   # the fake net ignores the backend
    assert res.returncode == 0, res.stderr
    fused = cv2.imread(str(out), cv2.IMREAD_UNCHANGED)
    assert fused.dtype == np.uint16 and fused.shape == img_a.shape
    assert_user_error(run(a, b, "-o", tmp_path / "g.png", "--backend", "nope", fake=False), "choose from")
    assert_user_error(run(a, b, "-o", tmp_path / "g.png", "--method", "dwt", "--backend", "onnx"),
                      "its options: threads, progress, wavelet")


def test_demo_with_oracle_scores_is_deterministic_and_beats_both_sources(tmp_path):
    cmd = [sys.executable, "-m", "fusionlab", "demo", "--oracle", "--size", "96", "--image", "camera"]
    res1 = subprocess.run(cmd + ["--out", str(tmp_path / "d1")], capture_output=True, text=True, timeout=120)
    res2 = subprocess.run(cmd + ["--out", str(tmp_path / "d2")], capture_output=True, text=True, timeout=120)
    assert res1.returncode == 0 and res2.returncode == 0, res1.stderr + res2.stderr
    names = ["fused.png", "mask.png", "maps/decision.png", "reference.png", "source_a.png", "source_b.png"]
    for name in names:
        assert (tmp_path / "d1" / name).read_bytes() == (tmp_path / "d2" / name).read_bytes(), name
    psnr = {}
    for line in res1.stdout.splitlines():
        m = re.match(r"(source A|source B|fused)\s+([\d.]+)\s+([\d.]+)$", line)
        if m:
            psnr[m.group(1)] = float(m.group(2))
    assert set(psnr) == {"source A", "source B", "fused"}, res1.stdout
    assert psnr["fused"] > max(psnr["source A"], psnr["source B"]) + 5


def test_real_backend_on_a_survey_pair(tmp_path, shared_data, winograd):
    """No fake: the shipped model through the default backend on Lytro c_01 gives the library's image, byte for
    byte, and the library's image is close to the authors' published fusion (docs/reproduction.md: 40+ dB)."""
    import pyfusion
    from pyfusion.io import read_image
    from fusionlab.reproduce import psnr255

    d = shared_data / "mfif" / "sources" / "color"
    a, b = d / "c_01_1.tif", d / "c_01_2.tif"
    out = tmp_path / "f.png"
    res = run(a, b, "-o", out, "--threads", "1", "-v", fake=False)
    assert res.returncode == 0, res.stderr
    assert "backend      : winograd" in res.stdout
    fused = read_image(out)
    lib = pyfusion.fuse([a, b], threads=2).fused
    np.testing.assert_array_equal(fused, lib)     # and the thread count does not change a byte
    ref = read_image(shared_data / "mfif" / "results" / "cnn" / "c_01_cnn.tif")
    assert psnr255(fused, ref) > 40
