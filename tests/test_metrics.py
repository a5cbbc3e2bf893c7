"""pyfusion.metrics: agreement with the survey's published per-image values, properties, input checks, the
evaluation table and tools/evaluate.py.

The published values (Liu et al., Information Fusion 2020) are read from ../shared/data/mfif/metrics.json
and the images from ../shared/data/mfif/{sources,results}; those tests skip outside CI when the data is absent.
"""
import json
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy import signal

from pyfusion import metrics
from pyfusion.metrics import METRICS, psnr, qcv, rgb2gray, ssim
from pyfusion.metrics._common import filter2_sep, normalize255
from pyfusion.metrics.gradient import qg_max
from pyfusion.metrics.perceptual import _block_reduce
from pyfusion.metrics.phase import phase_congruency
from pyfusion.metrics.table import EvaluationError, find_cases, published_gaps, render, survey_means

ROOT = Path(__file__).resolve().parents[1]
TOOL = ROOT / "tools" / "evaluate.py"

NAMES = ("QMI", "QNCIE", "QG", "QP", "QE", "QY", "QCB", "QCV")
IMAGES = [f"c_{i:02d}" for i in range(1, 21)] + [f"g_{i:02d}" for i in range(1, 11)]
METHODS = ("CNN", "DWT")
TOL = 0.002  # absolute, all metrics but QCV
QCV_RTOL = 0.005  # relative

# The one (image, method, metric) case that does not reach the tolerance, with the measured gap and the reason
# (docs/metrics.md, "QY and round-off"). Strict: it fails loudly if it starts to pass.
KNOWN_GAPS = {
    ("g_03", "CNN", "QY"): "measured -0.0041: g_03 has ~10% constant 7x7 windows; with QY's C1 = C2 = 2e-16 the "
                           "published value depends on MATLAB's round-off in them (other kernel splits / summation "
                           "orders land +0.0004 to +9.8 off); we use the exact arithmetic (variance 0 there)",
}


# ----------------------------------------------------------------------------------------------- helpers
def _scene(n=96, seed=0):
    """A textured grey scene and a multi-focus pair made from it (right / left half blurred)."""
    rng = np.random.default_rng(seed)
    s = ndi.gaussian_filter(rng.normal(size=(n, n)), 1.5)
    s = (s - s.min()) / (s.max() - s.min()) * 200 + 20
    s[20:40, 10:80] += 30
    s = np.round(np.clip(s, 0, 255))
    blur = np.round(ndi.gaussian_filter(s, 2.5))
    a, b = s.copy(), s.copy()
    a[:, n // 2:] = blur[:, n // 2:]
    b[:, : n // 2] = blur[:, : n // 2]
    return s, a, b, blur


@lru_cache(maxsize=None)
def _survey(shared):
    return json.loads((Path(shared) / "mfif" / "metrics.json").read_text())


@lru_cache(maxsize=8)
def _load(path):
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert img is not None, path
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB) if img.ndim == 3 else img


def _triplet(shared, image, method):
    sub = "color" if image.startswith("c") else "grayscale"
    d = Path(shared) / "mfif"
    return (_load(d / "sources" / sub / f"{image}_1.tif"), _load(d / "sources" / sub / f"{image}_2.tif"),
            _load(d / "results" / method.lower() / f"{image}_{method.lower()}.tif"))


def _published(shared, image, method, metric):
    meta = _survey(str(shared))
    ds = meta["datasets"]["color" if image.startswith("c") else "grayscale"]
    return ds["per_image"][meta["methods"].index(method)][meta["metrics"].index(metric)][ds["images"].index(image)]


def _cases():
    for image in IMAGES:
        for method in METHODS:
            for metric in NAMES:
                marks = [pytest.mark.shared, pytest.mark.slow]
                reason = KNOWN_GAPS.get((image, method, metric))
                if reason:
                    marks.append(pytest.mark.xfail(strict=True, reason=reason))
                yield pytest.param(image, method, metric, marks=marks, id=f"{image}-{method}-{metric}")


# ------------------------------------------------------------------------------- published values
@pytest.mark.parametrize("image,method,metric", list(_cases()))
def test_matches_published_value(shared_data, image, method, metric):
    a, b, f = _triplet(shared_data, image, method)
    ref = _published(shared_data, image, method, metric)
    got = METRICS[metric](a, b, f)
    if metric == "QCV":
        assert got == pytest.approx(ref, rel=QCV_RTOL), f"{metric} {image} {method}: {got} vs published {ref}"
    else:
        assert abs(got - ref) <= TOL, f"{metric} {image} {method}: {got} vs published {ref} (gap {got - ref:+.5f})"


@pytest.mark.shared
def test_survey_file_layout(shared_data):
    meta = _survey(str(shared_data))
    assert meta["metrics"] == list(NAMES)
    assert len(meta["methods"]) == 18 and set(METHODS) <= set(meta["methods"])
    assert meta["datasets"]["color"]["images"] + meta["datasets"]["grayscale"]["images"] == IMAGES


# ------------------------------------------------------------------------------------ registry
def test_registry_has_exactly_the_survey_metrics():
    assert list(METRICS) == list(NAMES)
    assert all(callable(fn) for fn in METRICS.values())
    assert metrics.LOWER_IS_BETTER == {"QCV"}


@pytest.mark.parametrize("name", NAMES)
def test_docstrings_have_references(name):
    doc = METRICS[name].__doc__
    assert "References" in doc and "Parameters" in doc and "Returns" in doc


# ----------------------------------------------------------------------------------- properties
IDENTICAL = {"QMI": 2.0, "QG": qg_max(), "QE": 1.0, "QY": 1.0, "QCB": 1.0, "QCV": 0.0}


@pytest.mark.parametrize("name", sorted(IDENTICAL))
def test_identical_images_give_the_extreme(name):
    s, _, _, _ = _scene()
    assert METRICS[name](s, s, s) == pytest.approx(IDENTICAL[name], abs=1e-9)


def test_qg_ceiling_is_below_one_with_the_published_sigmoids():
    assert 0.974 < qg_max() < 0.975


def test_qncie_is_one_for_identical_uniform_histogram_images():
    rng = np.random.default_rng(3)
    u = rng.permutation(np.arange(64 * 64) % 256).reshape(64, 64).astype(float)
    assert METRICS["QNCIE"](u, u, u) == pytest.approx(1.0, abs=1e-12)
    s, a, b, _ = _scene()
    assert METRICS["QNCIE"](s, s, s) > METRICS["QNCIE"](a, b, s)


def test_qp_identical_images_close_to_one_and_best():
    s, a, b, blur = _scene()
    same = METRICS["QP"](s, s, s)
    assert 0.95 < same <= 1.0
    assert same > METRICS["QP"](a, b, s) > METRICS["QP"](a, b, blur)


@pytest.mark.parametrize("name", NAMES)
def test_symmetric_in_the_sources(name):
    s, a, b, _ = _scene(seed=1)
    f = np.round((a + 2 * s) / 3)
    assert METRICS[name](a, b, f) == pytest.approx(METRICS[name](b, a, f), rel=1e-10, abs=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_all_in_focus_beats_all_blurred(name):
    s, a, b, blur = _scene(seed=2)
    good, bad = METRICS[name](a, b, s), METRICS[name](a, b, blur)
    assert (good < bad) if name == "QCV" else (good > bad)


BOUNDS = {"QMI": (0, 2), "QNCIE": (0, 1), "QG": (0, qg_max()), "QP": (-1, 1), "QE": (-1, 1), "QY": (-1, 1),
          "QCB": (0, 1), "QCV": (0, np.inf)}


@pytest.mark.parametrize("name", NAMES)
def test_values_in_range_on_random_images(name):
    rng = np.random.default_rng(4)
    a, b, f = (np.round(ndi.gaussian_filter(rng.uniform(0, 255, (64, 72)), s)) for s in (0.5, 1.0, 2.0))
    lo, hi = BOUNDS[name]
    v = METRICS[name](a, b, f)
    assert np.isfinite(v) and lo - 1e-12 <= v <= hi + 1e-12


@pytest.mark.parametrize("name", NAMES)
def test_colour_input_equals_matlab_grey_conversion(name):
    rng = np.random.default_rng(5)
    rgb = [ndi.gaussian_filter(rng.uniform(0, 255, (48, 40, 3)), (1, 1, 0)).astype(np.uint8) for _ in range(3)]
    grey = [rgb2gray(x) for x in rgb]
    assert METRICS[name](*rgb) == METRICS[name](*grey)


def test_rgb2gray_is_matlabs():
    np.testing.assert_allclose(metrics.rgb2gray(np.array([[[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]]])),
                               [[0.298936021293775, 0.587043074451121, 0.114020904255103]], atol=1e-12)
    px = np.array([[[10, 20, 30], [255, 255, 255], [1, 1, 2]]], np.uint8)
    # 0.298936*10 + 0.587043*20 + 0.114021*30 = 18.1308 -> 18; white stays 255; 1.114 -> 1
    np.testing.assert_array_equal(rgb2gray(px), [[18.0, 255.0, 1.0]])


# ------------------------------------------------------------------------------------ input checks
@pytest.mark.parametrize("name", NAMES)
def test_mismatched_shapes_raise(name):
    s, a, b, _ = _scene()
    with pytest.raises(ValueError, match="same shape"):
        METRICS[name](a, b, s[:-2])


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("name", NAMES)
def test_non_finite_values_raise(name, bad):
    s, a, b, _ = _scene()
    f = s.copy()
    f[5, 7] = bad
    with pytest.raises(ValueError, match="non-finite"):
        METRICS[name](a, b, f)


@pytest.mark.parametrize("arr,match", [(np.zeros(100), "2-D"), (np.zeros((32, 32, 4)), "2-D"),
                                       (np.zeros((8, 64)), "too small"), (np.array([["a"] * 20] * 20), "numeric")])
def test_non_images_raise(arr, match):
    with pytest.raises(ValueError, match=match):
        METRICS["QMI"](arr, arr, arr)


def test_full_reference_checks():
    s, a, _, _ = _scene()
    with pytest.raises(ValueError, match="same shape"):
        psnr(s, a[1:])
    with pytest.raises(ValueError, match="non-finite"):
        ssim(s, np.where(s > 100, np.nan, s))


# ------------------------------------------------------------------------------------ psnr / ssim
def test_psnr_known_values():
    s, _, _, _ = _scene()
    assert psnr(s, s) == np.inf
    assert psnr(s, s + 1) == pytest.approx(10 * np.log10(255 ** 2))  # MSE = 1
    assert psnr(s, s + 16) == pytest.approx(10 * np.log10(255 ** 2 / 256))


def test_ssim_identity_symmetry_and_reference():
    s, a, _, blur = _scene()
    assert ssim(s, s) == pytest.approx(1.0)
    assert ssim(s, a) == pytest.approx(ssim(a, s))
    assert 0 < ssim(s, blur) < ssim(s, a) < 1
    # scikit-image's Gaussian SSIM on the same crop convention (11x11 window, sigma 1.5, 'valid' mean)
    from skimage.metrics import structural_similarity

    _, full = structural_similarity(s, blur, data_range=255, gaussian_weights=True, sigma=1.5,
                                    use_sample_covariance=False, full=True)
    assert ssim(s, blur) == pytest.approx(full[5:-5, 5:-5].mean(), abs=1e-6)


# ------------------------------------------------------------------------------------ building blocks
@pytest.mark.parametrize("shape", ["same", "valid"])
def test_filter2_sep_is_matlab_filter2(shape):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(23, 31))
    col, row = np.array([1.0, 2.0, -0.5]), np.array([0.3, -1.0, 4.0, 2.0, 1.0])
    ref = signal.correlate2d(x, np.outer(col, row), mode=shape)  # zero-padded correlation, centred
    np.testing.assert_allclose(filter2_sep(x, col, row, shape), ref, atol=1e-12)


def test_normalize255_stretches_and_rounds_half_away():
    np.testing.assert_array_equal(normalize255(np.array([[2.0, 3.0], [4.0, 2.0 + 2 * 0.5 / 255 * 2]])),
                                  [[0, 128], [255, 1]])
    np.testing.assert_array_equal(normalize255(np.zeros((3, 3))), np.zeros((3, 3)))
    np.testing.assert_array_equal(normalize255(np.full((3, 3), 7.0)), np.zeros((3, 3)))


def test_blockproc_zero_pads_partial_blocks():
    x = np.ones((20, 36))
    means = _block_reduce(x, lambda blk: blk.mean(axis=(1, 3)))
    assert means.shape == (2, 3)
    assert means[0, 0] == 1.0 and means[1, 0] == pytest.approx(4 / 16) and means[0, 2] == pytest.approx(4 / 16)


def test_qcv_zero_for_perfect_fusion_and_positive_otherwise():
    s, a, b, _ = _scene()
    assert qcv(s, s, s) == 0.0 and qcv(a, b, s) > 0


def test_phase_congruency_marks_a_step_edge():
    im = np.zeros((64, 64))
    im[:, 32:] = 200
    pc, big_m, small_m = phase_congruency(im)
    assert pc[:, 30:34].max() > 0.5 and pc[:, 8:20].max() < 0.05
    assert np.all(big_m >= small_m - 1e-12)


# ------------------------------------------------------------------------------------ tables / CLI
def _write_set(tmp_path, names=("x_01", "x_02"), methods=("cnn", "avg"), size=(48, 56), colour=False):
    src, fused = tmp_path / "src", tmp_path / "fused"
    src.mkdir(exist_ok=True)
    fused.mkdir(exist_ok=True)
    for k, name in enumerate(names):
        s, a, b, blur = _scene(n=64, seed=10 + k)
        s, a, b = (x[: size[0], : size[1]].astype(np.uint8) for x in (s, a, b))
        if colour:
            s, a, b = (np.dstack([x, x, np.flipud(x)]) for x in (s, a, b))
        cv2.imwrite(str(src / f"{name}_1.png"), a)
        cv2.imwrite(str(src / f"{name}_2.png"), b)
        for m in methods:
            cv2.imwrite(str(fused / f"{name}_{m}.png"), s if m == "cnn" else ((a.astype(int) + b) // 2).astype(np.uint8))
    return src, fused


def test_find_cases_pairs_by_name(tmp_path):
    src, fused = _write_set(tmp_path, names=("x_01", "x_01_b"))
    (fused / "unrelated.png").write_bytes((fused / "x_01_cnn.png").read_bytes())
    cases, unmatched = find_cases([src], [fused])
    assert [(c.image, c.method) for c in cases] == [("x_01", "AVG"), ("x_01_b", "AVG"), ("x_01", "CNN"),
                                                     ("x_01_b", "CNN")]
    assert [p.name for p in unmatched] == ["unrelated.png"]
    cases, _ = find_cases([src], [fused], methods=["Cnn"])
    assert {c.method for c in cases} == {"CNN"}
    with pytest.raises(EvaluationError, match="method NSCT"):
        find_cases([src], [fused], methods=["nsct"])


def test_find_cases_errors(tmp_path):
    src, fused = _write_set(tmp_path)
    (src / "x_01_2.png").unlink()
    with pytest.raises(EvaluationError, match="lacks its _2"):
        find_cases([src], [fused])
    with pytest.raises(EvaluationError, match="not a directory"):
        find_cases([tmp_path / "nope"], [fused])


def test_survey_rows_only_when_all_images_known():
    survey = {m: {k: {"x_01": 1.0, "x_02": 3.0} for k in NAMES} for m in ("DWT", "CNN")}
    assert survey_means(survey, ["DWT", "CNN"], ["x_01", "x_02"])["CNN"]["QMI"] == 2.0
    assert survey_means(survey, ["DWT", "CNN"], ["x_01", "y"]) is None
    results = {"CNN": {"x_01": {k: 0.5 for k in NAMES}}}
    md = render(results, "md", survey, ["DWT", "CNN"])
    assert "| DWT | survey | 1 |" in md and "| CNN | computed | 1 |" in md
    gaps = published_gaps(results, survey)
    assert gaps["QMI"] == {"gap": -0.5, "image": "x_01", "method": "CNN", "cases": 1}
    assert gaps["QCV"]["gap"] == pytest.approx(-0.5)  # relative for QCV
    assert "| QMI | -5.00e-01 | x_01 | CNN | 1 |" in md


def _run(*args):
    return subprocess.run([sys.executable, str(TOOL), *map(str, args)], capture_output=True, text=True,
                          cwd=ROOT, timeout=300)


@pytest.mark.parametrize("ext", [".md", ".csv", ".json"])
def test_cli_writes_table(tmp_path, ext):
    src, fused = _write_set(tmp_path, colour=(ext == ".json"))
    survey = {"methods": ["DWT", "CNN"], "metrics": list(NAMES),
              "datasets": {"t": {"images": ["x_01", "x_02"],
                                 "per_image": [[[0.1, 0.3]] * 8, [[0.5, 0.7]] * 8]}}}
    (tmp_path / "metrics.json").write_text(json.dumps(survey))
    out = tmp_path / f"table{ext}"
    r = _run("--sources", src, "--fused", fused, "--out", out, "--no-progress")
    assert r.returncode == 0, r.stderr
    assert "| CNN | computed | 2 |" in r.stdout and "| DWT | survey | 2 | 0.2000" in r.stdout
    text = out.read_text()
    if ext == ".json":
        doc = json.loads(text)
        assert set(doc["computed"]) == {"AVG", "CNN"} and doc["survey_mean"]["CNN"]["QY"] == pytest.approx(0.6)
        assert set(doc["computed"]["CNN"]["per_image"]) == {"x_01", "x_02"}
    elif ext == ".csv":
        assert text.splitlines()[0] == "method,source,images," + ",".join(NAMES)
        assert len(text.splitlines()) == 1 + 2 + 2
    else:
        assert text.startswith("| method | source | images | QMI")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["src", "fused", "metrics.json", out.name])


@pytest.mark.parametrize("args,match", [
    (["--sources", "{tmp}/nope", "--fused", "{fused}", "--out", "{tmp}/t.md"], "not a directory"),
    (["--sources", "{src}", "--fused", "{fused}", "--out", "{tmp}/t.txt"], "unknown extension"),
    (["--sources", "{src}", "--fused", "{fused}", "--out", "{tmp}/missing/t.md"], "does not exist"),
    (["--sources", "{src}", "--fused", "{src}", "--out", "{tmp}/t.md"], "no fused images"),
    (["--sources", "{src}", "--fused", "{fused}", "--method", "xyz", "--out", "{tmp}/t.md"], "method XYZ"),
    (["--sources", "{src}", "--fused", "{fused}", "--survey", "{tmp}/none.json", "--out", "{tmp}/t.md"],
     "no such file"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, args, match):
    src, fused = _write_set(tmp_path, names=("x_01",), methods=("cnn",))
    r = _run(*[a.format(tmp=tmp_path, src=src, fused=fused) for a in args], "--no-progress")
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) == 1 and match in r.stderr and r.stderr.startswith("evaluate: error:")


def test_cli_rejects_mismatched_fused_image(tmp_path):
    src, fused = _write_set(tmp_path, names=("x_01",), methods=("cnn",))
    cv2.imwrite(str(fused / "x_01_cnn.png"), np.zeros((30, 30), np.uint8))
    r = _run("--sources", src, "--fused", fused, "--out", tmp_path / "t.md", "--no-progress")
    assert r.returncode == 2 and "does not match its sources" in r.stderr
    assert not (tmp_path / "t.md").exists()


@pytest.mark.parametrize("name", NAMES)
def test_constant_images_do_not_raise_or_warn(name, recwarn):
    c = np.full((32, 40), 100.0)
    r = np.round(np.random.default_rng(7).uniform(0, 255, (32, 40)))
    for trio in ((c, c, c), (c, r, r), (r, r, c)):
        assert isinstance(METRICS[name](*trio), float)  # NaN allowed where the definition is undefined
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]
