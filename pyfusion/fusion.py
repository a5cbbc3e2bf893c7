"""The fusion pipeline of [Liu2017] Sec. 3.3 and its public entry point :func:`fuse`.

Steps for one pair A, B (each one function):

1. sources to [0, 1] (:func:`pyfusion.io.to_unit`) and to grayscale (:func:`to_gray`, MATLAB ``rgb2gray``
   weights ``constants.RGB2GRAY``);
2. score map from the CNN (``pyfusion.net.score_map`` or ``score_fn``);
3. focus map (:func:`pyfusion.focus.focus_map`);
4. binary map, ``focus > 0.5`` (:func:`pyfusion.focus.binary_map`);
5. small-region removal, ``ceil(0.01 H W)`` (:func:`pyfusion.refine.remove_small_regions`) -> map ``D``;
6. guided filter (r = 8, eps = 0.1) of ``D`` guided by the grayscale initial fusion
   :func:`initial_fusion` ``gray(A) D + gray(B) (1 - D)`` (:func:`pyfusion.refine.guided_filter`) -> decision map;
7. weighted average ``W A + (1 - W) B`` per channel (:func:`weighted_average`), rounded back to the input's bit
   depth (:func:`pyfusion.io.from_unit`).

More than two sources are fused in series, as in the paper: F = fuse(fuse(fuse(I1, I2), I3), ...), each
intermediate result rounded to the input's bit depth, exactly as if the two-source method were run again on
its own output.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207, Sec. 3.3 (Fig. 4; last paragraph: more than two sources).
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from pyfusion.constants import GF_EPS, GF_RADIUS, REGION_RATIO, RGB2GRAY, THRESHOLD
from pyfusion.focus import binary_map, focus_map, score_map_shape
from pyfusion.io import FusionInputError, from_unit, read_image, to_unit, validate_images
from pyfusion.refine import area_threshold, guided_filter, remove_small_regions

__all__ = ["FusionResult", "fuse", "to_gray", "initial_fusion", "weighted_average", "STAGES"]

#: Keys of :attr:`FusionResult.timings` besides ``"total"``, in pipeline order.
STAGES = ("score_map", "focus_map", "binary_map", "cleaned_map", "decision_map", "fused")


@dataclass(frozen=True)
class FusionResult:
    """Output of :func:`fuse`.

    Attributes
    ----------
    fused : numpy.ndarray
        Fused image, same shape and dtype as the sources.
    score_map : numpy.ndarray
        CNN scores, ``(ceil(H/2) - 7, ceil(W/2) - 7)``, P(source A in focus) per 16x16 patch at stride 2.
    focus_map : numpy.ndarray
        ``(H, W)`` per-pixel average of the overlapping patch scores, in [0, 1].
    binary_map : numpy.ndarray
        ``focus_map > threshold`` as 0.0/1.0.
    cleaned_map : numpy.ndarray
        Binary map after small-region removal (the guided filter's input), 0.0/1.0.
    decision_map : numpy.ndarray
        Guided-filter output: the weight of source A in the final average. Like the authors' code it is not
        clipped, so it can leave [0, 1] by a small amount next to strong edges; the fused image is saturated
        when rounded.
    timings : dict of str to float
        Seconds per stage (keys :data:`STAGES` plus ``"total"``), summed over all pairs for > 2 sources.

    The maps describe the first pair (sources 1 and 2).

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """

    fused: np.ndarray
    score_map: np.ndarray
    focus_map: np.ndarray
    binary_map: np.ndarray
    cleaned_map: np.ndarray
    decision_map: np.ndarray
    timings: dict = field(default_factory=dict)


def to_gray(img: np.ndarray) -> np.ndarray:
    """Grayscale of a [0, 1] image with MATLAB ``rgb2gray`` weights (0.2989, 0.5870, 0.1140); 2-D input passes.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207 (authors' code: ``img1_gray = rgb2gray(img1)``).
    """
    x = np.asarray(img, dtype=np.float64)
    if x.ndim == 2:
        return x
    if x.ndim == 3 and x.shape[2] == 1:
        return x[:, :, 0]
    if x.ndim == 3 and x.shape[2] == 3:
        r, g, b = RGB2GRAY
        return r * x[:, :, 0] + g * x[:, :, 1] + b * x[:, :, 2]
    raise ValueError(f"expected an HxW, HxWx1 or HxWx3 image, got shape {x.shape}")


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


def _net_score_fn(model, backend, max_memory=None, progress=False) -> Callable:
    from pyfusion import net  # imported lazily: needs a backend only when the real CNN runs

    kw = {"progress": progress}
    if max_memory is not None:
        kw["max_memory"] = max_memory

    def score(a, b):
        return net.score_map(a, b, model=model, backend=backend, **kw)

    return score


def _fuse_pair(a: np.ndarray, b: np.ndarray, score_fn, *, region_ratio, gf_radius, gf_eps, threshold, timings):
    """Fuse two [0, 1] float64 images; return the float64 fused image and the maps."""
    def tick(stage, t0):
        t1 = time.perf_counter()
        timings[stage] = timings.get(stage, 0.0) + (t1 - t0)
        return t1

    t = time.perf_counter()
    gray_a, gray_b = to_gray(a), to_gray(b)
    scores = np.asarray(score_fn(gray_a.astype(np.float32), gray_b.astype(np.float32)))
    expected = score_map_shape(gray_a.shape)
    if scores.shape != expected:
        raise ValueError(f"score map has shape {scores.shape}, expected {expected} for a "
                         f"{gray_a.shape[1]}x{gray_a.shape[0]} image")
    if not np.all(np.isfinite(scores)):
        raise ValueError("score map contains non-finite values")
    scores = scores.astype(np.float64)
    t = tick("score_map", t)
    focus = focus_map(scores, gray_a.shape)
    t = tick("focus_map", t)
    binary = binary_map(focus, threshold=threshold)
    t = tick("binary_map", t)
    cleaned = remove_small_regions(binary, area=area_threshold(binary.shape, ratio=region_ratio))
    t = tick("cleaned_map", t)
    decision = guided_filter(initial_fusion(gray_a, gray_b, cleaned), cleaned, radius=gf_radius, eps=gf_eps)
    t = tick("decision_map", t)
    fused = weighted_average(a, b, decision)
    tick("fused", t)
    return fused, (scores, focus, binary, cleaned, decision)


def fuse(images, *, model=None, backend=None, region_ratio: float = REGION_RATIO, gf_radius: int = GF_RADIUS,
         gf_eps: float = GF_EPS, threshold: float = THRESHOLD, score_fn: Callable | None = None,
         max_memory: int | None = None, progress: bool = False) -> FusionResult:
    """Fuse two or more multi-focus images with the CNN method of Liu et al. (2017).

    Parameters
    ----------
    images : sequence of numpy.ndarray or path
        Two or more registered sources of one shape (``(H, W)``, ``(H, W, 1)`` or RGB ``(H, W, 3)``) and one
        dtype (uint8, uint16, or float in [0, 1]), ``H, W >= 16``. Paths are read with
        :func:`pyfusion.io.read_image`. The arrays are never modified.
    model : str or os.PathLike, optional
        Caffe weights for ``pyfusion.net.score_map`` (default ``pyfusion.net.MODEL_DEFAULT``).
    backend : str, optional
        One of ``pyfusion.net.BACKENDS`` (default: the net module's choice).
    region_ratio : float, optional
        Small-region area threshold as a fraction of H*W (default 0.01).
    gf_radius : int, optional
        Guided filter radius (default 8).
    gf_eps : float, optional
        Guided filter eps for images in [0, 1] (default 0.1).
    threshold : float, optional
        Focus map threshold; pixels with ``focus > threshold`` come from source A (default 0.5).
    score_fn : callable, optional
        ``score_fn(a, b) -> scores`` replacing the CNN: ``a``, ``b`` float32 grayscale in [0, 1] of shape
        ``(H, W)``, ``scores`` of shape ``(ceil(H/2) - 7, ceil(W/2) - 7)``. Not combined with ``model`` or
        ``backend``.
    max_memory : int, optional
        Bytes the score-map stage may use; ``pyfusion.net.score_map`` tiles the pair to fit (default: the net
        module's, a fraction of the available memory). Not combined with ``score_fn``.
    progress : bool, optional
        Show a progress bar over the score-map tiles (stderr) when the pair is tiled.

    Returns
    -------
    FusionResult
        Fused image (same dtype and shape as the inputs) and the maps of the first pair.

    Raises
    ------
    pyfusion.io.FusionInputError
        Fewer than two sources, mismatched sizes or channel counts, unsupported dtype, images smaller than
        16x16, non-finite or out-of-range float values, unreadable files.

    Notes
    -----
    Three or more sources are fused in series: ``fuse(fuse(I1, I2), I3)`` and so on, in the order given,
    each intermediate rounded to the input bit depth. Deterministic: the same inputs give the same output.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207.
    """
    t_start = time.perf_counter()
    if isinstance(images, (str, os.PathLike, np.ndarray)):
        raise FusionInputError("images must be a sequence of two or more images or paths")
    items = list(images)
    names = [str(x) if isinstance(x, (str, os.PathLike)) else f"image {k + 1}" for k, x in enumerate(items)]
    arrays = [read_image(x) if isinstance(x, (str, os.PathLike)) else x for x in items]
    arrays = validate_images(arrays, names=names)
    if score_fn is None:
        score_fn = _net_score_fn(model, backend, max_memory, progress)
    elif model is not None or backend is not None or max_memory is not None:
        raise ValueError("give either score_fn or model/backend/max_memory, not both")
    dtype = arrays[0].dtype
    opts = dict(region_ratio=region_ratio, gf_radius=gf_radius, gf_eps=gf_eps, threshold=threshold)
    timings: dict = {}
    current = arrays[0]
    maps = None
    for nxt in arrays[1:]:
        fused, pair_maps = _fuse_pair(to_unit(current), to_unit(nxt), score_fn, timings=timings, **opts)
        t0 = time.perf_counter()
        current = from_unit(fused, dtype)
        timings["fused"] += time.perf_counter() - t0
        if maps is None:
            maps = pair_maps
    timings["total"] = time.perf_counter() - t_start
    scores, focus, binary, cleaned, decision = maps
    return FusionResult(fused=current, score_map=scores, focus_map=focus, binary_map=binary,
                        cleaned_map=cleaned, decision_map=decision,
                        timings={k: timings[k] for k in (*STAGES, "total")})
