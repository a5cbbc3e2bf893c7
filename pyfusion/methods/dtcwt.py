"""DT-CWT baseline fusion (``method="dtcwt"``): dual-tree complex wavelet transform, select sub-band coefficients.

Every source is decomposed with the 2-D dual-tree complex wavelet transform (:mod:`pyfusion.dtcwt`); the
lowpass of the coarsest level is averaged over the sources, and in each of the six oriented complex sub-bands
of every level each coefficient is taken from one source, chosen by Li's rule on ``|c|`` (3x3 maximum as the
activity, then a 3x3 majority vote as consistency verification); the inverse transform gives the fused image.

The defaults reproduce the DTCWT images published with the survey of Liu et al. [1]_ (``docs/dtcwt.md``
measures them with ``python -m fusionlab dtcwt-check``): the DT-CWT fusion of the MST-SR toolbox [2]_
(``dtcwt_fuse``): level-1 filters ``near_sym_a``, Q-shift filters ``qshift_06``, four levels, the lowpass
averaged, each complex coefficient chosen by Rockinger's ``selc`` mode 3 [3]_ [4]_ as the ``dwt`` method
applies it (:func:`pyfusion.methods.dwt.select_high_window_max_cv`: the sub-band is extended by one mirrored
row and column on each side, without repeating the edge, corners 0; the 3x3 maximum is taken on the extended
array with zeros outside; the majority vote runs on the extended decisions and keeps the windows inside them),
colour images fused channel by channel (RGB), the result clipped and rounded. The coefficients are computed on
the images multiplied by ``scale`` (255: the MATLAB code works on 0-255 doubles).

References
----------
.. [1] Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: A Survey of the state of the
   art", Information Fusion 64 (2020) 71-91.
.. [2] Y. Liu, S. Liu, Z. Wang, "A general framework for image fusion based on multi-scale transform and
   sparse representation", Information Fusion 24 (2015) 147-164.
.. [3] O. Rockinger, T. Fechner, "Pixel-level image fusion: the case of image sequences", Proc. SPIE 3374
   (1998) 378-388 (Image Fusion Toolbox for MATLAB, 1999: ``selc``, ``es2``).
.. [4] H. Li, B.S. Manjunath, S.K. Mitra, "Multisensor image fusion using the wavelet transform", Graphical
   Models and Image Processing 57 (3) (1995) 235-245.
"""
from __future__ import annotations

import numpy as np

from pyfusion import dtcwt
from pyfusion.methods.dwt import (_argmax_last, _box_max, _check_window, _decision_to_pixels, _validate,
                                  fuse_through_unit, scaled_channels_first,
                                  average_low, consistency_verification, select_high_window_max_cv, take)
from pyfusion.options import COMMON, Option, resolve
from pyfusion.util import threads

__all__ = ["fuse", "fuse_unit", "select_zero_border", "BORDERS", "OPTIONS", "DESCRIPTION", "MAPS", "STAGES"]


def select_zero_border(coeffs: np.ndarray, *, window: int = 3) -> np.ndarray:
    """Li's rule without the border extension: the ``window`` x ``window`` maximum of ``|c|`` and the majority
    vote both see zeros (no vote) outside the sub-band.

    Parameters
    ----------
    coeffs : numpy.ndarray
        ``(N, h, w)`` stack of one sub-band of the N sources (complex or real).
    window : int, optional
        Odd side of both windows.

    Returns
    -------
    numpy.ndarray
        ``(h, w)`` int decision (ties go to the later source).
    """
    r = _check_window(window) // 2
    decision = _argmax_last(_box_max(np.abs(coeffs), window))
    return consistency_verification(np.pad(decision, r, constant_values=-1), coeffs.shape[0], window=window)


#: ``border`` option -> the sub-band rule.
BORDERS = {"es2": select_high_window_max_cv, "zero": select_zero_border}

DESCRIPTION = ("the survey's DTCWT baseline: dual-tree complex wavelets, window-max selection with a consistency "
               "check")
#: The options of ``method="dtcwt"`` (and of :func:`fuse_unit`); the defaults reproduce the survey's DTCWT images.
OPTIONS = (*COMMON,
           Option("levels", int, 4, "decomposition levels", metavar="N"),
           Option("biort", str, "near_sym_a", "level-1 filters", choices=tuple(dtcwt.BIORT)),
           Option("qshift", str, "qshift_06", "Q-shift filters of levels 2 and up", choices=tuple(dtcwt.QSHIFT)),
           Option("window", int, 3, "odd window side of the activity maximum and the majority vote", metavar="K"),
           Option("border", str, "es2", "sub-band border before the windows: Rockinger's mirror (es2) or zeros",
                  choices=tuple(BORDERS)),
           Option("scale", float, 255.0, "the images are multiplied by it before the transform", metavar="S"))


def fuse_unit(images, **options) -> tuple[np.ndarray, dict]:
    """Fuse N >= 2 registered images by selecting DT-CWT sub-band coefficients and averaging the lowpass.

    Parameters
    ----------
    images : list of numpy.ndarray
        N >= 2 float64 arrays in [0, 1] of one shape, ``(H, W)`` or ``(H, W, C)``, any ``H, W >= 2``; each
        channel is fused on its own.
    levels : int, optional
        Decomposition levels (>= 1).
    biort : str, optional
        Level-1 filters (:data:`pyfusion.dtcwt.BIORT`).
    qshift : str, optional
        Q-shift filters of levels 2..J (:data:`pyfusion.dtcwt.QSHIFT`).
    window : int, optional
        Odd window side of the activity maximum and of the majority vote.
    border : str, optional
        ``"es2"`` (default): :func:`pyfusion.methods.dwt.select_high_window_max_cv`, Rockinger's extension;
        ``"zero"``: :func:`select_zero_border`.
    scale : float, optional
        The images are multiplied by ``scale`` before the transform and the result divided by it (only the
        rounding of near-tie comparisons depends on it).
    threads : int, optional
        Threads over the sub-bands and channels of the rule (default ``$PYFUSION_THREADS``, else every core);
        the result does not depend on it.
    progress : bool, optional
        A progress bar over the levels on standard error.

    The defaults are those of :data:`OPTIONS`.

    Returns
    -------
    fused : numpy.ndarray
        float64 array of the input shape, neither clipped nor rounded.
    maps : dict of str to numpy.ndarray
        ``"decision_map"``: uint8 index of the source chosen in the majority of the six finest-level sub-bands,
        at pixel resolution; ``(H, W)``, or ``(H, W, C)`` for colour inputs.

    Raises
    ------
    ValueError
        Fewer than two images, shape mismatch, unsupported shape, non-finite values, a bad option value.
    """
    from concurrent.futures import ThreadPoolExecutor

    from tqdm import tqdm

    o = resolve(OPTIONS, options)
    imgs = _validate(images)
    if o.border not in BORDERS:
        raise ValueError(f"unknown border {o.border!r}; choose one of {', '.join(BORDERS)}")
    window = _check_window(o.window)
    if not (np.isfinite(o.scale) and o.scale > 0):
        raise ValueError(f"scale must be a positive number, got {o.scale!r}")
    rule = BORDERS[o.border]
    shape = imgs[0].shape
    stack = scaled_channels_first(imgs, o.scale)  # (N, C, H, W)
    nc = stack.shape[1]
    pyr = dtcwt.forward(stack, levels=o.levels, biort=o.biort, qshift=o.qshift)

    highs = []
    with ThreadPoolExecutor(max_workers=threads(o.threads)) as pool:
        for band in tqdm(pyr.highpasses, desc="dtcwt levels", disable=not o.progress, leave=False):
            jobs = [(c, k) for c in range(nc) for k in range(6)]  # each on its own: any order, same result
            decisions = list(pool.map(lambda ck: rule(band[:, ck[0], ck[1]], window=window), jobs))
            highs.append((np.stack([take(band[:, c, k], d) for (c, k), d in zip(jobs, decisions)])
                          .reshape(band.shape[1:]), decisions))
    fused = dtcwt.Pyramid(average_low(pyr.lowpass), tuple(h for h, _ in highs), pyr.shape)
    out = dtcwt.inverse(fused, biort=o.biort, qshift=o.qshift) / o.scale  # (C, H, W)

    finest = highs[0][1]
    dmap = np.stack([_decision_to_pixels(finest[6 * c:6 * c + 6], shape[:2], 0) for c in range(nc)])
    if len(shape) == 2:
        return out[0], {"decision_map": dmap[0]}
    return np.ascontiguousarray(np.moveaxis(out, 0, -1)), {"decision_map": np.moveaxis(dmap, 0, -1)}


# ------------------------------------------------------------------------------- method interface (pyfusion.fuse)
MIN_SIZE = 2
MIN_REASON = "one sample per sub-band"
STAGES = ("fused",)
MAPS = ("decision_map",)


def fuse(images, **options):
    """``pyfusion.fuse(..., method="dtcwt")``: validated sources (one shape and dtype) -> ``(fused, maps, timings)``
    through :func:`fuse_unit` (:func:`pyfusion.methods.dwt.fuse_through_unit`)."""
    return fuse_through_unit(fuse_unit, images, options)
