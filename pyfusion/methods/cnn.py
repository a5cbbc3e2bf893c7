"""``method="cnn"``: the fusion pipeline of [1]_ Sec. 3.3, unchanged from the paper.

Steps for one pair A, B (each one function):

1. sources to [0, 1] (:func:`pyfusion.io.to_unit`) and to grayscale (:func:`pyfusion.io.to_gray`, MATLAB
   ``rgb2gray`` weights ``constants.RGB2GRAY``);
2. score map from the CNN (:func:`pyfusion.net.score_map` or ``score_fn``);
3. focus map (:func:`pyfusion.focus.focus_map`);
4. binary map, ``focus > 0.5`` (:func:`pyfusion.focus.binary_map`);
5. small-region removal, ``ceil(0.01 H W)`` (:func:`pyfusion.refine.remove_small_regions`) -> map ``D``;
6. guided filter (r = 8, eps = 0.1) of ``D`` guided by the grayscale initial fusion
   :func:`initial_fusion` ``gray(A) D + gray(B) (1 - D)`` (:func:`pyfusion.refine.guided_filter`) -> decision map;
7. weighted average ``W A + (1 - W) B`` per channel (:func:`weighted_average`), rounded back to the input's bit
   depth (:func:`pyfusion.io.from_unit`).

More than two sources: by default in one pass (:mod:`pyfusion.methods.stack`: one trunk pass per frame, the
per-frame scores of the linear head, an argmax label map, the depth map ``maps["depth_map"]``). With
``series=True``, or when a pair score function ``score_fn`` is given (it cannot score single frames), in series
as in the paper: F = fuse(fuse(fuse(I1, I2), I3), ...), each intermediate result rounded to the input's bit
depth, exactly as if the two-source method were run again on its own output. ``series=False`` runs the one-pass
method on two sources too.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207, Sec. 3.3 (Fig. 4; last paragraph: more than two sources).
"""
from __future__ import annotations

import time
from typing import Callable

import numpy as np

from pyfusion import models
from pyfusion.constants import GF_EPS, GF_RADIUS, REGION_RATIO, THRESHOLD
from pyfusion.focus import binary_map, focus_map
from pyfusion.io import from_unit, to_gray, to_unit
from pyfusion.refine import area_threshold, guided_filter, remove_small_regions
from pyfusion.options import COMMON, CONSISTENCY, NET, Option, bool_flag, gb_to_bytes, on_off, replace, resolve
from pyfusion.util import Stopwatch

__all__ = ["fuse", "initial_fusion", "weighted_average", "STAGES", "MAPS", "OPTIONS", "DESCRIPTION"]

DESCRIPTION = "the siamese CNN of Liu et al. 2017 and its post-processing, as published"
#: The options of ``method="cnn"``.
OPTIONS = (*COMMON, *NET, *replace(CONSISTENCY, region_ratio={
    "default": None, "help": "small-region removal area as a fraction of H*W (default 0.01 pairwise, the paper's; "
    "0.003 in one pass over three or more frames, 0.001 at the fast path's working size)"}),
    Option("series", bool_flag, None, "fuse three or more sources in series, as in the paper ((A + B) + C ...), "
           "instead of in one pass"),
    Option("edge_fix", on_off, True, "one pass: re-decide a 16-px band around the depth map's edges by a per-pixel "
           "focus measure and blend with a 4-level pyramid (off: the paper's guided filter)", metavar="on|off"),
    Option("exact", bool_flag, False, "one pass: score every frame at full resolution, as the paper does (default: "
           "frames over 520x520 are scored at a reduced working size)"),
    Option("score_fn", object, None, "score_fn(a, b) -> scores: a pair score function replacing the net", cli=False),
    Option("frame_fn", object, None, "frame_fn(gray) -> scores: per-frame scores replacing the net in one pass",
           cli=False),
)

#: Smallest source side: one patch of the net.
MIN_SIZE = models.get("cnn").patch
MIN_REASON = f"the {MIN_SIZE}x{MIN_SIZE} patch of the network"
#: Keys of the timings besides ``"total"``, in pipeline order.
STAGES = ("score_map", "focus_map", "binary_map", "cleaned_map", "decision_map", "fused")
#: The maps of the first pair, in pipeline order (FusionResult attributes of the same names).
MAPS = ("score_map", "focus_map", "binary_map", "cleaned_map", "decision_map")


def initial_fusion(gray_a: np.ndarray, gray_b: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Grayscale initial fusion ``gray(A) D + gray(B) (1 - D)`` that guides the guided filter.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207, Sec. 3.3.3.
    """
    return gray_a * decision + gray_b * (1.0 - decision)


def weighted_average(a: np.ndarray, b: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Fusion rule ``F = W A + (1 - W) B`` (Sec. 3.3.4 of [1]_), the same 2-D weight map ``W`` for every channel.

    Parameters
    ----------
    a, b : numpy.ndarray
        Sources in [0, 1], ``(H, W)`` or ``(H, W, C)``.
    decision : numpy.ndarray
        ``(H, W)`` weight of ``a``.

    Returns
    -------
    numpy.ndarray
        float64, same shape as ``a``, not clipped.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207, Sec. 3.3.4.
    """
    w = np.asarray(decision, dtype=np.float64)
    if np.ndim(a) == 3:
        w = w[:, :, None]
    return np.asarray(a, dtype=np.float64) * w + np.asarray(b, dtype=np.float64) * (1.0 - w)


def net_score_fn(model, backend, *, threads, max_memory, progress, gpu=None) -> Callable:
    """``score(a, b)``: :func:`pyfusion.net.score_map` of a registered model with these options (``max_memory``
    in GB)."""
    from pyfusion import net  # imported lazily: needs a backend only when the real CNN runs

    max_bytes = gb_to_bytes(max_memory)

    def score(a, b):
        return net.score_map(a, b, model=model, backend=backend, threads=threads, gpu=gpu, max_bytes=max_bytes,
                             progress=progress)

    return score


def decision_maps(scores, gray_a, gray_b, *, region_ratio, gf_radius, gf_eps, threshold, threads=None,
                  tick=lambda stage: None, patch: int = 16, stride: int = 2) -> dict:
    """Steps 3-6 of the pipeline on one score map: focus, binary, cleaned and decision maps (by :data:`MAPS` name).

    ``gray_a``, ``gray_b`` are the grayscale sources at the score map's resolution (the guide is their initial
    fusion); ``tick(stage)`` is called after each step (timings). Shared by the wavelet-domain method, which runs it
    on each band's score map.
    """
    focus = focus_map(scores, gray_a.shape, patch=patch, stride=stride)
    tick("focus_map")
    binary = binary_map(focus, threshold=threshold)
    tick("binary_map")
    cleaned = remove_small_regions(binary, area=area_threshold(binary.shape, ratio=region_ratio))
    tick("cleaned_map")
    decision = guided_filter(initial_fusion(gray_a, gray_b, cleaned), cleaned, radius=gf_radius, eps=gf_eps,
                             threads=threads)
    tick("decision_map")
    return dict(zip(MAPS, (scores, focus, binary, cleaned, decision)))


def check_scores(scores, expected) -> np.ndarray:
    """A score function's output as float64, or ValueError for a wrong shape or non-finite values."""
    scores = np.asarray(scores)
    if scores.shape != expected:
        raise ValueError(f"score map has shape {scores.shape}, expected {expected}")
    if not np.all(np.isfinite(scores)):
        raise ValueError("score map contains non-finite values")
    return scores.astype(np.float64)


def _fuse_pair(a: np.ndarray, b: np.ndarray, score_fn, *, geometry, threads, timings, **steps):
    """Fuse two [0, 1] float64 images with the scores of a net of ``geometry`` (a :class:`pyfusion.models.Model`:
    its score-map shape, patch and stride); return the float64 fused image and the maps."""
    tick = Stopwatch(timings)
    gray_a, gray_b = to_gray(a), to_gray(b)
    scores = check_scores(score_fn(gray_a.astype(np.float32), gray_b.astype(np.float32)),
                          geometry.score_shape(*gray_a.shape))
    tick("score_map")
    maps = decision_maps(scores, gray_a, gray_b, threads=threads, tick=tick, patch=geometry.patch,
                         stride=geometry.stride, **steps)
    fused = weighted_average(a, b, maps["decision_map"])
    tick("fused")
    return fused, maps


def in_series(images, fuse_pair, stages) -> tuple:
    """Fuse ``images`` in series with ``fuse_pair(a, b, timings) -> (fused float64, maps)`` on [0, 1] images: each
    intermediate result rounded to the sources' dtype, as if the pair method ran again on its own output ([1]_,
    last paragraph of Sec. 3.3). Returns ``(fused, maps of the first pair, {stage: seconds summed over pairs})``."""
    dtype = images[0].dtype
    timings: dict = {}
    current, maps = images[0], None
    for nxt in images[1:]:
        fused, pair_maps = fuse_pair(to_unit(current), to_unit(nxt), timings)
        t0 = time.perf_counter()
        current = from_unit(fused, dtype)
        timings["fused"] += time.perf_counter() - t0
        maps = maps or pair_maps
    return current, maps, {k: timings[k] for k in stages}


def fuse(images, **options):
    """The CNN method on validated sources (one shape and dtype); see :func:`pyfusion.fuse` for the options.

    ``series``: None (default) fuses two sources pairwise and three or more in one pass
    (:func:`pyfusion.methods.stack.fuse`), except with a pair ``score_fn`` or a net that is not siamese (per-frame
    scores need one trunk and a head linear in each branch: then in series); True: pairwise / in
    series, the paper's way; False: one pass, for two sources too. ``frame_fn(gray) -> scores`` replaces the
    net's per-frame scores of the one-pass method (as ``score_fn`` the pair scores). ``region_ratio`` default: the
    paper's 0.01 pairwise, ``constants.REGION_RATIO_STACK`` (0.003) in one pass (0.001 at the fast path's working
    size, ``constants.REGION_RATIO_WORK``).

    Returns ``(fused, maps, timings)``: the fused image in the sources' dtype, the maps of the first pair
    (:data:`MAPS`; one pass: :data:`pyfusion.methods.stack.MAPS`) and seconds per stage (:data:`STAGES`, summed
    over the pairs).
    """
    o = resolve(OPTIONS, options)
    model, backend, threads, gpu, progress = o.model, o.backend, o.threads, o.gpu, o.progress
    score_fn, frame_fn, series, threshold, region_ratio = o.score_fn, o.frame_fn, o.series, o.threshold, o.region_ratio
    gf_radius, gf_eps, max_memory = o.gf_radius, o.gf_eps, o.max_memory
    geometry = models.resolve(model)[0]   # the net's (the shipped cnn's with a score_fn or frame_fn)
    siamese = frame_fn is not None or geometry.branches == "siamese"
    one_pass = (len(images) >= 3 and score_fn is None and siamese) if series is None else not series
    if one_pass:
        if score_fn is not None:
            raise ValueError("score_fn scores pairs; the one-pass method (series=False) takes frame_fn")
        if threshold != THRESHOLD:
            raise ValueError("threshold applies to the pairwise method (series=True); the one-pass method takes "
                             "the frame with the highest focus")
        from pyfusion.methods import stack

        return stack.fuse(images, frame_fn=frame_fn, model=model, backend=backend, threads=threads, gpu=gpu,
                          max_bytes=gb_to_bytes(max_memory), progress=progress,
                          region_ratio=region_ratio, gf_radius=gf_radius,
                          gf_eps=gf_eps, edge_fix=o.edge_fix, work_pixels=None if o.exact else stack.WORK_PIXELS)
    if frame_fn is not None:
        raise ValueError("frame_fn scores single frames: it is for the one-pass method (series=False)")
    if score_fn is None:
        score_fn = net_score_fn(model, backend, threads=threads, max_memory=max_memory, progress=progress, gpu=gpu)
    elif model is not None or backend is not None or max_memory is not None:
        raise ValueError("give either score_fn or model/backend/max_memory, not both")
    opts = dict(region_ratio=REGION_RATIO if region_ratio is None else region_ratio, gf_radius=gf_radius,
                gf_eps=gf_eps, threshold=threshold, threads=threads,
                geometry=geometry)
    return in_series(images, lambda a, b, timings: _fuse_pair(a, b, score_fn, timings=timings, **opts), STAGES)
