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
from fusionlab.tables import EvaluationError, find_cases, published_gaps, render, survey_means

ROOT = Path(__file__).resolve().parents[1]
TOOL = ["-m", "fusionlab", "evaluate"]

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
# Expected values below are derived in the test from the metric definitions (docs/metrics.md, "Definitions", and
# the papers cited there), never read back from pyfusion. Several properties are checked by a helper `_check_*`
# that a negative test also runs on plausible wrong implementations (stand-ins), which must fail it.

# QG sigmoid constants (Gamma, kappa, sigma) of Xydeas & Petrovic, Electronics Letters 36(4), 2000, Fig. 1, as
# listed under "QG" in docs/metrics.md: strength and orientation.
QG_STRENGTH = (0.9994, -15.0, 0.5)
QG_ORIENTATION = (0.9879, -22.0, 0.8)


def _sigmoid(v, gamma, kappa, sigma):
    return gamma / (1.0 + np.exp(kappa * (v - sigma)))


# A = B = F: relative strength and relative orientation are 1 at every pixel, so every pixel scores
# sigmoid_g(1) * sigmoid_a(1) and so does the g-weighted mean. Each sigmoid at 1 is below its Gamma (< 1), hence
# the ceiling 0.99885 * 0.97592 = 0.97479 < 1 (docs/metrics.md: "the ceiling (A = B = F) is ... not 1").
QG_CEILING = float(_sigmoid(1.0, *QG_STRENGTH) * _sigmoid(1.0, *QG_ORIENTATION))

# Value for A = B = F, where the definition fixes it (docs/metrics.md, "Definitions"): QMI "2 for A = B = F";
# QG the sigmoid ceiling above; QE = product of two weighted UIQI means, UIQI(x, x) = 1 (Wang & Bovik 2002);
# QY = mean of SSIM(x, x) = 1 (docstring: "1 when A = B = F"); QCB "1 for A = B = F"; QCV "0 for A = B = F".
# QNCIE (1 only for a uniform histogram) and QP (< 1, masking) have no fixed value there.
IDENTICAL = {"QMI": 2.0, "QG": QG_CEILING, "QE": 1.0, "QY": 1.0, "QCB": 1.0, "QCV": 0.0}


@pytest.mark.parametrize("name", sorted(IDENTICAL))
def test_identical_images_give_the_extreme(name):
    s, _, _, _ = _scene()
    assert METRICS[name](s, s, s) == pytest.approx(IDENTICAL[name], abs=1e-9)


def test_qg_ceiling_is_below_one_with_the_published_sigmoids():
    # QG_CEILING is derived above from the published constants; qg_max() must be the same number.
    assert qg_max() == pytest.approx(QG_CEILING, rel=1e-14)
    assert QG_CEILING < QG_STRENGTH[0] * QG_ORIENTATION[0] < 1
    assert QG_CEILING == pytest.approx(0.9994 / (1 + np.exp(-7.5)) * 0.9879 / (1 + np.exp(-4.4)), rel=1e-15)


def test_qncie_is_one_for_identical_uniform_histogram_images():
    rng = np.random.default_rng(3)
    u = rng.permutation(np.arange(64 * 64) % 256).reshape(64, 64).astype(float)
    assert METRICS["QNCIE"](u, u, u) == pytest.approx(1.0, abs=1e-12)
    s, a, b, _ = _scene()
    assert METRICS["QNCIE"](s, s, s) > METRICS["QNCIE"](a, b, s)


def test_qp_identical_images_below_one_only_because_of_the_mask(monkeypatch):
    """docs/metrics.md (QP): "Because the source maps are masked and the fused map is not, A = B = F gives
    slightly less than 1". Each local term (cov + C) / (sqrt(var_x var_f) + C) is <= 1 (Cauchy-Schwarz, same
    window for both), the masks of A and B lie inside the max mask, so each of the three factors is <= 1; with
    the mask switched off (threshold below any phase congruency) x = f in every window and each term is 1."""
    s, a, b, blur = _scene()
    same = METRICS["QP"](s, s, s)
    assert 0 < same < 1
    assert same > METRICS["QP"](a, b, s) > METRICS["QP"](a, b, blur)
    from pyfusion.metrics import phase

    monkeypatch.setattr(phase, "_FEATURE_THRESHOLD", -1.0)
    assert METRICS["QP"](s, s, s) == pytest.approx(1.0, abs=1e-12)


def _check_symmetric_and_discriminating(fn, lower_is_better):
    """fn(a, b, f) == fn(b, a, f) on an asymmetric fused image, and on the same sources the right decision map
    (fused = the all-in-focus scene) scores better than the inverted one (each half taken from the source that
    is blurred there, i.e. the all-blurred scene)."""
    s, a, b, blur = _scene(seed=1)
    f = np.round((a + 2 * s) / 3)
    assert fn(a, b, f) == pytest.approx(fn(b, a, f), rel=1e-10, abs=1e-12)
    good, bad = fn(a, b, s), fn(a, b, blur)
    assert abs(good - bad) > 1e-3 * max(1.0, abs(good))
    assert (good < bad) if lower_is_better else (good > bad)


@pytest.mark.parametrize("name", NAMES)
def test_symmetric_in_the_sources(name):
    _check_symmetric_and_discriminating(METRICS[name], name == "QCV")


_WRONG_SYMMETRY = {
    "constant": lambda fn: (lambda a, b, f: 0.5),
    "ignores source b": lambda fn: (lambda a, b, f: fn(a, a, f)),
    "wrong direction": lambda fn: (lambda a, b, f: -fn(a, b, f)),
}


@pytest.mark.parametrize("wrong", sorted(_WRONG_SYMMETRY))
@pytest.mark.parametrize("name", NAMES)
def test_symmetry_check_rejects_wrong_metrics(name, wrong):
    with pytest.raises(AssertionError):
        _check_symmetric_and_discriminating(_WRONG_SYMMETRY[wrong](METRICS[name]), name == "QCV")


@pytest.mark.parametrize("name", NAMES)
def test_all_in_focus_beats_all_blurred(name):
    s, a, b, blur = _scene(seed=2)
    good, bad = METRICS[name](a, b, s), METRICS[name](a, b, blur)
    assert (good < bad) if name == "QCV" else (good > bad)


BOUNDS = {"QMI": (0, 2), "QNCIE": (0, 1), "QG": (0, QG_CEILING), "QP": (-1, 1), "QE": (-1, 1), "QY": (-1, 1),
          "QCB": (0, 1), "QCV": (0, np.inf)}


def _stretched(x):
    """Integer levels with min 0 and max 255, so the toolbox's normalize1 leaves the image unchanged."""
    return np.round((x - x.min()) / (x.max() - x.min()) * 255)


def _entropy(*images):
    """Joint entropy in bits of integer-level images (pixel tuples counted with numpy.unique)."""
    _, counts = np.unique(np.stack([x.ravel() for x in images]), axis=1, return_counts=True)
    p = counts / counts.sum()
    return float(-np.sum(p * np.log2(p)))


def _qncie_from_nccs(nab, naf, nbf):
    """docs/metrics.md (QNCIE): eigenvalues r_i of the NCC matrix, 1 + sum (r_i/3) log_256(r_i/3), 0 log 0 = 0."""
    r = np.linalg.eigvalsh(np.array([[1.0, nab, naf], [nab, 1.0, nbf], [naf, nbf, 1.0]])) / 3
    r = r[r > 1e-15]
    return float(1 + np.sum(r * np.log2(r)) / 8)


def _uiqi_of_scaled_copy(k):
    """UIQI / SSIM with negligible constants of y = k x: luminance 2k/(1+k^2) times contrast-structure
    2k/(1+k^2), in every window (Wang & Bovik 2002; Wang et al. 2004)."""
    return (2 * k / (1 + k * k)) ** 2


def _reference_values(a, b):
    """metric -> (images, expected value) for random sources a, b (levels 0..255, min 0 and max 255)."""
    k = 0.5
    h_a, h_b, h_ab = _entropy(a), _entropy(b), _entropy(a, b)
    return {
        # Hossny et al.: F = A gives 2 [I(A;A)/2H(A) + I(B;A)/(H(A)+H(B))] = 1 + 2 I(A;B)/(H(A)+H(B))
        "QMI": ((a, b, a), 1 + 2 * (h_a + h_b - h_ab) / (h_a + h_b)),
        # A = B = F: all three NCCs are H(A)/8 (docs: "NCC(X, X) = H(X)/8")
        "QNCIE": ((a, a, a), _qncie_from_nccs(*[h_a / 8] * 3)),
        # F = A/2: Sobel is linear, so the relative strength is exactly 0.5 and the orientation is unchanged:
        # every pixel scores sigmoid_g(0.5) * sigmoid_a(1) = (Gamma_g / 2) * sigmoid_a(1)
        "QG": ((a, a, a * k), float(_sigmoid(k, *QG_STRENGTH) * _sigmoid(1.0, *QG_ORIENTATION))),
        # A = B, F = kA: UIQI(x, kx) in every window, also for the (linear) gradient images: QE = UIQI^2
        "QE": ((a, a, a * k), _uiqi_of_scaled_copy(k) ** 2),
        # A = B (SSIM(A, B) = 1 >= 0.75): lambda-weighted SSIM(A, F) + SSIM(A, F) = SSIM(x, kx)
        "QY": ((a, a, a * k), _uiqi_of_scaled_copy(k)),
        # normalize1 stretches each image to [0, 255]: kA becomes A, so these are the A = B = F values
        "QCB": ((a, a, a * k), 1.0),
        "QCV": ((a, a, a * k), 0.0),
    }


def _random_images():
    rng = np.random.default_rng(4)
    return [_stretched(ndi.gaussian_filter(rng.uniform(0, 255, (64, 72)), s)) for s in (0.5, 1.0, 2.0)]


def _check_range_and_reference_values(fn, name):
    a, b, f = _random_images()
    lo, hi = BOUNDS[name]
    v = fn(a, b, f)
    assert np.isfinite(v) and lo - 1e-12 <= v <= hi + 1e-12
    same = fn(a, a, a)
    if name in IDENTICAL:
        assert same == pytest.approx(IDENTICAL[name], abs=1e-9)
    # an unrelated fused image is clearly worse than a perfect one
    assert (v - same > 0.01 * max(1.0, abs(v))) if name == "QCV" else (same - v > 0.01)
    if name in REFERENCE_NAMES:
        images, expected = _reference_values(a, b)[name]
        assert fn(*images) == pytest.approx(expected, abs=1e-8)


REFERENCE_NAMES = ("QMI", "QNCIE", "QG", "QE", "QY", "QCB", "QCV")  # QP: no closed form


@pytest.mark.parametrize("name", NAMES)
def test_values_in_range_on_random_images(name):
    _check_range_and_reference_values(METRICS[name], name)


def test_reference_values_are_not_trivial():
    """The closed-form expectations are not the A = B = F values (else a metric stuck there would pass)."""
    a, b, _ = _random_images()
    ref = _reference_values(a, b)
    assert 1.2 < ref["QMI"][1] < 1.9 and 0.9 < ref["QNCIE"][1] < 0.99
    assert ref["QG"][1] == pytest.approx(0.9994 / 2 * 0.9879 / (1 + np.exp(-4.4)))
    assert ref["QE"][1] == pytest.approx(0.8 ** 4) and ref["QY"][1] == pytest.approx(0.64)


@pytest.mark.parametrize("value", ["extreme", "mid-range"])
@pytest.mark.parametrize("name", NAMES)
def test_range_check_rejects_constant_metrics(name, value):
    lo, hi = BOUNDS[name]
    c = IDENTICAL.get(name, 1.0) if value == "extreme" else (lo + min(hi, 10.0)) / 2
    with pytest.raises(AssertionError):
        _check_range_and_reference_values(lambda a, b, f: c, name)


# MATLAB rgb2gray documentation: "0.2989 * R + 0.5870 * G + 0.1140 * B" (uint8 result, rounded). These 4-digit
# weights differ from the exact ones (first row of inv(NTSC matrix)) by less than 0.026 grey levels on [0, 255],
# so pixels whose weighted sum lies within 0.03 of a rounding boundary (.5) are nudged away from it.
MATLAB_RGB2GRAY = np.array([0.2989, 0.5870, 0.1140])
_BOUNDARY_BAND = 0.03


def _away_from_rounding_boundaries(rgb):
    rgb = rgb.copy()
    for _ in range(2):
        bad = np.abs((rgb.astype(float) @ MATLAB_RGB2GRAY) % 1 - 0.5) < _BOUNDARY_BAND
        blue = rgb[..., 2]
        blue[bad] = np.where(blue[bad] < 255, blue[bad] + 1, blue[bad] - 1)  # moves the sum by 0.114
    assert not np.any(np.abs((rgb.astype(float) @ MATLAB_RGB2GRAY) % 1 - 0.5) < _BOUNDARY_BAND)
    return rgb


def _grey(rgb, weights):
    return np.floor(rgb.astype(float) @ weights + 0.5)  # uint8 rounding (half away; no halves occur here)


def _colour_triplet():
    rng = np.random.default_rng(5)
    return [_away_from_rounding_boundaries(
        ndi.gaussian_filter(rng.uniform(0, 255, (48, 40, 3)), (1, 1, 0)).astype(np.uint8)) for _ in range(3)]


def _check_colour_is_matlab_grey(fn, name):
    rgb = _colour_triplet()
    assert fn(*rgb) == METRICS[name](*[_grey(x, MATLAB_RGB2GRAY) for x in rgb])


# plausible wrong colour handling: equal weights, BGR order (OpenCV arrays), no rounding back to uint8 levels
WRONG_GREY = {
    "equal weights": lambda x: _grey(x, np.full(3, 1 / 3)),
    "BGR order": lambda x: _grey(x, MATLAB_RGB2GRAY[::-1]),
    "not rounded": lambda x: x.astype(float) @ MATLAB_RGB2GRAY,
}


@pytest.mark.parametrize("name", NAMES)
def test_colour_input_equals_matlab_grey_conversion(name):
    _check_colour_is_matlab_grey(METRICS[name], name)


@pytest.mark.parametrize("wrong", sorted(WRONG_GREY))
@pytest.mark.parametrize("name", NAMES)
def test_colour_check_rejects_a_wrong_grey_conversion(name, wrong):
    def metric_with_wrong_conversion(*imgs):
        return METRICS[name](*[WRONG_GREY[wrong](x) if x.ndim == 3 else x for x in imgs])

    with pytest.raises(AssertionError):
        _check_colour_is_matlab_grey(metric_with_wrong_conversion, name)


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
    return subprocess.run([sys.executable, *TOOL, *map(str, args)], capture_output=True, text=True,
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


def _constant_cases():
    """A constant image c, a random image r with levels 0..255 (normalize1 leaves it as is) and H(r) in bits."""
    c = np.full((32, 40), 100.0)
    r = np.round(np.random.default_rng(7).uniform(0, 255, (32, 40)))
    r[0, 0], r[-1, -1] = 0, 255
    return c, r, _entropy(r)


def _constant_expectations(h_r):
    """Documented values for the trios (c, c, c), (c, r, r), (r, r, c); None: only finite and within BOUNDS.

    normalize1 maps a constant image to zeros (pyfusion/metrics/_common.py normalize255: "any other constant
    image maps to zeros"), whose histogram has entropy 0.
    QMI: a term whose entropy sum is 0 counts as 0 (qmi docstring); I(X; constant) = 0; (c, r, r): 2 [0 + 1/2].
    QNCIE: NCC = 0 with a constant image, H(r)/8 for (r, r); 0 log 0 = 0 (docs/metrics.md, QNCIE).
    QG, QE, QY: c = c = c is A = B = F (docs). QY (c, r, r): SSIM(c, r) ~ 0 < 0.75, so max(SSIM(A,F), SSIM(B,F))
    = SSIM(r, r) = 1; QY and QE (r, r, c): every SSIM / UIQI of r with the flat c is C / (var_r + C) ~ 0.
    QP: NaN when no source pixel has phase congruency above 0.1 (qp docstring); a constant has none.
    QCB: NaN where the formula is undefined, e.g. a constant image (qcb docstring): normalize1 gives zeros and
    the band-limited contrast is 0/0.
    QCV: 0 for A = B = F (docs); (c, r, r): saliency of the (zeroed) constant A is 0 and D_B = 0 as F = B.
    """
    nan = float("nan")
    return {
        "QMI": (0.0, 1.0, 0.0),
        "QNCIE": (_qncie_from_nccs(0, 0, 0), _qncie_from_nccs(0, 0, h_r / 8), _qncie_from_nccs(h_r / 8, 0, 0)),
        "QG": (QG_CEILING, None, None),
        "QP": (nan, None, None),
        "QE": (1.0, None, 0.0),
        "QY": (1.0, 1.0, 0.0),
        "QCB": (nan, nan, nan),
        "QCV": (0.0, 0.0, None),
    }


def _check_constant_images(fn, name):
    c, r, h_r = _constant_cases()
    for trio, expected in zip(((c, c, c), (c, r, r), (r, r, c)), _constant_expectations(h_r)[name]):
        v = fn(*trio)
        assert isinstance(v, float)
        if expected is None:
            lo, hi = BOUNDS[name]
            assert np.isfinite(v) and lo - 1e-12 <= v <= hi + 1e-12
        elif np.isnan(expected):
            assert np.isnan(v)
        else:
            assert v == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize("name", NAMES)
def test_constant_images_do_not_raise_or_warn(name, recwarn):
    _check_constant_images(METRICS[name], name)
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_constant_image_expectations_are_not_trivial():
    _, _, h_r = _constant_cases()
    assert 7.5 < h_r < 8  # so the QNCIE expectations differ from one another
    exp = _constant_expectations(h_r)["QNCIE"]
    assert exp[0] == pytest.approx(1 - np.log2(3) / 8) and exp[1] == exp[2] != exp[0]


# plausible wrong handling of degenerate inputs: MATLAB's NaN everywhere (0/0 not guarded), or 0 instead of NaN
_WRONG_DEGENERATE = {"always NaN": lambda fn: (lambda *t: float("nan")),
                     "NaN replaced by 0": lambda fn: (lambda *t: float(np.nan_to_num(fn(*t), nan=0.0)))}


# (QCB is documented NaN for every trio with a constant image, so "always NaN" is right there; the other tests
# reject a QCB that is always NaN.)
@pytest.mark.parametrize("name,wrong", [(n, "always NaN") for n in NAMES if n != "QCB"]
                         + [(n, "NaN replaced by 0") for n in ("QP", "QCB")])  # the metrics with a NaN case
def test_constant_image_check_rejects_wrong_conventions(name, wrong):
    with pytest.raises(AssertionError):
        _check_constant_images(_WRONG_DEGENERATE[wrong](METRICS[name]), name)


def test_column_agreement_negates_qcv_and_ranks():
    from fusionlab.tables import column_agreement

    means = {"x": {"QMI": 1.0, "QE": 0.5, "QCV": 30.0},
             "y": {"QMI": 2.0, "QE": 0.4, "QCV": 20.0},
             "z": {"QMI": 3.0, "QE": 0.3, "QCV": 10.0}}
    leaders, rho = column_agreement(means)
    assert leaders == {"QMI": "z", "QE": "x", "QCV": "z"}     # QCV: lower is better
    assert rho["QMI", "QCV"] == pytest.approx(1.0) and rho["QMI", "QE"] == pytest.approx(-1.0)
    assert rho["QE", "QE"] == pytest.approx(1.0)
