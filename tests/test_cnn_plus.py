"""method="cnn-plus": the cnn decision with a refined boundary band and a narrow transition (docs/cnn_plus.md).

Fake score maps (no net) except where the shipped model is named: those tests need the winograd kernels
(skip locally without them, fail under CI=true).
"""
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import pyfusion
from pyfusion.io import from_unit, read_image, to_unit, write_image
from pyfusion.methods import cnn_plus
from pyfusion.models import get as get_model

ROOT = Path(__file__).resolve().parents[1]
H, W = 48, 64


def pair(dtype=np.uint8, colour=False, seed=0, h=H, w=W, edge=None):
    """Columns left of ``edge`` (default the middle) sharp in A, the rest sharp in B (Gaussian blur elsewhere)."""
    rng = np.random.default_rng(seed)
    sharp = rng.random((h, w, 3) if colour else (h, w))
    blur = cv2.GaussianBlur(sharp, (7, 7), 2.0)
    left = np.zeros(sharp.shape, bool)
    left[:, : (w // 2 if edge is None else edge)] = True
    a, b = np.where(left, sharp, blur), np.where(left, blur, sharp)
    return from_unit(a, dtype), from_unit(b, dtype)


def left_scores(a, b):
    """Fake net: 1 for patches whose centre lies in the left half, else 0."""
    sh = get_model("cnn").score_shape(*a.shape[:2])
    centre = 2 * np.arange(sh[1]) + 7.5
    return np.tile((centre < a.shape[1] / 2).astype(np.float32), (sh[0], 1))


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("colour", [False, True])
def test_shape_dtype_and_determinism(dtype, colour):
    a, b = pair(dtype, colour)
    r1 = pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores)
    r2 = pyfusion.fuse([a.copy(), b.copy()], method="cnn-plus", score_fn=left_scores, threads=1)
    assert r1.fused.shape == a.shape and r1.fused.dtype == a.dtype
    np.testing.assert_array_equal(r1.fused, r2.fused)
    assert r1.method == "cnn-plus" and set(r1.maps) == set(cnn_plus.MAPS)
    assert set(r1.timings) == {*cnn_plus.STAGES, "total"}


def test_differs_from_cnn_and_is_closer_to_the_sharp_image():
    """Left half sharp in A: cnn blends 8+ pixels either side of the boundary, cnn-plus keeps the halves."""
    rng = np.random.default_rng(5)
    sharp = rng.random((H, W))
    a, b = pair(np.float64, seed=5)
    plus = pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores).fused
    cnn = pyfusion.fuse([a, b], method="cnn", score_fn=left_scores).fused
    assert np.abs(plus - cnn).max() > 0.05
    assert np.abs(plus - sharp).mean() < np.abs(cnn - sharp).mean()


def test_16_bit_detail_survives():
    a, b = pair(np.uint16, seed=2)
    r = pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores)
    assert len(np.unique(r.fused)) > 256


def test_three_sources_in_series():
    """N sources: ((A + B) + C), each step rounded to the sources' dtype, as cnn's series."""
    a, b = pair(seed=3)
    c = b.copy()
    r = pyfusion.fuse([a, b, c], method="cnn-plus", score_fn=left_scores)
    ab = pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores).fused
    np.testing.assert_array_equal(r.fused, pyfusion.fuse([ab, c], method="cnn-plus", score_fn=left_scores).fused)
    assert r.fused.shape == a.shape and r.fused.dtype == a.dtype


def test_the_paper_radius_without_a_band_is_the_cnn_method():
    a, b = pair(colour=True, seed=4)
    cnn = pyfusion.fuse([a, b], method="cnn", score_fn=left_scores).fused
    plus = pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores, band=0, gf_radius=8)
    np.testing.assert_array_equal(plus.fused, cnn)


def test_boundary_band_is_width_pixels_each_side():
    d = np.zeros((10, 20))
    d[:, :8] = 1
    zone = cnn_plus.boundary_band(d, 3)
    assert zone[:, 5:11].all() and not zone[:, :5].any() and not zone[:, 11:].any()
    assert not cnn_plus.boundary_band(d, 0).any() and not cnn_plus.boundary_band(np.ones((9, 9)), 4).any()


@pytest.mark.parametrize("edge", [29, 35])
def test_refine_boundary_moves_a_misplaced_boundary_to_the_focus_edge(edge):
    """The cleaned map says column 32; the sources' focus edge is at ``edge``: the band re-decides the pixels."""
    a, b = pair(np.float64, seed=6, edge=edge)
    cleaned = np.zeros((H, W))
    cleaned[:, :32] = 1
    refined, zone = cnn_plus.refine_boundary(cleaned, a, b, band=4, focus_radius=1)
    truth = np.zeros((H, W))
    truth[:, :edge] = 1
    assert zone[:, 28:36].all()
    assert (refined != truth).mean() < (cleaned != truth).mean() / 2
    soft, _ = cnn_plus.refine_boundary(cleaned, a, b, band=4, focus_radius=1, power=1.0)
    assert soft.min() >= 0 and soft.max() <= 1 and np.array_equal(soft[~zone], cleaned[~zone])


def test_options_are_checked():
    a, b = pair()
    with pytest.raises(ValueError, match="band"):
        pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores, band=-1)
    with pytest.raises(ValueError, match="power"):
        pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores, power=0)
    with pytest.raises(ValueError, match="score_fn"):
        pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores, model="cnn")
    with pytest.raises(ValueError, match=r"^method 'cnn-plus' takes no option 'levels'; its options: threads, progress"):
        pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores, levels=2)


@pytest.mark.slow
def test_shipped_model_end_to_end_and_cli(tmp_path, winograd):
    """The shipped cnn model (a committed file) through pyfusion.fuse and `pyfusion fuse --method cnn-plus`."""
    from skimage import data

    assert get_model("cnn").onnx.is_file()
    sharp = data.astronaut()[100:196, 150:278].astype(np.float64) / 255
    blur = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    left = np.zeros(sharp.shape, bool)
    left[:, :64] = True
    a = from_unit(np.where(left, sharp, blur), np.uint8)
    b = from_unit(np.where(left, blur, sharp), np.uint8)
    r = pyfusion.fuse([a, b], method="cnn-plus")
    cnn = pyfusion.fuse([a, b], method="cnn")
    assert r.fused.shape == a.shape and r.fused.dtype == np.uint8
    assert not np.array_equal(r.fused, cnn.fused)
    err = lambda x: np.abs(to_unit(x) - sharp).mean()   # noqa: E731
    assert err(r.fused) < min(err(a), err(b))
    write_image(tmp_path / "a.png", a)
    write_image(tmp_path / "b.png", b)
    out = tmp_path / "f.png"
    p = subprocess.run([sys.executable, "-m", "pyfusion", "fuse", str(tmp_path / "a.png"),
                        str(tmp_path / "b.png"), "-o", str(out), "--method", "cnn-plus"],
                       capture_output=True, text=True, cwd=ROOT)
    assert p.returncode == 0, p.stderr
    np.testing.assert_array_equal(read_image(out), r.fused)


def test_tuning_tool_references_truth_and_mix():
    """tools/tune_cnn_plus.py's analysis rows: ``truth`` is the sharp photo, ``mix:delta=0`` is cnn-plus itself and
    ``mix:delta=D`` gives the other source the share ``D`` where the map is binary."""
    from types import SimpleNamespace

    from fusionlab.commands import tune_cnn_plus

    a, b = pair(np.uint8, colour=True, seed=3)
    sharp = np.full_like(a, 7)
    p = SimpleNamespace(a=a, b=b, sharp=sharp)
    fns = {"cnn": left_scores}
    assert tune_cnn_plus.fuse_candidate("truth", p, fns) is sharp
    plus = pyfusion.fuse([a, b], method="cnn-plus", score_fn=left_scores)
    np.testing.assert_array_equal(tune_cnn_plus.fuse_candidate("mix:delta=0", p, fns), plus.fused)
    mixed = tune_cnn_plus.fuse_candidate("mix:delta=0.25", p, fns)
    ones = plus.decision_map == 1.0
    assert ones.any() and mixed.dtype == a.dtype
    want = from_unit(0.75 * to_unit(a) + 0.25 * to_unit(b), np.uint8)
    np.testing.assert_array_equal(mixed[ones], want[ones])
    np.testing.assert_array_equal(tune_cnn_plus.fuse_candidate("cnn-plus:band=2", p, fns),
                                  pyfusion.fuse([a, b], method="cnn-plus", band=2, score_fn=left_scores).fused)


def test_tuning_table_against_and_softness():
    """The tuning tool's table: ``--softness 0`` keeps pairs 0, 3, 6, ... (the hard-edge ones of the cycle) and
    ``--against`` counts, per column, the pairs where each candidate is better (QCV: lower)."""
    from types import SimpleNamespace

    from fusionlab.commands import tune_cnn_plus

    def row(qmi, qcv, psnr):
        return {"QMI": qmi, "QCV": qcv, "psnr": psnr, "ssim": 0.9}

    results = {"truth": {n: row(1.0, 5.0, 99.0) for n in ("00_a", "01_b", "03_c")},
               "cnn": {"00_a": row(0.9, 4.0, 40.0), "01_b": row(1.1, 6.0, 40.0), "03_c": row(0.8, 4.5, 40.0)},
               "cnn-plus": {"00_a": row(1.2, 6.0, 45.0), "01_b": row(1.3, 4.0, 45.0), "03_c": row(0.9, 6.0, 45.0)}}
    args = SimpleNamespace(count=3, start=50, seed=1, softness=0.0, against="truth")
    text = tune_cnn_plus.table(results, list(results), ["QMI", "QCV"], args)
    assert "Means over 2 tuning pairs, focus-edge softness 0 only" in text
    assert "| cnn | 0 | 2 | 0 |" in text          # QMI worse on 00 and 03, QCV better on both
    assert "| cnn-plus | 1 | 0 | 0 |" in text
    assert "`cnn-plus`" in text.splitlines()[-1]
