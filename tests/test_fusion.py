"""The whole pipeline with fake score maps (no Caffe), and one test with the real net."""
import cv2
import numpy as np
import pytest

import pyfusion
from pyfusion.constants import RGB2GRAY
from pyfusion.models import get as get_model
from pyfusion.io import to_gray
from pyfusion.methods.cnn import STAGES
from pyfusion.io import FusionInputError, from_unit, to_unit

H, W = 48, 64


def pair(dtype=np.uint8, colour=False, seed=0, h=H, w=W):
    """Left half sharp in A, right half sharp in B (Gaussian blur elsewhere)."""
    rng = np.random.default_rng(seed)
    sharp = rng.random((h, w, 3) if colour else (h, w))
    blur = cv2.GaussianBlur(sharp, (7, 7), 2.0)
    left = np.zeros(sharp.shape, bool)
    left[:, : w // 2] = True
    a = np.where(left, sharp, blur)
    b = np.where(left, blur, sharp)
    if dtype == np.float32:
        return a.astype(np.float32), b.astype(np.float32)
    return from_unit(a, dtype), from_unit(b, dtype)


def left_scores(a, b):
    """Fake net: 1 for patches whose centre lies in the left half, else 0."""
    sh = get_model("cnn").score_shape(*a.shape[:2])
    centre = 2 * np.arange(sh[1]) + 7.5
    return np.tile((centre < a.shape[1] / 2).astype(np.float32), (sh[0], 1))


def const_scores(value):
    return lambda a, b: np.full(get_model("cnn").score_shape(*a.shape[:2]), value, np.float32)


def naive_guided_filter(I, p, r, eps):
    """He et al. 2013, Algorithm 1, written out with explicit (border-clipped) windows: the reference for the
    pipeline's vectorised filter."""
    h, w = I.shape

    def mean(x):
        out = np.empty_like(x)
        for i in range(h):
            for j in range(w):
                out[i, j] = x[max(0, i - r):i + r + 1, max(0, j - r):j + r + 1].mean()
        return out

    mI, mp = mean(I), mean(p)
    a = (mean(I * p) - mI * mp) / (mean(I * I) - mI * mI + eps)
    b = mp - a * mI
    return mean(a) * I + mean(b)


def test_left_right_pair_gives_expected_maps():
    a, b = pair()
    r = pyfusion.fuse([a, b], score_fn=left_scores)
    step = np.zeros((H, W))
    step[:, : W // 2] = 1
    np.testing.assert_array_equal(r.binary_map, step)
    np.testing.assert_array_equal(r.cleaned_map, step)
    # the guide is the grey initial fusion gray(A) D + gray(B) (1 - D), with MATLAB's rgb2gray weights
    ga, gb = a.astype(np.float64) / 255, b.astype(np.float64) / 255
    guide = np.where(step == 1, ga, gb)
    np.testing.assert_allclose(r.decision_map, naive_guided_filter(guide, step, 8, 0.1), rtol=0, atol=1e-12)
    # windows of all neighbours entirely on one side: the weights are exactly 1 / 0 there
    np.testing.assert_allclose(r.decision_map[:, : W // 2 - 16], 1.0, atol=1e-12)
    np.testing.assert_allclose(r.decision_map[:, W // 2 + 16:], 0.0, atol=1e-12)
    assert (r.decision_map[:, : W // 2] > 0.5).all() and (r.decision_map[:, W // 2:] < 0.5).all()
    np.testing.assert_array_equal(r.fused[:, : W // 2 - 16], a[:, : W // 2 - 16])
    np.testing.assert_array_equal(r.fused[:, W // 2 + 16:], b[:, W // 2 + 16:])
    assert r.score_map.shape == get_model("cnn").score_shape(H, W)
    assert r.focus_map.shape == (H, W) and r.focus_map.min() >= 0 and r.focus_map.max() <= 1


def test_small_wrong_island_is_removed():
    a, b = pair()

    def scores(x, y):
        s = left_scores(x, y)
        s[5:10, 22:25] = 1.0  # stray patches at the right border -> an island in the binary map
        return s

    r = pyfusion.fuse([a, b], score_fn=scores, region_ratio=0.1)
    island = r.binary_map[:, W // 2:].sum()
    assert 0 < island < np.ceil(0.1 * H * W)
    assert r.cleaned_map[:, W // 2:].sum() == 0
    r = pyfusion.fuse([a, b], score_fn=scores, region_ratio=island / (H * W))  # area == island size: kept
    assert r.cleaned_map[:, W // 2:].sum() == island


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.float32])
@pytest.mark.parametrize("colour", [False, True])
def test_bit_depth_and_channels_are_kept(dtype, colour):
    a, b = pair(dtype, colour)
    r = pyfusion.fuse([a, b], score_fn=left_scores)
    assert r.fused.dtype == a.dtype and r.fused.shape == a.shape
    # F = W A + (1 - W) B with one weight map for every channel, clipped and rounded half away from zero to the
    # input's levels (MATLAB uint8()/uint16()), written out here
    scale = {np.uint8: 255.0, np.uint16: 65535.0}.get(dtype, 1.0)
    w = r.decision_map[..., None] if colour else r.decision_map
    f = (a / scale) * w + (b / scale) * (1 - w)
    want = np.floor(np.clip(f, 0, 1) * scale + 0.5).astype(dtype) if scale > 1 else f.astype(dtype)
    np.testing.assert_array_equal(r.fused, want)
    # constant decisions reproduce a source exactly, at full bit depth
    np.testing.assert_array_equal(pyfusion.fuse([a, b], score_fn=const_scores(1.0)).fused, a)
    np.testing.assert_array_equal(pyfusion.fuse([a, b], score_fn=const_scores(0.0)).fused, b)


def test_16_bit_detail_survives():
    a, b = pair(np.uint16)
    assert (a % 256 != 0).any()
    fused = pyfusion.fuse([a, b], score_fn=left_scores).fused
    np.testing.assert_array_equal(fused[:, :8], a[:, :8])


def test_hxwx1_images_keep_their_shape():
    a, b = pair()
    r = pyfusion.fuse([a[..., None], b[..., None]], score_fn=left_scores)
    assert r.fused.shape == (H, W, 1)
    np.testing.assert_array_equal(r.fused[..., 0], pyfusion.fuse([a, b], score_fn=left_scores).fused)


def test_gray_uses_matlab_rgb2gray_weights_and_feeds_the_net():
    a, b = pair(colour=True)
    seen = []

    def spy(x, y):
        seen.append((x, y))
        return left_scores(x, y)

    pyfusion.fuse([a, b], score_fn=spy)
    x, y = seen[0]
    assert x.dtype == np.float32 and x.shape == (H, W)
    ua = to_unit(a)
    want = RGB2GRAY[0] * ua[..., 0] + RGB2GRAY[1] * ua[..., 1] + RGB2GRAY[2] * ua[..., 2]
    np.testing.assert_allclose(x, want.astype(np.float32), atol=0)


def test_same_inputs_same_output_and_inputs_untouched():
    a, b = pair(colour=True)
    a0, b0 = a.copy(), b.copy()
    a.flags.writeable = False
    b.flags.writeable = False
    r1 = pyfusion.fuse([a, b], score_fn=left_scores)
    r2 = pyfusion.fuse([a, b], score_fn=left_scores)
    np.testing.assert_array_equal(r1.fused, r2.fused)
    np.testing.assert_array_equal(r1.decision_map, r2.decision_map)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)


def top_scores(a, b):
    """Fake net: 1 for the top rows of patches, else 0."""
    sh = get_model("cnn").score_shape(*a.shape[:2])
    return np.repeat((np.arange(sh[0]) < sh[0] // 2).astype(np.float32)[:, None], sh[1], axis=1)


def test_three_sources_are_fused_in_series():
    a, b = pair(colour=True)
    c = pair(colour=True, seed=5)[0]
    calls = []

    def scores(x, y):
        calls.append(x.copy())
        return (left_scores if len(calls) == 1 else top_scores)(x, y)

    r = pyfusion.fuse([a, b, c], score_fn=scores)
    assert len(calls) == 2
    first = pyfusion.fuse([a, b], score_fn=left_scores)
    second = pyfusion.fuse([first.fused, c], score_fn=top_scores)
    np.testing.assert_array_equal(calls[1], to_gray(to_unit(first.fused)).astype(np.float32))
    np.testing.assert_array_equal(r.fused, second.fused)
    np.testing.assert_array_equal(r.decision_map, first.decision_map)  # maps: first pair
    assert r.fused.dtype == np.uint8


def test_timings_cover_every_stage():
    """Each stage's time lands under its own name: a score function that takes at least 50 ms is counted in
    score_map, not elsewhere, and the total includes it (an accounting check, not a speed check)."""
    import time

    def slow(x, y):
        time.sleep(0.05)
        return left_scores(x, y)

    a, b = pair()
    r = pyfusion.fuse([a, b], score_fn=slow)
    assert set(r.timings) == {*STAGES, "total"}
    assert r.timings["score_map"] >= 0.05
    assert r.timings["total"] >= sum(r.timings[s] for s in STAGES) >= 0.05
    r3 = pyfusion.fuse([a, b, a], score_fn=slow)          # two pairs: summed over the pairs
    assert r3.timings["score_map"] >= 0.1


def test_paths_are_read(tmp_path):
    a, b = pair(colour=True)
    cv2.imwrite(str(tmp_path / "a.png"), a[..., ::-1])
    cv2.imwrite(str(tmp_path / "b.png"), b[..., ::-1])
    r = pyfusion.fuse([tmp_path / "a.png", str(tmp_path / "b.png")], score_fn=left_scores)
    np.testing.assert_array_equal(r.fused, pyfusion.fuse([a, b], score_fn=left_scores).fused)
    with pytest.raises(FusionInputError, match="no such file"):
        pyfusion.fuse([tmp_path / "a.png", tmp_path / "nope.png"], score_fn=left_scores)


def test_input_errors():
    a, b = pair()
    with pytest.raises(FusionInputError, match="differs"):
        pyfusion.fuse([a, b[:, :-1]], score_fn=left_scores)
    with pytest.raises(FusionInputError, match="channel"):
        pyfusion.fuse([a, np.dstack([b, b, b])], score_fn=left_scores)
    with pytest.raises(FusionInputError, match="smaller"):
        pyfusion.fuse([a[:15], b[:15]], score_fn=left_scores)
    with pytest.raises(FusionInputError, match="non-finite"):
        pyfusion.fuse([np.full((H, W), np.nan), np.zeros((H, W))], score_fn=left_scores)
    with pytest.raises(FusionInputError, match="sequence"):
        pyfusion.fuse(a, score_fn=left_scores)


def test_bad_score_functions_are_caught():
    a, b = pair()
    with pytest.raises(ValueError, match="shape"):
        pyfusion.fuse([a, b], score_fn=lambda x, y: np.zeros((3, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        pyfusion.fuse([a, b], score_fn=lambda x, y: const_scores(np.nan)(x, y))
    with pytest.raises(ValueError, match="either"):
        pyfusion.fuse([a, b], score_fn=left_scores, model="m.caffemodel")


def test_options_are_passed_through():
    a, b = pair()
    r = pyfusion.fuse([a, b], score_fn=left_scores, threshold=0.99)
    # only pixels all of whose patches have their centre on the left (x <= 25) now exceed the threshold
    assert r.binary_map[:, :26].all() and r.binary_map[:, 26:].sum() == 0
    r = pyfusion.fuse([a, b], score_fn=left_scores, gf_radius=1, gf_eps=1e-4)
    assert np.abs(r.decision_map - r.cleaned_map).max() < 0.5


@pytest.mark.slow
def test_real_net_separates_a_synthetic_pair(winograd):
    """The shipped model (a committed file: its absence is a failure) on a camera crop, left half sharp in A."""
    from skimage import data

    from pyfusion import models

    assert models.get("cnn").onnx.is_file()

    sharp = data.camera()[192:320, 192:320].astype(np.float64) / 255
    blur = cv2.GaussianBlur(sharp, (0, 0), 3.0)
    left = np.zeros(sharp.shape, bool)
    left[:, :64] = True
    a = from_unit(np.where(left, sharp, blur), np.uint8)
    b = from_unit(np.where(left, blur, sharp), np.uint8)
    r = pyfusion.fuse([a, b])
    assert r.score_map.dtype == np.float64 and r.score_map.shape == (57, 57)
    assert r.score_map[:, :20].mean() > 0.9 and r.score_map[:, -20:].mean() < 0.1   # A left, B right
    assert (r.cleaned_map == left).mean() > 0.9
    err_fused = np.abs(to_unit(r.fused) - sharp).mean()
    assert err_fused < min(np.abs(to_unit(a) - sharp).mean(), np.abs(to_unit(b) - sharp).mean())
