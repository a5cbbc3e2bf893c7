"""``method="wavelet-cnn"``: wavelet-domain deep fusion, the project's title method.

A Haar DWT splits each source into a low-frequency band (LL) and high-frequency bands (LH, HL, HH); one siamese
CNN per band, trained on the DWT of clear/blurred 32x32 patch pairs (:mod:`fusionlab.data`, models
``wavelet_low`` and ``wavelet_high``), scores which source is in focus at every 16x16 band patch; the paper's
consistency steps (focus map, threshold, small-region removal, guided filter) turn each band's scores into a weight
map at the band's resolution; the fused coefficients are the weighted averages of the sources' coefficients; the
inverse DWT gives the fused image (after Li, Yuan, Fan [2]_ and Wang et al. [3]_; the choices their papers leave
open are made, measured and written down in docs/wavelet.md).

Steps for one pair A, B (colour: decided on the grayscale, applied to every channel, as the ``cnn`` method):

1. grayscale (:func:`pyfusion.io.to_gray`) and ``levels``-level Haar DWT (PyWavelets, ``periodization``) of each
   source (:func:`dwt`);
2. level 1: the low net on ``LL1 * BAND_SCALE["low"]``, the high net on ``(LH1, HL1, HH1) * BAND_SCALE["high"]``
   (the training scales, :data:`pyfusion.constants.BAND_SCALE`) -> two score maps at half resolution;
3. each through :func:`pyfusion.methods.cnn.decision_maps` at half resolution, the guide being the initial fusion
   of the two sources' LL1 block means; the small-region threshold is the same fraction of the band's area, the
   guided filter radius is ``gf_radius // 2`` at the band's resolution (default 1: :data:`GF_RADIUS_BANDS`);
4. deeper levels (``levels > 1``): their high bands take the level-1 high decision averaged over 2x2 blocks per
   level (:func:`derive_decision`, ``deep="derive"``), or the high net run on that level's bands
   (``deep="net"``); the deepest LL takes the low decision averaged the same way;
5. fused coefficients ``W c_A + (1 - W) c_B`` (:func:`fuse_coefficients`) for every channel, inverse DWT, crop.

More than two sources are fused in series, as the ``cnn`` method does.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
.. [2] J. Li, G. Yuan, H. Fan, "Multifocus image fusion using wavelet-domain-based deep CNN", Computational
   Intelligence and Neuroscience (2019) 4179397.
.. [3] H. Wang et al., "Multifocus image fusion using convolutional neural networks in the discrete wavelet
   transform domain", Multimedia Tools and Applications 78 (2019) 34483-34512.
"""
from __future__ import annotations

from typing import Callable

import numpy as np

from pyfusion import models
from pyfusion.constants import BAND_SCALE, GF_EPS, REGION_RATIO, THRESHOLD
from pyfusion.io import to_gray
from pyfusion.methods.cnn import check_scores, decision_maps, in_series, net_score_fn
from pyfusion.util import Stopwatch

__all__ = ["fuse", "dwt", "idwt", "derive_decision", "fuse_coefficients", "WAVELET", "MAPS"]

WAVELET = "haar"      # the training recipe's wavelet (pyfusion.models: recipe "wavelet")
MODE = "periodization"
#: Smallest source side: one 16x16 patch of the level-1 bands.
MIN_SIZE = 2 * models.get("wavelet_low").patch
MIN_REASON = f"one {MIN_SIZE // 2}x{MIN_SIZE // 2} band patch of the wavelet nets"
#: Guided filter radius in image pixels (1 at the bands' resolution): chosen on the synthetic tuning set
#: (`tools/groundtruth.py --start 50 --seed 1`, docs/wavelet_tuning.md) among 2, 4 and 8.
GF_RADIUS_BANDS = 2
STAGES = ("dwt", "score_map", "decision_map", "fused")
MAPS = ("low_score_map", "low_decision_map", "high_score_map", "high_decision_map")


def dwt(x: np.ndarray, levels: int) -> list:
    """``pywt.wavedec2`` of a 2-D array with the method's wavelet: ``[LL_n, (LH_n, HL_n, HH_n), ..., (level 1)]``."""
    import pywt

    return pywt.wavedec2(x, WAVELET, mode=MODE, level=levels)


def idwt(coeffs: list, shape) -> np.ndarray:
    """Inverse of :func:`dwt`, cropped to ``shape`` (periodization pads odd sizes by one sample per level)."""
    import pywt

    return pywt.waverec2(coeffs, WAVELET, mode=MODE)[: shape[0], : shape[1]]


def derive_decision(w: np.ndarray, shape) -> np.ndarray:
    """A deeper level's weights from a finer level's: the mean of each 2x2 block (odd sizes: the last row/column
    repeated, as periodization pads the signal), cropped to ``shape``."""
    h, wd = w.shape
    x = np.pad(w, ((0, h % 2), (0, wd % 2)), mode="edge")
    x = 0.25 * (x[0::2, 0::2] + x[1::2, 0::2] + x[0::2, 1::2] + x[1::2, 1::2])
    return x[: shape[0], : shape[1]]


def fuse_coefficients(ca: np.ndarray, cb: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Fused coefficients ``W c_A + (1 - W) c_B`` (the weight map of the band)."""
    return w * ca + (1.0 - w) * cb


def _stack(bands) -> np.ndarray:
    return np.stack(bands, axis=-1)


def _fuse_pair(a, b, low_fn, high_fn, *, levels, deep, bands, threads, timings, **steps):
    tick = Stopwatch(timings)
    ga, gb = to_gray(a), to_gray(b)
    da1, db1 = dwt(ga, 1), dwt(gb, 1)            # level 1 (the bands the nets were trained on)
    tick("dwt")
    s_low, s_high = BAND_SCALE["low"], BAND_SCALE["high"]
    low_a, low_b = da1[0] * s_low, db1[0] * s_low
    m_low, m_high = models.get("wavelet_low"), models.get("wavelet_high")
    scores_low = check_scores(low_fn(low_a.astype(np.float32), low_b.astype(np.float32)),
                              m_low.score_shape(*low_a.shape))
    scores_high = check_scores(high_fn((_stack(da1[1]) * s_high).astype(np.float32),
                                       (_stack(db1[1]) * s_high).astype(np.float32)),
                               m_high.score_shape(*low_a.shape))
    tick("score_map")
    band_steps = dict(steps, gf_radius=max(1, steps["gf_radius"] // 2))
    if bands == "joint":      # one decision for every band, from the mean of the two nets' scores
        low = high = decision_maps(0.5 * (scores_low + scores_high), low_a, low_b, threads=threads, **band_steps)
    else:
        low = decision_maps(scores_low, low_a, low_b, threads=threads, **band_steps)
        high = decision_maps(scores_high, low_a, low_b, threads=threads, **band_steps)
    w_high, w_low = [high["decision_map"]], low["decision_map"]
    shape = w_low.shape
    for lvl in range(2, levels + 1):
        shape = ((shape[0] + 1) // 2, (shape[1] + 1) // 2)   # the bands of level lvl (periodization: ceil(n / 2))
        w_low = derive_decision(w_low, shape)
        if deep == "derive":
            w_high.append(derive_decision(w_high[-1], shape))
            continue
        ca, cb = dwt(ga, lvl), dwt(gb, lvl)               # the level's bands in the training scale: LL(lvl-1) is
        k = s_low ** (lvl - 1)                            # 2^(lvl-1) times its block mean
        sc = check_scores(high_fn((_stack(ca[1]) * s_high * k).astype(np.float32),
                                  (_stack(cb[1]) * s_high * k).astype(np.float32)), m_high.score_shape(*shape))
        guide_a, guide_b = ca[0] * s_low ** lvl, cb[0] * s_low ** lvl
        w_high.append(decision_maps(sc, guide_a, guide_b, threads=threads, **band_steps)["decision_map"])
    tick("decision_map")
    channels = [a] if a.ndim == 2 else [a[..., c] for c in range(a.shape[2])]
    channels_b = [b] if b.ndim == 2 else [b[..., c] for c in range(b.shape[2])]
    out = []
    for xa, xb in zip(channels, channels_b):
        ca, cb = dwt(xa, levels), dwt(xb, levels)
        fused = [fuse_coefficients(ca[0], cb[0], w_low)]
        for k in range(1, levels + 1):           # ca[k]: level levels - k + 1
            w = w_high[levels - k]
            fused.append(tuple(fuse_coefficients(x, y, w) for x, y in zip(ca[k], cb[k])))
        out.append(idwt(fused, xa.shape))
    fused = out[0] if a.ndim == 2 else np.stack(out, axis=-1)
    tick("fused")
    maps = {"low_score_map": scores_low, "low_decision_map": low["decision_map"],
            "high_score_map": scores_high, "high_decision_map": high["decision_map"]}
    return fused, maps


def fuse(images, *, model_low="wavelet_low", model_high="wavelet_high", backend=None, threads=None, gpu=None,
         max_memory=None, progress=False, levels: int = 1, deep: str = "derive", bands: str = "separate",
         score_fns: tuple[Callable, Callable] | None = None, region_ratio: float = REGION_RATIO,
         gf_radius: int = GF_RADIUS_BANDS, gf_eps: float = GF_EPS, threshold: float = THRESHOLD):
    """The wavelet-domain CNN on validated sources (one shape and dtype); see :func:`pyfusion.fuse`.

    Parameters
    ----------
    images : list of numpy.ndarray
        Validated sources, H, W >= 32.
    model_low, model_high : str or path, keyword-only
        The band nets (registered names or weights files of them).
    backend, threads, gpu, max_memory, progress
        As for the ``cnn`` method (:func:`pyfusion.net.score_map`).
    levels : int, keyword-only
        DWT levels (default 1, the level the nets were trained on).
    deep : {"derive", "net"}, keyword-only
        Weights of levels 2.. (module docstring, step 4).
    bands : {"separate", "joint"}, keyword-only
        ``"separate"``: each band's weights from its own net (the method as published); ``"joint"``: one weight
        map for all bands from the mean of the two nets' score maps.
    score_fns : (callable, callable), keyword-only
        ``(low_fn, high_fn)`` replacing the nets: ``low_fn(a, b)`` on (h, w) LL bands, ``high_fn(a, b)`` on
        (h, w, 3) high bands, each returning the band net's score map.
    region_ratio, gf_radius, gf_eps, threshold
        The paper's consistency steps. ``gf_radius`` is in image pixels and halved at the band's resolution;
        its default, 2 (radius 1 on the bands), was chosen on the project's synthetic tuning set (docs/wavelet.md),
        where the paper's 8 (4 on the bands) loses 1.4 dB.

    Returns
    -------
    tuple
        ``(fused, maps, timings)``: the fused image in the sources' dtype, the first pair's :data:`MAPS` and the
        seconds per :data:`STAGES`.
    """
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if deep not in ("derive", "net"):
        raise ValueError(f"deep must be 'derive' or 'net', got {deep!r}")
    if bands not in ("separate", "joint"):
        raise ValueError(f"bands must be 'separate' or 'joint', got {bands!r}")
    if score_fns is None:
        kw = dict(threads=threads, max_memory=max_memory, progress=progress, gpu=gpu)
        score_fns = (net_score_fn(model_low, backend, **kw), net_score_fn(model_high, backend, **kw))
    min_side = MIN_SIZE * 2 ** (levels - 1) if deep == "net" else MIN_SIZE
    if min(images[0].shape[:2]) < min_side:
        raise ValueError(f"{levels} levels with deep={deep!r} need sources of at least {min_side}x{min_side}")
    steps = dict(region_ratio=region_ratio, gf_radius=gf_radius, gf_eps=gf_eps, threshold=threshold)
    return in_series(images, lambda a, b, timings: _fuse_pair(a, b, *score_fns, levels=levels, deep=deep, bands=bands,
                                                              threads=threads, timings=timings, **steps), STAGES)
