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
   guided filter radius ``gf_radius`` is in the band's pixels (default 1: :data:`GF_RADIUS_BANDS`);
4. deeper levels (``levels > 1``): their high bands take the level-1 high decision averaged over 2x2 blocks per
   level (:func:`derive_decision`, ``deep="derive"``), or the high net run on that level's bands
   (``deep="net"``); the deepest LL takes the low decision averaged the same way;
5. fused coefficients ``W c_A + (1 - W) c_B`` (:func:`fuse_coefficients`) for every channel, inverse DWT, crop.

``transform="dtcwt"`` replaces the Haar DWT with the dual-tree complex wavelet transform (:mod:`pyfusion.dtcwt`,
filters ``near_sym_a`` and ``qshift_06``) and keeps the shipped nets: they see the level-1 DT-CWT as they saw
the Haar bands (:func:`dtcwt_net_inputs`: the low net the 2x2 block mean of the level-1 lowpass, the high net
the magnitudes of the six complex sub-bands, mirrored orientations paired into three channels); the decision
maps, at the level-1 sub-bands' resolution, weight the complex sub-bands of every level (2x2 block means per
level, ``deep="derive"``) and the lowpass (each weight repeated over the 2x2 lowpass samples of a sub-band
sample); the inverse DT-CWT gives the fused image. How it compares with the Haar transform: docs/dtcwt.md.

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

from pyfusion import dtcwt, models
from pyfusion.constants import BAND_SCALE, GF_EPS, REGION_RATIO, THRESHOLD
from pyfusion.io import to_gray
from pyfusion.methods.cnn import check_scores, decision_maps, in_series, net_score_fn
from pyfusion.options import COMMON, CONSISTENCY, NET, Option, pair, replace, resolve
from pyfusion.util import Stopwatch

__all__ = ["fuse", "dwt", "idwt", "derive_decision", "fuse_coefficients", "dtcwt_net_inputs", "WAVELET", "MAPS",
           "OPTIONS", "DESCRIPTION", "TRANSFORMS", "ORIENTATION_PAIRS"]

WAVELET = "haar"      # the training recipe's wavelet (pyfusion.models: recipe "wavelet")
MODE = "periodization"
#: The DT-CWT's filters with ``transform="dtcwt"`` (level 1, levels 2..), those of ``method="dtcwt"``.
BIORT, QSHIFT = "near_sym_a", "qshift_06"
#: The DT-CWT sub-bands (:data:`pyfusion.dtcwt.ORIENTATIONS`) paired into the high net's three channels, in the
#: Haar order LH, HL, HH: near-horizontal features (15, 165 degrees), near-vertical (75, 105), diagonal (45, 135).
ORIENTATION_PAIRS = ((0, 5), (2, 3), (1, 4))
#: Smallest source side: one 16x16 patch of the level-1 bands.
MIN_SIZE = 2 * models.get("wavelet_low").patch
MIN_REASON = f"one {MIN_SIZE // 2}x{MIN_SIZE // 2} band patch of the wavelet nets"
#: Guided filter radius at the level-1 bands' resolution (2 image pixels): chosen on the synthetic tuning set
#: (`python -m fusionlab groundtruth --start 50 --seed 1`, docs/wavelet_tuning.md) among 1, 2 and 4.
GF_RADIUS_BANDS = 1
STAGES = ("dwt", "score_map", "decision_map", "fused")
MAPS = ("low_score_map", "low_decision_map", "high_score_map", "high_decision_map")
#: The two band nets of the shipped method.
MODELS = ("wavelet_low", "wavelet_high")

DESCRIPTION = ("Haar DWT (or DT-CWT); a CNN per sub-band (LL; LH/HL/HH) with the paper's consistency steps; "
               "inverse transform")
#: The options of ``method="wavelet-cnn"``.
OPTIONS = (*COMMON, *replace(NET, model={
    "type": pair, "default": MODELS, "metavar": "LOW,HIGH",
    "help": "the low-band and the high-band net: registered names or weights files, LOW,HIGH"}),
    *replace(CONSISTENCY, gf_radius={"default": GF_RADIUS_BANDS, "help": "guided filter radius in pixels of the "
                                     "level-1 bands (half the image's)"}),
    Option("transform", str, "haar", "the wavelet transform: Haar DWT (the nets' training) or the dual-tree complex "
           "wavelet transform", choices=("haar", "dtcwt")),
    Option("levels", int, 1, "transform levels (1: the level the nets were trained on)", metavar="N"),
    Option("deep", str, "derive", "weights of levels 2..: the level-1 decision averaged, or the high net run on "
           "the level (Haar only)", choices=("derive", "net")),
    Option("bands", str, "separate", "each band's weights from its own net, or one map from the mean of both nets' "
           "scores", choices=("separate", "joint")),
    Option("score_fn", object, None, "(low_fn, high_fn): pair score functions replacing the two nets", cli=False),
)


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


def _channels(x: np.ndarray) -> list:
    return [x] if x.ndim == 2 else [x[..., c] for c in range(x.shape[2])]


def _scores(low_fn, high_fn, low_a, low_b, high_a, high_b, m_low, m_high):
    """The two nets' score maps on the level-1 net inputs (float32), checked against the nets' geometry."""
    return (check_scores(low_fn(low_a.astype(np.float32), low_b.astype(np.float32)), m_low.score_shape(*low_a.shape)),
            check_scores(high_fn(high_a.astype(np.float32), high_b.astype(np.float32)),
                         m_high.score_shape(*low_a.shape)))


def _decisions(scores_low, scores_high, guide_a, guide_b, *, bands, threads, band_steps):
    """The consistency steps on the low and the high score map (``bands="joint"``: one map from their mean)."""
    if bands == "joint":      # one decision for every band, from the mean of the two nets' scores
        low = high = decision_maps(0.5 * (scores_low + scores_high), guide_a, guide_b, threads=threads, **band_steps)
    else:
        low = decision_maps(scores_low, guide_a, guide_b, threads=threads, **band_steps)
        high = decision_maps(scores_high, guide_a, guide_b, threads=threads, **band_steps)
    return low, high


def _maps(scores_low, low, scores_high, high) -> dict:
    return {"low_score_map": scores_low, "low_decision_map": low["decision_map"],
            "high_score_map": scores_high, "high_decision_map": high["decision_map"]}


def _fuse_pair(a, b, low_fn, high_fn, *, m_low, m_high, levels, deep, bands, threads, timings, **steps):
    tick = Stopwatch(timings)
    ga, gb = to_gray(a), to_gray(b)
    da1, db1 = dwt(ga, 1), dwt(gb, 1)            # level 1 (the bands the nets were trained on)
    tick("dwt")
    s_low, s_high = BAND_SCALE["low"], BAND_SCALE["high"]
    low_a, low_b = da1[0] * s_low, db1[0] * s_low
    scores_low, scores_high = _scores(low_fn, high_fn, low_a, low_b, _stack(da1[1]) * s_high,
                                      _stack(db1[1]) * s_high, m_low, m_high)
    tick("score_map")
    band_steps = dict(steps, patch=m_low.patch, stride=m_low.stride)
    low, high = _decisions(scores_low, scores_high, low_a, low_b, bands=bands, threads=threads, band_steps=band_steps)
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
    out = []
    for xa, xb in zip(_channels(a), _channels(b)):
        ca, cb = dwt(xa, levels), dwt(xb, levels)
        fused = [fuse_coefficients(ca[0], cb[0], w_low)]
        for k in range(1, levels + 1):           # ca[k]: level levels - k + 1
            w = w_high[levels - k]
            fused.append(tuple(fuse_coefficients(x, y, w) for x, y in zip(ca[k], cb[k])))
        out.append(idwt(fused, xa.shape))
    fused = out[0] if a.ndim == 2 else np.stack(out, axis=-1)
    tick("fused")
    return fused, _maps(scores_low, low, scores_high, high)


def dtcwt_net_inputs(gray: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The band nets' inputs from the level-1 DT-CWT of grayscale image(s) ``(..., H, W)`` in [0, 1].

    Low net: the Haar LL of the level-1 lowpass (:func:`dwt`) times ``BAND_SCALE["low"]``, i.e. its 2x2 block
    mean, as the net was trained on the image's. High net: per pair of mirrored orientations
    (:data:`ORIENTATION_PAIRS`), ``sqrt(|z_i|^2 + |z_j|^2)`` times ``BAND_SCALE["high"]``, as the (h, w, 3)
    channels LH, HL, HH (for white noise each has the Haar detail band's variance).

    Returns
    -------
    tuple of numpy.ndarray
        ``(..., h, w)`` and ``(..., h, w, 3)`` float64, ``h, w`` the level-1 sub-bands' shape (``ceil(H / 2)``).
    """
    pyr = dtcwt.forward(gray, levels=1, biort=BIORT)
    lp = pyr.lowpass
    low = 0.25 * (lp[..., 0::2, 0::2] + lp[..., 1::2, 0::2] + lp[..., 0::2, 1::2] + lp[..., 1::2, 1::2])
    z = np.abs(pyr.highpasses[0])
    high = np.stack([np.hypot(z[..., i, :, :], z[..., j, :, :]) for i, j in ORIENTATION_PAIRS], axis=-1)
    return low * (2 * BAND_SCALE["low"]), high * BAND_SCALE["high"]


def _fuse_pair_dtcwt(a, b, low_fn, high_fn, *, m_low, m_high, levels, deep, bands, threads, timings, **steps):
    tick = Stopwatch(timings)
    (low_a, low_b), (high_a, high_b) = dtcwt_net_inputs(np.stack([to_gray(a), to_gray(b)]))
    tick("dwt")
    scores_low, scores_high = _scores(low_fn, high_fn, low_a, low_b, high_a, high_b, m_low, m_high)
    tick("score_map")
    band_steps = dict(steps, patch=m_low.patch, stride=m_low.stride)
    low, high = _decisions(scores_low, scores_high, low_a, low_b, bands=bands, threads=threads, band_steps=band_steps)
    x = np.stack([a, b]) if a.ndim == 2 else np.moveaxis(np.stack([a, b]), -1, 1)   # (2, [C,] H, W)
    pyr = dtcwt.forward(x, levels=levels, biort=BIORT, qshift=QSHIFT)
    w_high, w_low = [high["decision_map"]], low["decision_map"]
    for band in pyr.highpasses[1:]:                   # levels 2..: ceil(n / 2) samples of the level before
        w_high.append(derive_decision(w_high[-1], band.shape[-2:]))
        w_low = derive_decision(w_low, band.shape[-2:])
    w_low = np.repeat(np.repeat(w_low, 2, axis=0), 2, axis=1)   # the lowpass: 2x2 samples per sub-band sample
    tick("decision_map")
    fused = dtcwt.Pyramid(fuse_coefficients(pyr.lowpass[0], pyr.lowpass[1], w_low),
                          tuple(fuse_coefficients(z[0], z[1], w) for z, w in zip(pyr.highpasses, w_high)), pyr.shape)
    fused = dtcwt.inverse(fused, biort=BIORT, qshift=QSHIFT)
    fused = fused if a.ndim == 2 else np.moveaxis(fused, 0, -1)
    tick("fused")
    return fused, _maps(scores_low, low, scores_high, high)


#: ``transform`` option -> the pair fusion.
TRANSFORMS = {"haar": _fuse_pair, "dtcwt": _fuse_pair_dtcwt}


def fuse(images, **options):
    """The wavelet-domain CNN on validated sources (one shape and dtype); see :func:`pyfusion.fuse`.

    Parameters
    ----------
    images : list of numpy.ndarray
        Validated sources, H, W >= 32.
    model : (str or path, str or path) or "LOW,HIGH"
        The low-band and the high-band net (registered names or weights files of them; default
        :data:`MODELS`).
    backend, threads, gpu, max_memory, progress
        As for the ``cnn`` method (:func:`pyfusion.net.score_map`).
    transform : {"haar", "dtcwt"}, keyword-only
        ``"haar"`` (default): the Haar DWT the nets were trained on; ``"dtcwt"``: the dual-tree complex wavelet
        transform with the same nets (module docstring).
    levels : int, keyword-only
        Transform levels (default 1, the level the nets were trained on).
    deep : {"derive", "net"}, keyword-only
        Weights of levels 2.. (module docstring, step 4); ``"net"`` only with ``transform="haar"``.
    bands : {"separate", "joint"}, keyword-only
        ``"separate"``: each band's weights from its own net (the method as published); ``"joint"``: one weight
        map for all bands from the mean of the two nets' score maps.
    score_fn : (callable, callable), keyword-only
        ``(low_fn, high_fn)`` replacing the nets: ``low_fn(a, b)`` on (h, w) LL bands, ``high_fn(a, b)`` on
        (h, w, 3) high bands, each returning the band net's score map.
    region_ratio, gf_radius, gf_eps, threshold
        The paper's consistency steps. ``gf_radius`` is in pixels of the level-1 bands (half the image's); its
        default, 1, was chosen on the project's synthetic tuning set (docs/wavelet.md), where the paper's 8 image
        pixels (4 on the bands) lose 1.4 dB.

    Returns
    -------
    tuple
        ``(fused, maps, timings)``: the fused image in the sources' dtype, the first pair's :data:`MAPS` and the
        seconds per :data:`STAGES`.
    """
    o = resolve(OPTIONS, options)
    levels, deep, bands, threads, score_fns = o.levels, o.deep, o.bands, o.threads, o.score_fn
    if o.transform not in TRANSFORMS:
        raise ValueError(f"transform must be 'haar' or 'dtcwt', got {o.transform!r}")
    model = pair(o.model) if isinstance(o.model, str) else tuple(o.model)
    if len(model) != 2:
        raise ValueError(f"model must be two nets (low, high), got {o.model!r}")
    if levels < 1:
        raise ValueError(f"levels must be >= 1, got {levels}")
    if deep not in ("derive", "net"):
        raise ValueError(f"deep must be 'derive' or 'net', got {deep!r}")
    if deep == "net" and o.transform != "haar":
        raise ValueError(f"deep='net' needs transform='haar' (the high net on deeper Haar bands), got {o.transform!r}")
    if bands not in ("separate", "joint"):
        raise ValueError(f"bands must be 'separate' or 'joint', got {bands!r}")
    if score_fns is None:
        kw = dict(threads=threads, max_memory=o.max_memory, progress=o.progress, gpu=o.gpu)
        score_fns = (net_score_fn(model[0], o.backend, **kw), net_score_fn(model[1], o.backend, **kw))
    elif o.backend is not None or o.max_memory is not None or "model" in options:
        raise ValueError("give either score_fn or model/backend/max_memory, not both")
    m_low, m_high = models.resolve(model[0])[0], models.resolve(model[1])[0]
    min_side = MIN_SIZE * 2 ** (levels - 1) if deep == "net" else MIN_SIZE
    if min(images[0].shape[:2]) < min_side:
        raise ValueError(f"{levels} levels with deep={deep!r} need sources of at least {min_side}x{min_side}")
    steps = dict(region_ratio=o.region_ratio, gf_radius=o.gf_radius, gf_eps=o.gf_eps, threshold=o.threshold)
    fuse_pair = TRANSFORMS[o.transform]
    return in_series(images, lambda a, b, timings: fuse_pair(a, b, *score_fns, m_low=m_low, m_high=m_high,
                                                             levels=levels, deep=deep, bands=bands, threads=threads,
                                                             timings=timings, **steps), STAGES)
