"""The measurements behind the stack speed levers (fusionlab.stackbench: the cheap focus measure and what it leaves
undecided; docs/stacks.md, "Speed"): the measure itself, and the survey's bookkeeping at its limits."""
import cv2
import numpy as np
from test_stack import synthetic_stack

from fusionlab import stackbench
from pyfusion import models
from pyfusion.io import to_gray, to_unit

CNN = models.get("cnn")


def test_patch_energy_is_the_mean_squared_laplacian_of_each_patch():
    rng = np.random.default_rng(3)
    g = rng.random((41, 37)).astype(np.float32)
    shape = CNN.score_shape(41, 37)
    e = stackbench.patch_energy(g, shape, patch=16, stride=2)
    lap = cv2.Laplacian(g, cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REPLICATE).astype(np.float64) ** 2
    padded = np.zeros((2 * shape[0] + 14, 2 * shape[1] + 14))
    padded[:41, :37] = lap
    for i, j in [(0, 0), (3, 4), (shape[0] - 1, shape[1] - 1)]:   # the last patch sticks out of the image
        np.testing.assert_allclose(e[i, j], padded[2 * i:2 * i + 16, 2 * j:2 * j + 16].mean(), rtol=1e-12)


def test_patch_energy_ranks_the_sharp_band_first():
    _, frames, truth = synthetic_stack(n=3, h=64, w=192)
    shape = CNN.score_shape(64, 192)
    e = np.stack([stackbench.patch_energy(to_gray(to_unit(f)), shape, patch=16, stride=2) for f in frames])
    cols = np.arange(shape[1]) * 2 + 8                             # each patch's centre column
    inside = np.abs(cols[:, None] - np.array([32, 96, 160])).min(1) < 16   # well inside a band
    np.testing.assert_array_equal(e.argmax(0)[:, inside], np.broadcast_to(truth[0, cols[inside]],
                                                                         (shape[0], inside.sum())))


def test_survey_with_everything_undecided_is_the_one_pass_argmax(winograd):
    """Margin infinite, no floor, every frame a candidate: every pixel goes to the net, the labels are the one
    pass's, and each frame is scored whole (work >= 1: the tiles overlap)."""
    _, frames, _ = synthetic_stack(n=3, h=96, w=192)
    (row,) = stackbench.undecided_survey(frames, margins=(np.inf,), floors=(0.0,), tiles=((16, 16),), candidates=3)
    assert row["undecided"] == 1.0 and row["agree"] == 1.0 and row["work"]["16x16"] >= 1.0


def test_survey_with_nothing_undecided_is_the_cheap_argmax(winograd):
    _, frames, truth = synthetic_stack(n=3, h=96, w=192)
    (row,) = stackbench.undecided_survey(frames, margins=(1.0,), floors=(np.inf,), tiles=((16, 16),))
    assert row["undecided"] == 0.0 and row["work"]["16x16"] == 0.0
    # the cheap measure alone decides these clear bands almost as the net does
    assert row["agree"] > 0.99
