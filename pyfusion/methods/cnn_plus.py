"""``method="cnn-plus"``: the paper's CNN decision with a different last step (issue 15; docs/cnn_plus.md).

The faithful ``cnn`` method is left as it is. ``cnn-plus`` runs its first five steps unchanged (grayscale, score map,
focus map, binary map, small-region removal: the functions of :func:`pyfusion.methods.cnn.decision_maps`) and
replaces the guided filter of radius 8 by rules that keep the map binary away from the focus boundary and place
that boundary pixel by pixel:

1. :func:`boundary_band`: the pixels within ``band`` pixels of the cleaned map's boundary (the only pixels whose
   decision the 16x16 patches of the net leave uncertain);
2. :func:`focus_measure`: the local energy of the Laplacian of each grayscale source;
3. :func:`refine_boundary`: inside the band, each pixel to the source of larger focus measure (``power`` None;
   small regions removed again, the paper's consistency check), or the soft weight ``fa^p / (fa^p + fb^p)``;
4. :func:`transition`: the paper's guided filter on the refined map, with a small radius (``gf_radius``; 0: none);
5. ``W A + (1 - W) B`` per channel (:func:`pyfusion.methods.cnn.weighted_average`), as ``cnn``.

Every parameter was chosen on the project's synthetic tuning set (``tools/tune_cnn_plus.py``: BSDS500 val photos
from 50, mask seed 1), never on the survey's pairs nor on the ground-truth test set (photos 0-39, seed 0).
Colour: decided on the grayscale, applied to every channel; 8/16-bit kept; more than two sources in series
(:func:`pyfusion.methods.cnn.in_series`), as the paper does.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
.. [2] K. He, J. Sun, X. Tang, "Guided image filtering", IEEE TPAMI 35(6) (2013) 1397-1409.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pyfusion import models
from pyfusion.constants import GF_EPS, REGION_RATIO, THRESHOLD
from pyfusion.focus import binary_map, focus_map
from pyfusion.io import to_gray
from pyfusion.methods.cnn import MIN_REASON, MIN_SIZE  # noqa: F401  (the sources' minimum size: cnn's)
from pyfusion.methods.cnn import check_scores, in_series, initial_fusion, net_score_fn, weighted_average
from pyfusion.refine import area_threshold, box_mean, box_sum, guided_filter, remove_small_regions
from pyfusion.options import COMMON, CONSISTENCY, NET, Option, replace, resolve
from pyfusion.util import Stopwatch

__all__ = ["fuse", "boundary_band", "focus_measure", "refine_boundary", "transition", "STAGES", "MAPS",
           "BAND", "FOCUS_RADIUS", "POWER", "GF_RADIUS_PLUS"]

#: Defaults, chosen on the tuning set by the rule of docs/cnn_plus.md.
BAND = 4
FOCUS_RADIUS = 2
POWER = None
GF_RADIUS_PLUS = 2

DESCRIPTION = ("not the paper: cnn's decision with the focus boundary re-decided by a local focus measure and a "
               "narrow guided filter")
#: The options of ``method="cnn-plus"`` (more than two sources: in series).
OPTIONS = (*COMMON, *NET, *replace(CONSISTENCY, gf_radius={"default": GF_RADIUS_PLUS, "help": "radius of the "
                                                            "guided filter of the transition (0: none)"}),
           Option("band", int, BAND, "half-width in pixels of the boundary band re-decided by the focus measure "
                  "(0: no refinement)", metavar="PX"),
           Option("focus_radius", int, FOCUS_RADIUS, "radius of the local focus measure's window", metavar="R"),
           Option("power", float, POWER, "soft weights fa^p / (fa^p + fb^p) in the band instead of a hard choice",
                  metavar="P"),
           Option("score_fn", object, None, "score_fn(a, b) -> scores: a pair score function replacing the net",
                  cli=False))
#: Keys of the timings besides ``"total"``, in pipeline order.
STAGES = ("score_map", "focus_map", "binary_map", "cleaned_map", "decision_map", "fused")
#: The maps of the first pair (FusionResult attributes of the same names): ``cnn``'s first four, then the
#: boundary band (1 inside), the refined map and the weight of source A.
MAPS = ("score_map", "focus_map", "binary_map", "cleaned_map", "band_map", "refined_map", "decision_map")


def boundary_band(decision: np.ndarray, width: int) -> np.ndarray:
    """The pixels whose ``(2 width + 1)^2`` window holds both values of a 0/1 map: a band ``width`` pixels wide
    (chessboard distance) on each side of its boundary. Bool, all False for ``width <= 0``."""
    d = (np.asarray(decision) > 0.5).astype(np.float64)
    if width <= 0:
        return np.zeros(d.shape, bool)
    ones = box_sum(d, width)
    count = box_sum(np.ones_like(d), width)
    return (ones > 0.5) & (ones < count - 0.5)      # sums of 0/1 values: exact integers


def focus_measure(gray: np.ndarray, radius: int) -> np.ndarray:
    """Local energy of the Laplacian: the mean of the squared 4-neighbour Laplacian (borders reflected) over the
    border-clipped ``(2 radius + 1)^2`` window."""
    from scipy import ndimage  # imported where used: it costs a fifth of a second of every start

    lap = ndimage.laplace(np.asarray(gray, np.float64), mode="reflect")
    return box_mean(lap * lap, radius)


def refine_boundary(cleaned, gray_a, gray_b, *, band: int, focus_radius: int, power=None,
                    region_ratio: float = REGION_RATIO):
    """Re-decide the pixels of the boundary band by the sources' focus measures.

    Parameters
    ----------
    cleaned : numpy.ndarray
        The 0/1 map after small-region removal (1: source A).
    gray_a, gray_b : numpy.ndarray
        The grayscale sources in [0, 1].
    band : int
        Half-width of :func:`boundary_band` (0: the map is returned unchanged).
    focus_radius : int
        Window radius of :func:`focus_measure`.
    power : float or None
        None: each band pixel to the source of larger focus measure (ties keep the cleaned map), then the
        small-region removal again (``region_ratio``); a number ``p``: the soft weight ``fa^p / (fa^p + fb^p)``
        in the band (where both are 0 the cleaned map stays).

    Returns
    -------
    refined, zone : numpy.ndarray
        The refined map (float64; 0/1 unless ``power`` is given) and the band (bool).
    """
    zone = boundary_band(cleaned, band)
    if not zone.any():
        return cleaned, zone
    fa, fb = focus_measure(gray_a, focus_radius), focus_measure(gray_b, focus_radius)
    w = np.array(cleaned, dtype=np.float64)
    if power is not None:
        pa, pb = fa ** power, fb ** power
        ok = zone & (pa + pb > 0)
        w[ok] = pa[ok] / (pa[ok] + pb[ok])
        return w, zone
    w[zone & (fa > fb)] = 1.0
    w[zone & (fa < fb)] = 0.0
    return remove_small_regions(w, ratio=region_ratio), zone


def transition(refined, gray_a, gray_b, *, radius: int, eps: float, threads=None):
    """The weight of source A: the paper's guided filter of the refined map, guided by the initial fusion
    (:func:`pyfusion.methods.cnn.initial_fusion`), with radius ``radius``; 0: the refined map itself."""
    if radius <= 0:
        return np.asarray(refined, dtype=np.float64)
    return guided_filter(initial_fusion(gray_a, gray_b, refined), refined, radius=radius, eps=eps, threads=threads)


def _fuse_pair(a, b, score_fn, *, geometry, band, focus_radius, power, gf_radius, gf_eps, region_ratio, threshold,
               threads, timings):
    """Fuse two [0, 1] float64 images; return the float64 fused image and the maps."""
    tick = Stopwatch(timings)
    gray_a, gray_b = to_gray(a), to_gray(b)
    scores = check_scores(score_fn(gray_a.astype(np.float32), gray_b.astype(np.float32)),
                          geometry.score_shape(*gray_a.shape))
    tick("score_map")
    focus = focus_map(scores, gray_a.shape, patch=geometry.patch, stride=geometry.stride)
    tick("focus_map")
    binary = binary_map(focus, threshold=threshold)
    tick("binary_map")
    cleaned = remove_small_regions(binary, area=area_threshold(binary.shape, ratio=region_ratio))
    tick("cleaned_map")
    refined, zone = refine_boundary(cleaned, gray_a, gray_b, band=band, focus_radius=focus_radius, power=power,
                                    region_ratio=region_ratio)
    weight = transition(refined, gray_a, gray_b, radius=gf_radius, eps=gf_eps, threads=threads)
    tick("decision_map")
    fused = weighted_average(a, b, weight)
    tick("fused")
    return fused, dict(zip(MAPS, (scores, focus, binary, cleaned, zone.astype(np.float64), refined, weight)))


def fuse(images, **options):
    """cnn-plus on validated sources (one shape and dtype); see :func:`pyfusion.fuse` and the module docstring.

    Parameters
    ----------
    images : list of numpy.ndarray
        Two or more validated sources; more than two are fused in series.
    model, backend, threads, gpu, max_memory, progress, score_fn
        As for the ``cnn`` method (the net and its options, or ``score_fn(a, b) -> scores`` replacing it).
    region_ratio, threshold
        The paper's steps 4-5, as for ``cnn``.
    band, focus_radius, power
        :func:`refine_boundary` (``band`` 0: no refinement).
    gf_radius, gf_eps
        :func:`transition` (``gf_radius`` 0: no guided filter; the paper's 8 and 0.1 with ``band=0`` give the
        ``cnn`` method's result).

    Returns
    -------
    tuple
        ``(fused, maps, timings)``: the fused image in the sources' dtype, the first pair's :data:`MAPS` and the
        seconds per :data:`STAGES` (summed over the pairs).
    """
    o = resolve(OPTIONS, options)
    model, backend, threads, gpu, max_memory, progress, score_fn = (o.model, o.backend, o.threads, o.gpu,
                                                                    o.max_memory, o.progress, o.score_fn)
    band, focus_radius, power, gf_radius = o.band, o.focus_radius, o.power, o.gf_radius
    if band < 0 or focus_radius < 0 or gf_radius < 0:
        raise ValueError(f"band, focus_radius and gf_radius must be >= 0, got {band}, {focus_radius}, {gf_radius}")
    if power is not None and not power > 0:
        raise ValueError(f"power must be None or > 0, got {power}")
    if score_fn is None:
        score_fn = net_score_fn(model, backend, threads=threads, max_memory=max_memory, progress=progress, gpu=gpu)
    elif model is not None or backend is not None or max_memory is not None:
        raise ValueError("give either score_fn or model/backend/max_memory, not both")
    opts = dict(band=band, focus_radius=focus_radius, power=power, gf_radius=gf_radius, gf_eps=o.gf_eps,
                region_ratio=o.region_ratio, threshold=o.threshold, threads=threads,
                geometry=models.resolve(model)[0])
    return in_series(images, lambda a, b, timings: _fuse_pair(a, b, score_fn, timings=timings, **opts), STAGES)
