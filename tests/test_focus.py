"""Focus map (patch-score averaging) and binary map (threshold) on small inputs with known answers."""
import numpy as np
import pytest

from pyfusion.constants import PATCH, STRIDE
from pyfusion.focus import binary_map, focus_map
from pyfusion.models import get as get_model


def brute_focus(scores, h, w, patch=PATCH, stride=STRIDE):
    """Reference: the authors' MATLAB loop, patches clipped to the image; 0/0 left as NaN."""
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    for i in range(scores.shape[0]):
        for j in range(scores.shape[1]):
            y, x = stride * i, stride * j
            total[y:y + patch, x:x + patch] += scores[i, j]
            count[y:y + patch, x:x + patch] += 1
    with np.errstate(invalid="ignore"):
        return total / count


@pytest.mark.parametrize("h, w", [(16, 16), (17, 16), (21, 34), (33, 19), (40, 41)])
def test_focus_map_matches_brute_force(h, w):
    rng = np.random.default_rng(h * 100 + w)
    scores = rng.random(get_model("cnn").score_shape(h, w))
    got = focus_map(scores, (h, w))
    want = brute_focus(scores, h, w)
    assert got.shape == (h, w)
    assert np.isfinite(want).all()  # the deploy net's map covers every pixel, odd sizes included
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)


def test_score_map_shape_matches_deploy_net():
    assert get_model("cnn").score_shape(16, 16) == (1, 1)
    assert get_model("cnn").score_shape(17, 18) == (2, 2)
    assert get_model("cnn").score_shape(520, 521) == (253, 254)


def test_uncovered_border_copies_nearest_covered_pixels():
    h, w = 21, 23
    rng = np.random.default_rng(1)
    scores = rng.random((3, 4))  # covers rows 0..19 and cols 0..21 only
    got = focus_map(scores, (h, w))
    want = brute_focus(scores, h, w)
    np.testing.assert_allclose(got[:20, :22], want[:20, :22], atol=1e-12)
    np.testing.assert_array_equal(got[20, :22], got[19, :22])
    np.testing.assert_array_equal(got[:, 22], got[:, 21])
    assert np.isfinite(got).all()


def test_constant_scores_give_constant_focus_map():
    np.testing.assert_allclose(focus_map(np.full((5, 6), 0.25), (24, 26)), 0.25, atol=1e-15)


def test_focus_map_rejects_bad_score_maps():
    with pytest.raises(ValueError):
        focus_map(np.zeros((0, 3)), (16, 16))
    with pytest.raises(ValueError):
        focus_map(np.zeros(5), (16, 16))


def test_binary_map_is_strictly_greater_than_threshold():
    focus = np.array([[0.0, 0.5, 0.5000001, 1.0]])
    np.testing.assert_array_equal(binary_map(focus), [[0.0, 0.0, 1.0, 1.0]])
    np.testing.assert_array_equal(binary_map(focus, threshold=0.0), [[0.0, 1.0, 1.0, 1.0]])
