"""The one pass's fast path (``exact=False``, the default): frames over ``constants.WORK_PIXELS`` scored at a
working size, the edge fix in float32, the frames' work spread over threads in frame order; and the alignment's
default ECC level."""
import cv2
import numpy as np
import pytest
from test_stack import fake_frame_fn, synthetic_stack

import pyfusion
from pyfusion import align as align_mod
from pyfusion.constants import WORK_PIXELS
from pyfusion.io import gray_unit32, to_gray, to_unit
from pyfusion.methods import stack
from pyfusion.methods.cnn_plus import focus_measure
from pyfusion.refine_stack import fast_focus_measure
from pyfusion.util import imap_ordered


def _psnr(x, y):
    d = x.astype(np.float64) - y.astype(np.float64)
    return 10 * np.log10(255.0 ** 2 / np.mean(d * d))


@pytest.mark.parametrize("shape, factor", [((321, 481), 1), ((520, 520), 1), ((521, 520), 2), ((1040, 1040), 2),
                                           ((1041, 1040), 3), ((1502, 2004), 4), ((3000, 4000), 7),
                                           ((1000, 100000), 15), ((40, 100000), 1)])
def test_work_factor(shape, factor):
    f = stack.work_factor(shape)
    assert f == factor
    h, w = -(-shape[0] // f), -(-shape[1] // f)
    assert h * w <= WORK_PIXELS or min(-(-shape[0] // (f + 1)), -(-shape[1] // (f + 1))) < stack.MIN_WORK_SIDE


def test_block_mean_averages_each_block_and_repeats_the_edges():
    x = np.arange(35, dtype=np.float32).reshape(5, 7)
    m = stack.block_mean(x, 2)
    assert m.shape == (3, 4) and m.dtype == np.float32
    assert m[0, 0] == np.mean(x[:2, :2]) and m[1, 2] == np.mean(x[2:4, 4:6])
    assert m[2, 3] == x[4, 6]                              # the corner block: one pixel repeated
    assert m[2, 0] == np.mean(x[4, :2])                    # the last row of blocks: its row twice
    np.testing.assert_array_equal(stack.block_mean(x, 1), x)


def test_gray_unit32_and_the_fast_focus_measure_match_the_float64_ones():
    rng = np.random.default_rng(1)
    for img in (rng.integers(0, 256, (40, 50, 3), dtype=np.uint8),
                rng.integers(0, 65536, (40, 50), dtype=np.uint16)):
        g = gray_unit32(img)
        assert g.dtype == np.float32 and g.shape == (40, 50)
        np.testing.assert_allclose(g, to_gray(to_unit(img)), atol=1e-6)
    g = to_gray(to_unit(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)))
    fast, ref = fast_focus_measure(g.astype(np.float32), 1), focus_measure(g, 1)
    np.testing.assert_allclose(fast[2:-2, 2:-2], ref[2:-2, 2:-2], rtol=1e-4, atol=1e-6)   # borders: reflected


def test_imap_ordered_keeps_the_order_and_raises_where_due():
    assert list(imap_ordered(lambda x: x * x, range(20), threads=3)) == [x * x for x in range(20)]
    taken = []

    def items():
        for k in range(10):
            taken.append(k)
            yield k

    def fail_at_4(x):
        if x == 4:
            raise ValueError("four")
        return x

    got = []
    with pytest.raises(ValueError, match="four"):
        for x in imap_ordered(fail_at_4, items(), threads=2):
            got.append(x)
    assert got == [0, 1, 2, 3] and max(taken) <= 6       # at most `threads` items ahead of the one due


def test_small_frames_take_the_exact_path_byte_for_byte(winograd):
    _, frames, _ = synthetic_stack(n=3, h=96, w=192, colour=True)
    fast, exact = pyfusion.fuse(frames, method="cnn"), pyfusion.fuse(frames, method="cnn", exact=True)
    np.testing.assert_array_equal(fast.fused, exact.fused)
    np.testing.assert_array_equal(fast.depth_map, exact.depth_map)


def test_exact_is_the_full_resolution_one_pass():
    sharp, frames, _ = synthetic_stack(n=3, h=400, w=800)
    got = pyfusion.fuse(frames, method="cnn", exact=True, frame_fn=fake_frame_fn)
    fused, maps, _ = stack.fuse(frames, frame_fn=fake_frame_fn)
    np.testing.assert_array_equal(got.fused, fused)
    np.testing.assert_array_equal(got.depth_map, maps["depth_map"])


def test_fast_path_scores_at_the_working_size():
    _, frames, _ = synthetic_stack(n=3, h=400, w=800)
    seen = []

    def frame_fn(gray):
        seen.append(gray.shape)
        return fake_frame_fn(gray)

    fused, maps, _ = stack.fuse(frames, frame_fn=frame_fn, work_pixels=WORK_PIXELS)
    assert seen == [(200, 400)] * 3 and fused.shape == frames[0].shape and maps["depth_map"].shape == (400, 800)


def test_fast_path_decides_like_the_exact_one(winograd):
    """Frames over the working size (400x800: half size): the depth map and the fused image as the exact path's."""
    sharp, frames, truth = synthetic_stack(n=3, h=400, w=800, colour=True)
    fast, exact = pyfusion.fuse(frames, method="cnn"), pyfusion.fuse(frames, method="cnn", exact=True)
    assert np.mean(fast.depth_map == truth) >= np.mean(exact.depth_map == truth) - 0.002
    assert np.mean(fast.depth_map == exact.depth_map) >= 0.99
    assert _psnr(fast.fused, sharp) >= _psnr(exact.fused, sharp) - 0.1


def test_fast_path_does_not_depend_on_the_thread_count(winograd):
    _, frames, _ = synthetic_stack(n=4, h=300, w=1000, colour=True, seed=2)
    one, two = (pyfusion.fuse(frames, method="cnn", threads=t) for t in (1, 3))
    np.testing.assert_array_equal(one.fused, two.fused)
    np.testing.assert_array_equal(one.depth_map, two.depth_map)


@pytest.mark.parametrize("shape, levels, finest", [((321, 481), 4, 1), ((1040, 1040), 5, 1), ((1041, 1040), 5, 2),
                                                   ((1536, 2048), 6, 2), ((3000, 4000), 6, 3), ((96, 96), 1, 0)])
def test_auto_finest_level(shape, levels, finest):
    assert align_mod.auto_finest_level(shape, levels) == finest


def test_exact_aligns_at_half_size(monkeypatch):
    levels = []
    real = align_mod._register

    def spy(*args, finest_level, **kw):
        levels.append(finest_level)
        return real(*args, finest_level=finest_level, **kw)

    monkeypatch.setattr(align_mod, "_register", spy)
    rng = np.random.default_rng(0)
    base = cv2.resize(rng.random((70, 70)), (1100, 1100), interpolation=cv2.INTER_CUBIC)
    base = (base - base.min()) / (base.max() - base.min())
    frames = [np.round(np.roll(base, 2 * k, axis=1) * 255).astype(np.uint8) for k in range(3)]
    pyfusion.fuse(frames, method="cnn", align=True, frame_fn=fake_frame_fn)
    pyfusion.fuse(frames, method="cnn", align=True, exact=True, frame_fn=fake_frame_fn)
    assert levels == [2, 2, 1, 1]


def test_frames_at_once_is_bounded_by_threads_and_memory():
    from pyfusion.refine_stack import frames_at_once

    assert frames_at_once((100, 100), per_pixel=10, threads=4, max_bytes=10 ** 9) == 4
    assert frames_at_once((100, 100), per_pixel=10, threads=4, max_bytes=4 * 10 ** 5) == 2   # 4 fit, 2 held back
    assert frames_at_once((100, 100), per_pixel=10, threads=4, max_bytes=10 ** 3) == 1       # never below one
    assert frames_at_once((100, 100), per_pixel=10, threads=1, max_bytes=10 ** 9) == 1


def test_edge_fix_does_not_depend_on_the_frames_in_flight():
    from pyfusion.refine_stack import edge_fix

    _, frames, truth = synthetic_stack(n=4, h=120, w=240, colour=True, seed=3)
    depth = np.asarray(truth, np.int32).copy()
    depth[40:80, 100:140] = 0                                     # a wrong patch for the band to re-decide
    runs = [edge_fix(frames, depth, threads=t, max_bytes=b, fast=fast)
            for fast in (False, True) for t, b in ((1, None), (3, None), (3, 1))]
    for a, b in zip(runs[1:3], runs[:1] * 2):
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])
    for a in runs[4:6]:
        np.testing.assert_array_equal(a[0], runs[3][0])
        np.testing.assert_array_equal(a[1], runs[3][1])
