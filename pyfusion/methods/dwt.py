"""DWT baseline fusion (``method="dwt"``): multi-level 2-D wavelet transform, select detail coefficients, invert.

Every source is decomposed with a multi-level 2-D discrete wavelet transform; the approximation (low-pass)
band of the coarsest level is averaged over the sources and every detail (high-pass) coefficient is taken
from one source, chosen by a coefficient activity rule; the inverse transform gives the fused image.

The defaults reproduce the DWT results published in the survey of Liu et al. [1]_: mean PSNR 74.4 dB against
the 30 published 8-bit images (grayscale 71.3 dB, colour 76.0 dB; 99.8 % of the 8-bit values identical, the
rest from isolated finest-level decisions that flip on floating-point ties; ``docs/wavelet.md``). They are
O. Rockinger's DWT fusion (Image Fusion Toolbox [3]_, ``fuse_dwb``) with the settings the MST-SR toolbox [2]_
uses for its transforms: the DBSS(2,2) biorthogonal spline wavelet (the 5/3 pair, ``bior2.2`` in PyWavelets'
numbering) in Rockinger's own filter-bank layout (whole-sample symmetric extension, four extra coefficients
kept on every border, highpass on even and lowpass on odd samples), four levels, the approximation averaged,
each detail coefficient chosen by Li's rule [4]_ (3x3 maximum of ``|c|`` as activity, then a 3x3 majority
filter as consistency verification), colour images fused channel by channel. (The MST-SR toolbox's own
``dwt_fuse``, Haar with periodization, gives 36.3 dB.) PyWavelets' ``bior2.2`` uses another phase and
border layout, so ``wavelet="dbss(2,2)"`` is implemented here with NumPy; any PyWavelets discrete wavelet can
be used instead (then the transform is ``pywt.wavedec2``/``pywt.waverec2`` with ``mode`` as its extension).

Coefficients are computed on the images multiplied by ``scale`` (255 by default, as the MATLAB code works on
0-255 doubles) with convolutions that add their terms in MATLAB's ``conv2`` order: thousands of finest-level
activity comparisons are ties up to rounding, and this choice matches the published decisions more often
(mean PSNR 74.4 dB; 71.2 dB adding the terms in the opposite order, 66.2 dB working on [0, 1]). It changes
nothing else.

References
----------
.. [1] Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: A Survey of the state of the
   art", Information Fusion 64 (2020) 71-91.
.. [2] Y. Liu, S. Liu, Z. Wang, "A general framework for image fusion based on multi-scale transform and
   sparse representation", Information Fusion 24 (2015) 147-164.
.. [3] O. Rockinger, T. Fechner, "Pixel-level image fusion: the case of image sequences", Proc. SPIE 3374,
   Signal Processing, Sensor Fusion, and Target Recognition VII (1998) 378-388 (Image Fusion Toolbox for
   MATLAB, 1999: ``fuse_dwb``, ``selc``, ``selb``).
.. [4] H. Li, B.S. Manjunath, S.K. Mitra, "Multisensor image fusion using the wavelet transform", Graphical
   Models and Image Processing 57 (3) (1995) 235-245.
"""
from __future__ import annotations

import functools

import numpy as np
import pywt

from pyfusion.constants import RGB2GRAY
from pyfusion.options import COMMON, Option, resolve
from pyfusion.util import threads

__all__ = [
    "fuse",
    "fuse_unit",
    "DBSS22",
    "HIGH_RULES",
    "LOW_RULES",
    "COLOUR_MODES",
    "RGB2GRAY",
    "select_high_abs_max",
    "select_high_abs_max_cv",
    "select_high_window_max",
    "select_high_window_max_cv",
    "consistency_verification",
    "average_low",
    "select_low_abs_max",
    "take",
]

#: Name of Rockinger's DBSS(2,2) filter bank, the default ``wavelet``.
DBSS22 = "dbss(2,2)"

#: MATLAB ``rgb2gray`` weights (R, G, B), used by ``colour="gray"``.

#: ``colour`` options: one decision per channel, or one decision from the gray version for every channel.
COLOUR_MODES = ("per_channel", "gray")

# DBSS(2,2) analysis/synthesis filters as in Rockinger's fuse_dwb.m, zero-padded to 7 taps so that the
# highpass lands on even and the lowpass on odd samples (MATLAB conv2 orientation: y = x * k).
_S = 4.0 * np.sqrt(2.0)
_H1 = np.array([-1.0, 2.0, 6.0, 2.0, -1.0, 0.0, 0.0]) / _S  # analysis lowpass
_G1 = np.array([0.0, 0.0, -2.0, 4.0, -2.0, 0.0, 0.0]) / _S  # analysis highpass
_H2 = np.array([0.0, 0.0, 0.0, 2.0, 4.0, 2.0, 0.0]) / _S  # synthesis lowpass
_G2 = np.array([0.0, -1.0, -2.0, 6.0, -2.0, -1.0, 0.0]) / _S  # synthesis highpass
_EXT_ANALYSIS = 7  # border extension before analysis filtering
_EXT_SYNTHESIS = 3  # border extension before synthesis filtering
_MARGIN = 4  # extra coefficients kept on every border by one analysis level (cropped after synthesis)

# PyWavelets mode names -> numpy.pad modes for the DBSS(2,2) filter bank.
_PAD_MODES = {
    "reflect": "reflect",  # whole-sample symmetric (Rockinger's es.m): ... x2 x1 | x0 x1 x2 ...
    "symmetric": "symmetric",  # half-sample symmetric: ... x1 x0 | x0 x1 ...
    "periodic": "wrap",
    "zero": "constant",
    "constant": "edge",
}


# ----------------------------------------------------------------------------------------------------------
# Coefficient selection rules. Each works on a stack (N, h, w) of one band of the N sources and returns either
# a decision (int array (h, w): index of the chosen source) or, for low-band rules, the fused band.
# Ties go to the LATER source, as in the MATLAB rules (``mm = A > B; Y = mm.*A + ~mm.*B``).
# ----------------------------------------------------------------------------------------------------------


def _argmax_last(stack: np.ndarray) -> np.ndarray:
    """Index of the largest value along axis 0; ties go to the largest index."""
    idx = np.zeros(stack.shape[1:], dtype=np.intp)
    best = stack[0].copy()
    for i in range(1, stack.shape[0]):
        later = stack[i] >= best
        idx[later] = i
        np.maximum(best, stack[i], out=best)
    return idx


def _box_max(x: np.ndarray, window: int) -> np.ndarray:
    """Maximum over a ``window`` x ``window`` neighbourhood of each 2-D array in ``x`` (..., h, w), zero outside.

    Same as MATLAB ``ordfilt2(x, window^2, ones(window))`` for ``x >= 0`` (ordfilt2 pads with zeros).
    """
    r = window // 2
    pad = [(0, 0)] * (x.ndim - 2) + [(r, r), (r, r)]
    p = np.pad(x, pad, mode="constant")
    h, w = x.shape[-2:]
    rows = p[..., 0:h, :].copy()  # separable: maximum over the rows of the window, then over its columns
    for dy in range(1, window):
        np.maximum(rows, p[..., dy : dy + h, :], out=rows)
    out = rows[..., 0:w].copy()
    for dx in range(1, window):
        np.maximum(out, rows[..., dx : dx + w], out=out)
    return out


def _extend_es2(x: np.ndarray, n: int) -> np.ndarray:
    """Rockinger's ``es2``: whole-sample symmetric extension by ``n`` on all four borders, corners left zero."""
    if n == 0:
        return x.copy()
    pad = [(0, 0)] * (x.ndim - 2) + [(n, n), (n, n)]
    y = np.pad(x, pad, mode="reflect")
    y[..., :n, :n] = 0.0
    y[..., :n, -n:] = 0.0
    y[..., -n:, :n] = 0.0
    y[..., -n:, -n:] = 0.0
    return y


def _check_window(window: int) -> int:
    if int(window) != window or window < 1 or window % 2 == 0:
        raise ValueError(f"window must be an odd positive integer, got {window!r}")
    return int(window)


def select_high_abs_max(coeffs: np.ndarray) -> np.ndarray:
    """Choose-max rule: each detail coefficient from the source with the largest ``|c|``.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of one detail band of the N sources.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int array: index of the chosen source (ties go to the later source).

    References
    ----------
    .. [1] O. Rockinger, Image Fusion Toolbox for MATLAB (1999), ``selc.m`` mode 1.
    """
    return _argmax_last(np.abs(coeffs))


def select_high_window_max(coeffs: np.ndarray, *, window: int = 3) -> np.ndarray:
    """Window rule: activity is the maximum of ``|c|`` over a ``window`` x ``window`` neighbourhood.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of one detail band.
    window : int, optional
        Odd side of the neighbourhood (borders: whole-sample symmetric extension, as Rockinger's ``es2``).

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int decision (ties go to the later source).

    References
    ----------
    .. [1] H. Li, B.S. Manjunath, S.K. Mitra, "Multisensor image fusion using the wavelet transform",
       Graphical Models and Image Processing 57 (3) (1995) 235-245.
    """
    r = _check_window(window) // 2
    act = _box_max(_extend_es2(np.abs(coeffs), r), window)
    return _argmax_last(act)[r : r + coeffs.shape[1], r : r + coeffs.shape[2]]


def consistency_verification(decision: np.ndarray, n_sources: int, *, window: int = 3) -> np.ndarray:
    """Majority filter: each coefficient takes the source chosen most often in its neighbourhood.

    Parameters
    ----------
    decision : numpy.ndarray
        Int decision map of shape ``(h + 2r, w + 2r)``, ``r = window // 2``: the decisions on the band extended
        by ``r`` on every side (as Rockinger's ``selc`` computes them); only windows lying inside it count.
    n_sources : int
        Number of sources N (decision values are ``0..N-1``).
    window : int, optional
        Odd side of the voting window.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int decision. With two sources a coefficient keeps source 0 iff more than half of the
        ``window**2`` votes are 0 (MATLAB ``conv2(double(A1 > A2), ones(w), 'valid') > floor(w*w/2)``); with
        more, the most-voted source wins and ties go to the later source.

    References
    ----------
    .. [1] H. Li, B.S. Manjunath, S.K. Mitra, "Multisensor image fusion using the wavelet transform",
       Graphical Models and Image Processing 57 (3) (1995) 235-245.
    """
    window = _check_window(window)
    h, w = decision.shape[0] - window + 1, decision.shape[1] - window + 1
    onehot = (decision[None, :, :] == np.arange(n_sources)[:, None, None]).astype(np.int32)
    rows = onehot[:, 0:h, :].copy()  # separable box sum of the votes (exact integers)
    for dy in range(1, window):
        rows += onehot[:, dy : dy + h, :]
    votes = rows[:, :, 0:w].copy()
    for dx in range(1, window):
        votes += rows[:, :, dx : dx + w]
    return _argmax_last(votes)


def select_high_window_max_cv(coeffs: np.ndarray, *, window: int = 3) -> np.ndarray:
    """Li's rule (the default): window-maximum activity, then consistency verification by majority filter.

    Rockinger's ``selc.m`` mode 3, as used by the MST-SR toolbox's DWT fusion: activity ``max |c|`` over a
    ``window`` x ``window`` neighbourhood computed on the band extended by ``window // 2`` (``es2``; outside
    that, zeros as in ``ordfilt2``), per-coefficient choice of the larger activity on that extended grid, then
    :func:`consistency_verification` with the same window.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of one detail band.
    window : int, optional
        Odd side of both the activity and the voting windows.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int decision.

    References
    ----------
    .. [1] H. Li, B.S. Manjunath, S.K. Mitra, "Multisensor image fusion using the wavelet transform",
       Graphical Models and Image Processing 57 (3) (1995) 235-245.
    .. [2] O. Rockinger, Image Fusion Toolbox for MATLAB (1999), ``selc.m`` mode 3.
    """
    r = _check_window(window) // 2
    act = _box_max(_extend_es2(np.abs(coeffs), r), window)
    return consistency_verification(_argmax_last(act), coeffs.shape[0], window=window)


def select_high_abs_max_cv(coeffs: np.ndarray, *, window: int = 3) -> np.ndarray:
    """Choose-max on ``|c|``, then consistency verification by majority filter.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of one detail band.
    window : int, optional
        Odd side of the voting window (the band is extended as in :func:`select_high_window_max_cv`).

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int decision.

    References
    ----------
    .. [1] H. Li, B.S. Manjunath, S.K. Mitra, "Multisensor image fusion using the wavelet transform",
       Graphical Models and Image Processing 57 (3) (1995) 235-245.
    """
    r = _check_window(window) // 2
    ext = np.pad(np.abs(coeffs), [(0, 0), (r, r), (r, r)], mode="reflect")
    return consistency_verification(_argmax_last(ext), coeffs.shape[0], window=window)


def average_low(coeffs: np.ndarray) -> np.ndarray:
    """Average rule for the approximation band: the mean over the sources.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of the coarsest approximation band.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` fused band, ``sum / N`` (for N = 2 exactly MATLAB's ``(A + B) / 2``).

    References
    ----------
    .. [1] O. Rockinger, Image Fusion Toolbox for MATLAB (1999), ``selb.m`` mode 3.
    """
    acc = coeffs[0].copy()
    for c in coeffs[1:]:
        acc += c
    return acc / coeffs.shape[0]


def select_low_abs_max(coeffs: np.ndarray) -> np.ndarray:
    """Choose-max rule for the approximation band: each coefficient from the source with the largest ``|c|``.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of the coarsest approximation band.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` fused band.

    References
    ----------
    .. [1] G. Pajares, J.M. de la Cruz, "A wavelet-based image fusion tutorial", Pattern Recognition 37 (9)
       (2004) 1855-1872.
    """
    return take(coeffs, select_high_abs_max(coeffs))


def take(coeffs: np.ndarray, decision: np.ndarray) -> np.ndarray:
    """Apply a decision: the fused band ``coeffs[decision[y, x], y, x]``.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of one band of the N sources.
    decision : numpy.ndarray
        ``(h, w)`` int array of source indices, as returned by the ``select_high_*`` rules.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` fused band.

    References
    ----------
    .. [1] G. Pajares, J.M. de la Cruz, "A wavelet-based image fusion tutorial", Pattern Recognition 37 (9)
       (2004) 1855-1872.
    """
    return np.take_along_axis(coeffs, decision[None].astype(np.intp), axis=0)[0]


#: ``high_rule`` name -> (function, takes ``window``).
HIGH_RULES = {
    "abs_max": (select_high_abs_max, False),
    "abs_max_cv": (select_high_abs_max_cv, True),
    "window_max": (select_high_window_max, True),
    "window_max_cv": (select_high_window_max_cv, True),
}

#: ``low_rule`` name -> function.
LOW_RULES = {"average": average_low, "abs_max": select_low_abs_max}


# ----------------------------------------------------------------------------------------------------------
# DBSS(2,2) filter bank (Rockinger's fuse_dwb layout), working on stacks (..., h, w).
# ----------------------------------------------------------------------------------------------------------


def _conv_valid(x: np.ndarray, k: np.ndarray, axis: int, step: int = 1) -> np.ndarray:
    """MATLAB ``conv2(x, k, 'valid')`` along ``axis`` (every ``step``-th output), terms added in conv2's order.

    ``y[i] = sum_j k[j] * x[i + K-1-j]`` accumulated for ``j = 0..K-1`` (zero taps skipped: adding an exact
    zero changes nothing).
    """
    x = np.moveaxis(x, axis, -1)
    nk = len(k)
    n = x.shape[-1] - nk + 1
    y = None
    for j in range(nk):
        if k[j] == 0.0:
            continue
        s = nk - 1 - j
        t = x[..., s : s + n : step] * k[j]
        if y is None:
            y = t
        else:
            y += t
    return np.moveaxis(y, -1, axis)


def _upsample_extend(x: np.ndarray, axis: int, pad_mode: str) -> tuple[np.ndarray, np.ndarray]:
    """Rockinger's ``es(undec(x), 3)`` along ``axis``, and a 1-D mask of its entries that can be non-zero."""
    shape = list(x.shape)
    shape[axis] *= 2
    u = np.zeros(shape)
    idx = [slice(None)] * x.ndim
    idx[axis] = slice(0, None, 2)
    u[tuple(idx)] = x
    pad = [(0, 0)] * x.ndim
    pad[axis] = (_EXT_SYNTHESIS, _EXT_SYNTHESIS)
    return np.pad(u, pad, mode=pad_mode), _upsampled_support(shape[axis], pad_mode)


@functools.lru_cache(maxsize=256)
def _upsampled_support(n: int, pad_mode: str) -> np.ndarray:
    """Which entries of ``es(undec(x), 3)`` (length ``n + 6``) may be non-zero: the samples and their copies."""
    mask = np.zeros(n, dtype=bool)
    mask[::2] = True
    mask = np.pad(mask, _EXT_SYNTHESIS, mode=pad_mode)
    mask.flags.writeable = False
    return mask


def _conv_valid_sparse(e: np.ndarray, mask: np.ndarray, k: np.ndarray, axis: int) -> np.ndarray:
    """:func:`_conv_valid` (step 1) of an upsampled array, skipping the terms that multiply its inserted zeros.

    Each output parity is computed on its own; a term is skipped only when ``mask`` says that every entry it
    reads is an inserted zero, so the sums (and their order) are those of :func:`_conv_valid`.
    """
    e = np.moveaxis(e, axis, -1)
    nk = len(k)
    n = e.shape[-1] - nk + 1
    out = np.empty(e.shape[:-1] + (n,))
    for p in (0, 1):
        m = len(range(p, n, 2))
        y = None
        for j in range(nk):
            s = nk - 1 - j + p
            if k[j] == 0.0 or not mask[s : s + 2 * m - 1 : 2].any():
                continue
            t = e[..., s : s + 2 * m - 1 : 2] * k[j]
            if y is None:
                y = t
            else:
                y += t
        out[..., p::2] = 0.0 if y is None else y
    return np.moveaxis(out, -1, axis)


def _dbss_analysis(m: np.ndarray, pad_mode: str):
    """One DBSS(2,2) analysis level of a stack (..., h, w) -> (HH, LH, HL, LL), each ~((h+8)/2, (w+8)/2).

    Band names: first letter the vertical, second the horizontal filter (H highpass, L lowpass); Rockinger's
    A1 = HH (diagonal), A2 = LH (vertical edges), A3 = HL (horizontal edges), A4 = LL.
    """
    row, col = m.ndim - 1, m.ndim - 2
    # Rockinger extends the rows, filters them, then extends the columns of the result; extending both axes
    # first gives the same numbers (the column extension only copies rows, which row filtering maps alike).
    pad = [(0, 0)] * (m.ndim - 2) + [(_EXT_ANALYSIS, _EXT_ANALYSIS)] * 2
    e = np.pad(m, pad, mode=pad_mode)
    zg = _conv_valid(e, _G1, row, step=2)
    zh = _conv_valid(e, _H1, row, step=2)
    return (
        _conv_valid(zg, _G1, col, step=2),
        _conv_valid(zg, _H1, col, step=2),
        _conv_valid(zh, _G1, col, step=2),
        _conv_valid(zh, _H1, col, step=2),
    )


def _dbss_synthesis(hh, lh, hl, ll, shape, pad_mode: str) -> np.ndarray:
    """One DBSS(2,2) synthesis level (inverse of :func:`_dbss_analysis`), cropped to ``shape`` (h, w)."""
    row, col = ll.ndim - 1, ll.ndim - 2

    def up(x, k, axis):
        e, mask = _upsample_extend(x, axis, pad_mode)
        return _conv_valid_sparse(e, mask, k, axis)

    a4 = up(ll, _H2, col)
    a3 = up(hl, _G2, col)
    a2 = up(lh, _H2, col)
    a1 = up(hh, _G2, col)
    a4 = up(a4 + a3, _H2, row)
    a2 = up(a2 + a1, _G2, row)
    out = a4 + a2
    return out[..., _MARGIN : _MARGIN + shape[0], _MARGIN : _MARGIN + shape[1]]


def _dbss_wavedec(m: np.ndarray, levels: int, pad_mode: str):
    """``[LL_L, (HL_L, LH_L, HH_L), ..., (HL_1, LH_1, HH_1)]`` plus the input shape of every level."""
    details, shapes = [], []
    for _ in range(levels):
        shapes.append(m.shape[-2:])
        hh, lh, hl, m = _dbss_analysis(m, pad_mode)
        details.append((hl, lh, hh))
    return [m] + details[::-1], shapes[::-1]


def _dbss_waverec(coeffs, shapes, pad_mode: str) -> np.ndarray:
    ll = coeffs[0]
    for (hl, lh, hh), shape in zip(coeffs[1:], shapes):
        ll = _dbss_synthesis(hh, lh, hl, ll, shape, pad_mode)
    return ll


# ----------------------------------------------------------------------------------------------------------
# Fusion
# ----------------------------------------------------------------------------------------------------------


def _validate(images) -> list[np.ndarray]:
    if isinstance(images, np.ndarray) or len(images) < 2:
        raise ValueError("images must be a list of at least two arrays")
    imgs = [np.asarray(im, dtype=np.float64) for im in images]
    shape = imgs[0].shape
    for i, im in enumerate(imgs):
        if im.shape != shape:
            raise ValueError(f"image {i} has shape {im.shape}, image 0 has {shape}: all must have one shape")
        if im.ndim not in (2, 3) or im.shape[0] < 2 or im.shape[1] < 2:
            raise ValueError(f"images must be (H, W) or (H, W, C) with H, W >= 2, got {im.shape}")
        if not np.all(np.isfinite(im)):
            raise ValueError(f"image {i} has non-finite values")
    return imgs


def _decision_to_pixels(dec_bands, shape, offset: int) -> np.ndarray:
    """Per-pixel map from the finest level's three band decisions (majority; ties -> the later source)."""
    n = int(max(d.max() for d in dec_bands)) + 1
    votes = sum((d[None] == np.arange(n)[:, None, None]).astype(np.int8) for d in dec_bands)
    d = _argmax_last(votes).astype(np.uint8)
    iy = np.clip((np.arange(shape[0]) + offset) // 2, 0, d.shape[0] - 1)
    ix = np.clip((np.arange(shape[1]) + offset) // 2, 0, d.shape[1] - 1)
    return np.take(np.take(d, iy, axis=0), ix, axis=1)


DESCRIPTION = "the survey's DWT baseline: Rockinger's DBSS(2,2) transform, window-max selection with a consistency check"
#: The options of ``method="dwt"`` (and of :func:`fuse_unit`); the defaults reproduce the survey's DWT images.
OPTIONS = (*COMMON,
           Option("wavelet", str, DBSS22, "the filter bank: dbss(2,2) (Rockinger's) or a PyWavelets name (db1, "
                  "sym4, bior2.2, ...)", metavar="NAME"),
           Option("levels", int, 4, "decomposition levels", metavar="N"),
           Option("mode", str, "reflect", "signal extension (a PyWavelets mode name)", metavar="MODE"),
           Option("high_rule", str, "window_max_cv", "detail coefficient rule", choices=tuple(HIGH_RULES)),
           Option("low_rule", str, "average", "approximation band rule", choices=tuple(LOW_RULES)),
           Option("window", int, 3, "odd window side of the windowed rules", metavar="K"),
           Option("colour", str, "per_channel", "every channel on its own, or decisions on the gray image",
                  choices=COLOUR_MODES),
           Option("scale", float, 255.0, "the images are multiplied by it before the transform", metavar="S"))


def fuse_unit(images, **options) -> tuple[np.ndarray, dict]:
    """Fuse N >= 2 registered images by selecting DWT detail coefficients and averaging the approximation.

    Parameters
    ----------
    images : list of numpy.ndarray
        N >= 2 float64 arrays in [0, 1] of one shape, ``(H, W)`` or ``(H, W, C)``, any ``H, W >= 2``.
    wavelet : str, optional
        ``"dbss(2,2)"`` (default): Rockinger's DBSS(2,2) filter bank, implemented here (see the module notes);
        or any PyWavelets discrete wavelet name (``"db1"``, ``"sym4"``, ``"bior2.2"``, ...), then the transform
        is ``pywt.wavedec2``/``pywt.waverec2``.
    levels : int, optional
        Number of decomposition levels (>= 1).
    mode : str, optional
        Signal extension mode, a PyWavelets mode name. For ``"dbss(2,2)"``: ``"reflect"`` (whole-sample
        symmetric, Rockinger's ``es``; default), ``"symmetric"``, ``"periodic"``, ``"zero"``, ``"constant"``.
        For PyWavelets wavelets: any of ``pywt.Modes.modes`` (MATLAB's ``dwtmode`` default ``'sym'`` is
        ``"symmetric"``, ``'per'`` is ``"periodization"``).
    high_rule : str, optional
        Detail coefficient rule: ``"window_max_cv"`` (default, :func:`select_high_window_max_cv`),
        ``"window_max"`` (:func:`select_high_window_max`), ``"abs_max_cv"`` (:func:`select_high_abs_max_cv`),
        ``"abs_max"`` (:func:`select_high_abs_max`).
    low_rule : str, optional
        Approximation band rule: ``"average"`` (default, :func:`average_low`) or ``"abs_max"``
        (:func:`select_low_abs_max`).
    window : int, optional
        Odd window side of the windowed rules (activity and majority vote).
    colour : str, optional
        ``"per_channel"`` (default): every channel fused on its own; ``"gray"``: decisions made once on the
        gray version (MATLAB ``rgb2gray`` weights 0.2989, 0.5870, 0.1140; other channel counts: the channel
        mean) and applied to every channel. Ignored for ``(H, W)`` inputs.
    scale : float, optional
        The images are multiplied by ``scale`` before the transform and the result divided by it. Only the
        rounding of near-tie activity comparisons depends on it; 255 matches the MATLAB code, which works on
        0-255 doubles.
    threads : int, optional
        Threads over the bands and channels of the coefficient rules (default ``$PYFUSION_THREADS``, else every
        core); the result does not depend on it.
    progress : bool, optional
        A progress bar over the levels on standard error.

    The defaults are those of :data:`OPTIONS`.

    Returns
    -------
    fused : numpy.ndarray
        float64 array of the input shape, neither clipped nor rounded.
    maps : dict of str to numpy.ndarray
        ``"decision_map"``: uint8 index of the source whose finest-level detail coefficients were chosen in the
        majority of the three orientation bands, at pixel resolution; ``(H, W)``, or ``(H, W, C)`` for
        ``colour="per_channel"`` colour inputs.

    Raises
    ------
    ValueError
        Fewer than two images, shape mismatch, unsupported shape, non-finite values, unknown option.

    References
    ----------
    .. [1] Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: A Survey of the state of the
       art", Information Fusion 64 (2020) 71-91.
    .. [2] Y. Liu, S. Liu, Z. Wang, "A general framework for image fusion based on multi-scale transform and
       sparse representation", Information Fusion 24 (2015) 147-164.
    .. [3] O. Rockinger, T. Fechner, "Pixel-level image fusion: the case of image sequences", Proc. SPIE 3374
       (1998) 378-388.
    .. [4] H. Li, B.S. Manjunath, S.K. Mitra, "Multisensor image fusion using the wavelet transform",
       Graphical Models and Image Processing 57 (3) (1995) 235-245.
    """
    o = resolve(OPTIONS, options)
    wavelet, levels, mode, high_rule, low_rule = o.wavelet, o.levels, o.mode, o.high_rule, o.low_rule
    window, colour, scale = o.window, o.colour, o.scale
    imgs = _validate(images)
    if int(levels) != levels or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    levels = int(levels)
    if high_rule not in HIGH_RULES:
        raise ValueError(f"unknown high_rule {high_rule!r}; choose one of {sorted(HIGH_RULES)}")
    if low_rule not in LOW_RULES:
        raise ValueError(f"unknown low_rule {low_rule!r}; choose one of {sorted(LOW_RULES)}")
    if colour not in COLOUR_MODES:
        raise ValueError(f"unknown colour {colour!r}; choose one of {COLOUR_MODES}")
    window = _check_window(window)
    if not (np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale must be a positive number, got {scale!r}")

    dbss = str(wavelet).lower() == DBSS22
    if dbss:
        if mode not in _PAD_MODES:
            raise ValueError(f"mode {mode!r} is not available for {DBSS22}; choose one of {sorted(_PAD_MODES)}")
        pad_mode = _PAD_MODES[mode]

        def dec(stack):
            return _dbss_wavedec(stack, levels, pad_mode)

        def rec(coeffs, shapes):
            return _dbss_waverec(coeffs, shapes, pad_mode)

        offset = _MARGIN
    else:
        try:
            wav = pywt.Wavelet(wavelet)
        except ValueError as e:
            raise ValueError(f"unknown wavelet {wavelet!r}: {e}") from None
        if mode not in pywt.Modes.modes:
            raise ValueError(f"unknown mode {mode!r}; choose one of {pywt.Modes.modes}")

        def dec(stack):
            return pywt.wavedec2(stack, wav, mode=mode, level=levels, axes=(-2, -1)), None

        def rec(coeffs, shapes):
            return pywt.waverec2(coeffs, wav, mode=mode, axes=(-2, -1))

        offset = 0 if mode == "periodization" else wav.dec_len - 2

    high_fn, takes_window = HIGH_RULES[high_rule]
    high_kw = {"window": window} if takes_window else {}
    low_fn = LOW_RULES[low_rule]

    shape = imgs[0].shape
    h, w = shape[:2]
    stack = scaled_channels_first(imgs, scale)
    nc = stack.shape[1]

    coeffs, shapes = dec(stack)
    if colour == "gray" and nc > 1:
        if nc == 3:
            wts = np.array(RGB2GRAY)
        else:
            wts = np.full(nc, 1.0 / nc)
        gray = np.tensordot(stack, wts, axes=([1], [0]))[:, None]  # (N, 1, H, W)
        gcoeffs, _ = dec(gray)
        decide_on, nd = gcoeffs, 1
    else:
        decide_on, nd = coeffs, nc

    fused = [np.stack([low_fn(coeffs[0][:, c]) for c in range(nc)])]
    finest = []
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    with ThreadPoolExecutor(max_workers=threads(o.threads)) as pool:
        for lev in tqdm(range(1, levels + 1), desc="dwt levels", disable=not o.progress, leave=False):
            # the decisions of the level's 3 bands x nd channels, each on its own (any order, same result)
            flat = list(pool.map(lambda bc: high_fn(decide_on[lev][bc[0]][:, bc[1]], **high_kw),
                                 [(b, c) for b in range(3) for c in range(nd)]))
            level_dec = [flat[b * nd:(b + 1) * nd] for b in range(3)]
            bands = [np.stack([take(coeffs[lev][b][:, c], level_dec[b][c if nd > 1 else 0]) for c in range(nc)])
                     for b in range(3)]
            fused.append(tuple(bands))
            if lev == levels:
                finest = level_dec
    out = rec(fused, shapes)[..., :h, :w] / scale  # (C, H, W); pywt may add a row/column on odd sizes

    dmap = np.stack([_decision_to_pixels([finest[b][c] for b in range(3)], (h, w), offset) for c in range(nd)])
    if len(shape) == 2:
        return out[0], {"decision_map": dmap[0]}
    out = np.moveaxis(out, 0, -1)
    dmap = dmap[0] if nd == 1 else np.moveaxis(dmap, 0, -1)
    return np.ascontiguousarray(out), {"decision_map": dmap}


# ------------------------------------------------------------------------------- method interface (pyfusion.fuse)
MIN_SIZE = 2
MIN_REASON = "one sample per band"
STAGES = ("fused",)
MAPS = ("decision_map",)


def scaled_channels_first(imgs, scale: float) -> np.ndarray:
    """The validated sources stacked as ``(N, C, H, W)`` (``C = 1`` for ``(H, W)`` images), times ``scale``."""
    stack = np.stack(imgs) * scale  # (N, H, W) or (N, H, W, C)
    return np.moveaxis(stack, -1, 1) if stack.ndim == 4 else stack[:, None]


def fuse_through_unit(fuse_unit_fn, images, options) -> tuple:
    """A method interface over a [0, 1] fusion function: the sources to [0, 1] (:func:`pyfusion.io.to_unit`),
    ``fuse_unit_fn(images, **options) -> (fused, maps)``, the result back to their dtype
    (:func:`pyfusion.io.from_unit`: clipped and rounded as MATLAB's ``uint8()``); ``(fused, maps, timings)``."""
    import time

    from pyfusion.io import from_unit, to_unit

    t0 = time.perf_counter()
    fused, maps = fuse_unit_fn([to_unit(x) for x in images], **options)
    return from_unit(fused, images[0].dtype), maps, {"fused": time.perf_counter() - t0}


def fuse(images, **options):
    """``pyfusion.fuse(..., method="dwt")``: validated sources (one shape and dtype) -> ``(fused, maps, timings)``
    through :func:`fuse_unit` (:func:`fuse_through_unit`)."""
    return fuse_through_unit(fuse_unit, images, options)
