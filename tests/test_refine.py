"""Small-region removal (bwareaopen semantics) and the guided filter against naive references."""
import numpy as np
import pytest

from pyfusion.refine import area_threshold, box_mean, bwareaopen, guided_filter, remove_small_regions


def test_area_threshold_is_exact_ceil():
    assert area_threshold((100, 100)) == 100
    assert area_threshold((28, 25)) == 7          # 0.01*28*25 = 7 exactly (IEEE doubles give 7.000000000000001)
    assert area_threshold((15, 15)) == 3          # ceil(2.25)
    assert area_threshold((520, 520)) == 2704
    assert area_threshold((10, 10), ratio=0.0) == 0
    with pytest.raises(ValueError):
        area_threshold((10, 10), ratio=-0.1)


def test_bwareaopen_keeps_component_of_exactly_area_pixels():
    m = np.zeros((10, 10), bool)
    m[1, 1:5] = True          # 4 pixels
    m[6, 1:4] = True          # 3 pixels
    out = bwareaopen(m, 4)
    assert out[1, 1:5].all()          # area == threshold: kept
    assert not out[6].any()           # fewer: removed
    assert out.sum() == 4


def test_bwareaopen_uses_8_connectivity():
    m = np.zeros((6, 6), bool)
    m[1, 1] = m[2, 2] = True          # diagonal neighbours: one component of 2 under 8-connectivity
    m[4, 4] = True                    # isolated single pixel
    out = bwareaopen(m, 2)
    assert out[1, 1] and out[2, 2]
    assert not out[4, 4]


def test_remove_small_regions_flips_small_ones_then_small_zeros():
    b = np.zeros((20, 20))
    b[:, 10:] = 1                     # big regions of 200 pixels each
    b[3:5, 2:4] = 1                   # 4-pixel island of ones inside zeros -> 0
    b[14:16, 14:16] = 0               # 4-pixel hole of zeros inside ones -> 1
    b[2:4, 13:16] = 0                 # 6-pixel hole: with area 5 it stays
    b[8:10, 2:5] = 1                  # 6-pixel island of ones: with area 5 it stays
    out = remove_small_regions(b, area=5)
    want = np.zeros((20, 20))
    want[:, 10:] = 1
    want[8:10, 2:5] = 1
    want[2:4, 13:16] = 0
    np.testing.assert_array_equal(out, want)
    assert out.dtype == np.float64


def test_remove_small_regions_default_area_from_ratio():
    b = np.zeros((30, 30))
    b[:, 15:] = 1
    b[5, 5] = 1                       # 1 pixel < ceil(0.01*900) = 9 -> removed
    b[20:23, 3:6] = 1                 # 9 pixels == 9 -> kept
    out = remove_small_regions(b)
    assert out[5, 5] == 0 and out[20:23, 3:6].all()


def test_remove_small_regions_zero_inverse_pass_uses_8_connectivity():
    b = np.ones((12, 12))
    b[:, :6] = 0                      # a big 0-region on the left
    b[8, 8] = 0                       # zero pixel diagonally linked to ...
    b[9, 9] = 0                       # ... this one: one 0-component of 2, kept with area 2
    out = remove_small_regions(b, area=2)
    assert out[8, 8] == 0 and out[9, 9] == 0
    out = remove_small_regions(b, area=3)
    assert out[8, 8] == 1 and out[9, 9] == 1


def naive_guided_filter(I, p, r, eps):
    """Per-pixel windows, straight from He et al. Eq. (5)-(8), windows clipped at the borders."""
    h, w = I.shape

    def win(y, x):
        return slice(max(y - r, 0), min(y + r + 1, h)), slice(max(x - r, 0), min(x + r + 1, w))

    a = np.zeros((h, w))
    b = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            wi, wp = I[win(y, x)], p[win(y, x)]
            mu, var = wi.mean(), wi.var()
            a[y, x] = ((wi * wp).mean() - mu * wp.mean()) / (var + eps)
            b[y, x] = wp.mean() - a[y, x] * mu
    q = np.zeros((h, w))
    for y in range(h):
        for x in range(w):
            q[y, x] = a[win(y, x)].mean() * I[y, x] + b[win(y, x)].mean()
    return q


@pytest.mark.parametrize("r, eps", [(8, 0.1), (2, 1e-3)])
def test_guided_filter_matches_naive_reference(r, eps):
    rng = np.random.default_rng(7)
    I = rng.random((23, 19))
    p = (rng.random((23, 19)) > 0.5).astype(float)
    np.testing.assert_allclose(guided_filter(I, p, radius=r, eps=eps), naive_guided_filter(I, p, r, eps),
                               rtol=0, atol=1e-6)


def test_box_mean_divides_by_true_window_size():
    x = np.arange(20.0).reshape(4, 5)
    want = np.array([[x[max(y - 1, 0):y + 2, max(c - 1, 0):c + 2].mean() for c in range(5)] for y in range(4)])
    np.testing.assert_allclose(box_mean(x, 1), want, atol=1e-12)


def test_guided_filter_constant_guide_is_twice_box_mean_and_rejects_bad_args():
    p = (np.random.default_rng(3).random((17, 17)) > 0.5).astype(float)
    np.testing.assert_allclose(guided_filter(np.full((17, 17), 0.3), p, radius=3, eps=0.1), box_mean(box_mean(p, 3), 3),
                               atol=1e-12)
    with pytest.raises(ValueError):
        guided_filter(np.zeros((4, 4)), np.zeros((4, 5)))
    with pytest.raises(ValueError):
        guided_filter(np.zeros((4, 4)), np.zeros((4, 4)), eps=0)
