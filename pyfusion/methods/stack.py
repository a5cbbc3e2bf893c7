"""N frames in one pass: the CNN method of [1]_ on a focus stack, one trunk pass per frame.

The shipped net's head is linear (fc1 and fc2 without a nonlinearity between them; the ONNX twin folds them into
one K x K convolution over the concatenated conv3 maps of both sources, then a sigmoid), so the pair's logit is
``u(a) + v(b)`` and the antisymmetric part ``s = (u - v) / 2`` of each frame is a per-frame focus score:
``logit(i, j) - logit(j, i) = 2 (s_i - s_j)`` (:func:`pyfusion.net.frame_scores`). Fusing N frames then needs
the trunk once per frame instead of twice per extra frame, and no intermediate result is fused again (the
series way ``((I1 + I2) + I3) + ...`` of [1]_ carries each step's errors and rounding forward).

Steps (``method="cnn"`` with three or more sources, or ``series=False``; :func:`fuse`):

1. each frame to [0, 1] and to grayscale (as the pairwise method);
2. its score map ``s_i`` (``frame_fn``, default :func:`pyfusion.net.frame_scores`), one trunk pass;
3. its focus map: the paper's patch averaging of ``s_i`` (:func:`pyfusion.focus.focus_map`);
4. the label map: the frame with the largest focus value at each pixel (ties to the lower index), kept as a
   running argmax (the float64 best focus value and the label), so no frame's maps outlive its turn;
5. small-region removal on the label map (:func:`remove_small_label_regions`): for each label ``k = 0, 1, ...``
   in turn, every 8-connected region of label ``k`` with fewer than ``ceil(ratio H W)`` pixels takes the label
   that most of the pixels bordering it have (8-neighbours outside the region; ties to the lower label). The
   first frame's regions go first, as the pairwise method removes source A's (the binary map's 1s) first: for
   N = 2 it is exactly :func:`pyfusion.refine.remove_small_regions` (label 0 = source A). Afterwards every
   region of every label has at least that many pixels (a refill only grows regions of other labels, and the
   regions of a label already visited are large), unless one region covers the whole image;
   the result is the depth map (``maps["depth_map"]``, the frame index of each pixel);
6. (``edge_fix=True``, the default) the depth map's edges: in a 16-pixel band around its label boundaries each
   pixel takes the frame with the largest per-pixel focus measure (window radius 1), and the frames are blended
   by a 4-level Laplacian pyramid of their one-hot label masks (:func:`pyfusion.refine_stack.edge_fix`). The
   16x16 patch scores place a depth edge a few pixels into the nearer object, and the guided filter then mixes a
   blurred foreground into the sharp background (halos); the band, the window and the blend were chosen on
   tuning stacks with occlusions by a rule fixed beforehand (docs/stacks.md, "Halo fix");
7. (``edge_fix=False``, as in [1]_) one weight map per frame: the guided filter (r = 8, eps = 0.1) of the
   frame's one-hot mask of the depth map, guided by the grayscale initial fusion (each pixel's gray value from the
   frame of its label), negatives clipped to 0, then all weights normalised to sum 1 at each pixel
   (:func:`pyfusion.refine_stack.guided_blend`); the blend ``F = sum_i W_i I_i`` per channel, rounded to the
   sources' bit depth.

Memory: the sources are the caller's arrays (read once each pass); besides them the method holds O(1) maps of
full resolution whatever N: the running argmax (float64 best focus value + int32 label), the depth map, the
guide, the weighted sum of the frames (float64, the sources' channels) and the sum of the weights, plus one
frame's transient maps (its [0, 1] copy and grayscale, its score and focus maps, one guided-filter run). The
trunk runs tiled under ``max_bytes`` (:func:`pyfusion.net.frame_scores`). No frame's feature or focus maps are
kept after its turn; each frame's [0, 1] and grayscale versions are recomputed in the passes that need them
(three passes: labels; guide; weights and blend).

N = 2 (forced with ``series=False``): the pairwise method thresholds the average of ``sigmoid(u_a + v_b)`` at
0.5, this one compares the averages of ``s_a`` and ``s_b``, i.e. averages ``(logit(a, b) - logit(b, a)) / 2``
and thresholds it at 0. Both agree where the net is antisymmetric (``logit(b, a) = -logit(a, b)``, what
training on both orders aims at) and the patches agree; they differ where the averaged probabilities and the
averaged logits fall on different sides (mixed patches near focus boundaries), and where the guided filter
overshoots (the pairwise method does not clip its decision map). The removal and the guided filter are the same.
Measured on the 30 survey pairs (shipped ``cnn``, winograd backend): the cleaned labels agree on 98.5% of the
pixels on average (88.4% at worst, g_02), the fused images differ by 59.3 dB PSNR on average (median 61.0, worst
45.6 dB on g_06, best 66.5), 5.4% of the pixels change (most by one or two grey levels). All of it comes from the
labels: the pairwise weights with this method's labels give this method's image (29 pairs byte for byte, one at
96 dB), so the clipping of the overshoot makes no visible difference at 8 bits.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207, Sec. 3.3 (last paragraph: more than two sources).
"""
from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from pyfusion import models
from pyfusion.constants import (GF_EPS, GF_RADIUS, REGION_RATIO, REGION_RATIO_STACK, REGION_RATIO_WORK,
                                WORK_PIXELS)
from pyfusion.focus import focus_map
from pyfusion.io import gray_unit32, to_gray, to_unit
from pyfusion.refine import area_threshold
from pyfusion.refine_stack import BAND, FOCUS_RADIUS, LEVELS, guided_blend, pyramid_blend, redecide_band
from pyfusion.util import Stopwatch, imap_ordered, progress_frames as _frames, threads as thread_count

__all__ = ["fuse", "remove_small_label_regions", "work_factor", "block_mean", "MAPS", "STAGES", "WORK_PIXELS"]

#: Keys of the timings besides ``"total"`` (the pairwise method's names: ``binary_map`` is the argmax here,
#: ``decision_map`` the edge fix's band re-decided, ``fused`` the blend and the frames' conversions; with
#: ``align``, :func:`pyfusion.fuse` adds ``align``).
STAGES = ("score_map", "focus_map", "binary_map", "cleaned_map", "decision_map", "fused")
#: The maps returned: the argmax label map before small-region removal and the depth map after it (int32 frame
#: indices, 0 = the first source).
MAPS = ("label_map", "depth_map")

_EIGHT_U8 = np.ones((3, 3), dtype=np.uint8)

#: The fast path's smallest working side (px): a frame is never reduced below it.
MIN_WORK_SIDE = 64


def work_factor(shape, *, pixels: int = WORK_PIXELS, min_side: int = MIN_WORK_SIDE) -> int:
    """The fast path's downscale of an ``(H, W)`` frame: the smallest integer ``f`` with
    ``ceil(H / f) ceil(W / f) <= pixels``, lowered while ``min(ceil(H / f), ceil(W / f)) < min_side``; 1 for
    frames of at most ``pixels`` (the fast path is then the exact one)."""
    h, w = int(shape[0]), int(shape[1])
    f = 1
    while -(-h // f) * -(-w // f) > pixels:
        f += 1
    while f > 1 and min(-(-h // f), -(-w // f)) < min_side:
        f -= 1
    return f


def block_mean(x: np.ndarray, f: int) -> np.ndarray:
    """The mean of each ``f x f`` block of a 2-D array (float32 out), the last row and column of blocks completed
    by repeating the edge pixels: shape ``(ceil(H / f), ceil(W / f))``."""
    x = np.asarray(x, np.float32)
    if f == 1:
        return x
    h, w = x.shape
    hp, wp = -(-h // f) * f, -(-w // f) * f
    if (hp, wp) != (h, w):
        x = np.pad(x, ((0, hp - h), (0, wp - w)), mode="edge")
    return x.reshape(hp // f, f, wp // f, f).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)


def _upsample(labels: np.ndarray, f: int, shape) -> np.ndarray:
    """Each label of a working-size map repeated over its ``f x f`` block, cut to ``shape``."""
    if f == 1:
        return labels
    return np.repeat(np.repeat(labels, f, axis=0), f, axis=1)[:shape[0], :shape[1]]


def remove_small_label_regions(labels: np.ndarray, *, area: int | None = None, ratio: float = REGION_RATIO,
                               n_labels: int | None = None) -> np.ndarray:
    """Small-region removal on a label map: regions with fewer than ``area`` pixels take their surroundings' label.

    For each label ``k = 0 .. n_labels - 1`` in turn (on the map as updated by the earlier labels): every
    8-connected region of label ``k`` with fewer than ``area`` pixels is refilled with the label most of its
    border pixels have (the 8-neighbours of the region outside it; ties to the lower label). A region without
    border pixels (the whole image) stays. For two labels this is :func:`pyfusion.refine.remove_small_regions` with
    label 0 as the binary map's 1 (``bwareaopen`` of the 1s, then of the 0s).

    Parameters
    ----------
    labels : ndarray (H, W) of int
        Labels ``0 .. n_labels - 1``.
    area : int, optional
        Area threshold in pixels; default :func:`pyfusion.refine.area_threshold` of the map's shape with ``ratio``.
    ratio : float, optional
        Default ``constants.REGION_RATIO`` = 0.01.
    n_labels : int, optional
        Default ``labels.max() + 1``.

    Returns
    -------
    ndarray (H, W) int32
        The cleaned label map (a new array).
    """
    out = np.array(labels, dtype=np.int32, copy=True)
    if out.ndim != 2:
        raise ValueError(f"label map must be 2-D, got shape {out.shape}")
    if area is None:
        area = area_threshold(out.shape, ratio=ratio)
    if n_labels is None:
        n_labels = int(out.max()) + 1 if out.size else 0
    if area <= 1 or out.size == 0:
        return out
    h, w = out.shape
    for k in range(n_labels):
        n, comp, stats, _ = cv2.connectedComponentsWithStats((out == k).view(np.uint8), connectivity=8,
                                                             ltype=cv2.CV_32S)   # component 0: the other labels
        small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] < area) + 1
        if small.size == 0:
            continue
        fills = []
        for c in small:
            x, y, cw, ch = stats[c, :4]
            r0, r1 = max(y - 1, 0), min(y + ch + 1, h)
            c0, c1 = max(x - 1, 0), min(x + cw + 1, w)
            region = comp[r0:r1, c0:c1] == c
            ring = cv2.dilate(region.view(np.uint8), _EIGHT_U8).view(bool) & ~region   # borders: no neighbours
            border = out[r0:r1, c0:c1][ring]
            if border.size == 0:  # the region is the whole image
                continue
            fills.append((c, (r0, r1, c0, c1), region, int(np.argmax(np.bincount(border)))))
        # the border pixels of a label-k region have other labels, which this pass does not change: refill at once
        for _, (r0, r1, c0, c1), region, new in fills:
            out[r0:r1, c0:c1][region] = new
    return out


def _check_scores(s, expected, k: int) -> np.ndarray:
    s = np.asarray(s)
    if s.shape != expected:
        raise ValueError(f"frame {k + 1}: score map has shape {s.shape}, expected {expected}")
    if not np.all(np.isfinite(s)):
        raise ValueError(f"frame {k + 1}: score map contains non-finite values")
    return s.astype(np.float64)


def _net_frame_fn(model, backend, *, threads, max_bytes, progress, gpu=None) -> Callable:
    from pyfusion import net  # imported lazily, as in the pairwise method

    def score(gray):
        return net.frame_scores(gray, model=model, backend=backend, threads=threads, gpu=gpu, max_bytes=max_bytes,
                                progress=progress)

    return score


def fuse(images, *, frame_fn: Callable | None = None, model=None, backend=None, threads=None, gpu=None,
         max_bytes=None,
         progress=False, region_ratio: float | None = None, gf_radius: int = GF_RADIUS, gf_eps: float = GF_EPS,
         patch: int | None = None, stride: int | None = None, edge_fix: bool = True, work_pixels: int | None = None,
         band: int = BAND):
    """One-pass fusion of N >= 2 validated sources (one shape and dtype); the steps are the module docstring's.

    Parameters
    ----------
    images : sequence of ndarray
        The sources (validated: one shape and dtype).
    frame_fn : callable, optional
        ``frame_fn(gray) -> scores``: a frame's score map (float32 grayscale ``(H, W)`` in [0, 1] in, the net's
        score-map shape out, larger = sharper; any monotone scale). Default: :func:`pyfusion.net.frame_scores`
        with ``model``, ``backend``, ``threads``, ``max_bytes``, ``progress``.
    progress : bool, optional
        Progress bars on stderr: one per pass (``stack: score maps``, ``stack: guide``, ``stack: weights and
        blend``), counting the frames; the net's tiles below the first where a frame is tiled.
    region_ratio, gf_radius, gf_eps
        As the pairwise method (8, 0.1 for the guided filter), except the small-region area: 0.003 H W
        (``constants.REGION_RATIO_STACK``) instead of the paper's 0.01, whose regions are those of a two-region map
        (the area was chosen on synthetic tuning stacks, docs/stacks.md); on the fast path's working size 0.001
        (``constants.REGION_RATIO_WORK``, docs/stacks.md "Speed"). None: these defaults.
    patch, stride : int, optional
        The net's patch and stride (default: the ``cnn`` model's geometry).
    edge_fix : bool, optional
        True (default): the depth map's boundary band re-decided by a local focus measure, then a pyramid blend
        (:func:`pyfusion.refine_stack.edge_fix`; ``gf_radius`` and ``gf_eps`` unused); False: steps 6-7, the
        guided-filter blend (:func:`pyfusion.refine_stack.guided_blend`).
    work_pixels : int, optional
        None (default): the score maps at full resolution, as in [1]_. A number (the fast path, ``WORK_PIXELS``
        for ``fuse(..., exact=False)``): frames of more pixels are scored at a working size, each frame's float32
        gray reduced by :func:`block_mean` with the factor :func:`work_factor`; the focus maps, the argmax and the
        small-region removal run at that size, the depth map is repeated back to full size, and the edge fix
        (the same ``BAND`` = 16 px at full size: on synthetic tuning stacks at 2 and 4 times the benchmark's size a
        band of 16 working pixels lost 0.5 and 2.3 dB against 16 px, docs/stacks.md "Speed") runs in float32.
        Frames of at most ``work_pixels`` pixels take the full-resolution path (byte for byte).
    band : int, optional
        Half-width (px) of the edge fix's band (default ``BAND`` = 16).

    Returns
    -------
    (fused, maps, timings)
        The fused image in the sources' dtype; :data:`MAPS` (``label_map``, ``depth_map``: int32 frame indices);
        seconds per stage (:data:`STAGES`).
    """
    m = models.resolve(model)[0]  # the net's geometry (the shipped cnn's with a frame_fn)
    patch = m.patch if patch is None else patch
    stride = m.stride if stride is None else stride
    if frame_fn is None:
        frame_fn = _net_frame_fn(model, backend, threads=threads, max_bytes=max_bytes, progress=progress, gpu=gpu)
    elif model is not None or backend is not None or max_bytes is not None:
        raise ValueError("give either frame_fn or model/backend/max_bytes, not both")
    n = len(images)
    if n < 2:
        raise ValueError(f"need two or more sources, got {n}")
    h, w = images[0].shape[:2]
    f = 1 if work_pixels is None else work_factor((h, w), pixels=work_pixels)
    hs, ws = -(-h // f), -(-w // f)   # the working size (the frames' for f = 1)
    expected = m.score_shape(hs, ws)
    timings = dict.fromkeys(STAGES, 0.0)
    tick = Stopwatch(timings)

    # pass 1: per-frame scores and focus maps, a running argmax (ties keep the lower index: strict >)
    best = np.full((hs, ws), -np.inf)
    labels = np.zeros((hs, ws), np.int32)

    def working_gray(img):
        return to_gray(to_unit(img)).astype(np.float32) if f == 1 else block_mean(gray_unit32(img), f)

    # the next frame's gray is computed while the net scores this one
    ahead = min(2, thread_count(threads))
    for k, gray in enumerate(imap_ordered(working_gray, _frames(images, "score maps", progress), threads=ahead)):
        tick("fused")  # conversions: counted with the blend
        s = _check_scores(frame_fn(gray), expected, k)
        del gray
        tick("score_map")
        focus = focus_map(s, (hs, ws), patch=patch, stride=stride)
        del s
        tick("focus_map")
        better = focus > best
        np.copyto(best, focus, where=better)
        labels[better] = k
        del focus, better
        tick("binary_map")
    del best
    if region_ratio is None:
        region_ratio = REGION_RATIO_STACK if f == 1 else REGION_RATIO_WORK
    depth = remove_small_label_regions(labels, area=area_threshold((hs, ws), ratio=region_ratio), n_labels=n)
    labels, depth = _upsample(labels, f, (h, w)), _upsample(depth, f, (h, w))
    tick("cleaned_map")
    if edge_fix:
        # the edge fix (pyfusion.refine_stack.edge_fix) a step at a time, each timed
        depth = redecide_band(images, depth, width=band, focus_radius=FOCUS_RADIUS, progress=progress,
                              fast=f > 1, threads=threads, max_bytes=max_bytes)
        tick("decision_map")
        fused = pyramid_blend(images, depth, levels=LEVELS, progress=progress,
                              float_type=np.float32 if f > 1 else np.float64, threads=threads, max_bytes=max_bytes)
    else:
        fused = guided_blend(images, depth, gf_radius=gf_radius, gf_eps=gf_eps, threads=threads, progress=progress)
    tick("fused")
    return fused, {"label_map": labels, "depth_map": depth}, timings
