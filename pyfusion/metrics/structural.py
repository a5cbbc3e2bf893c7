"""Structural-similarity based fusion metrics: Q_E (Piella & Heijmans), Q_Y (Yang et al.) and SSIM.

All local statistics use MATLAB ``filter2(window, x, 'valid')`` (no padding), as Zhou Wang's
``ssim_index`` does; the metric maps are therefore ``window - 1`` pixels smaller than the images.
"""
from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._common import check_pair, check_triplet, filter2_sep, gaussian_1d

__all__ = ["qe", "qy", "ssim", "ssim_maps"]


def _flat_windows(x, k):
    """True where the k x k window ('valid' positions) of ``x`` holds a single value."""
    lo = sliding_window_view(x, k, axis=1).min(axis=-1)
    hi = sliding_window_view(x, k, axis=1).max(axis=-1)
    lo = sliding_window_view(lo, k, axis=0).min(axis=-1)
    hi = sliding_window_view(hi, k, axis=0).max(axis=-1)
    return lo == hi


def ssim_maps(x, y, window, c1, c2):
    """Local SSIM map and local variances (Zhou Wang's ``ssim_index`` with a separable window).

    Parameters
    ----------
    x, y : ndarray, 2-D float
    window : ndarray, 1-D
        Separable window factor (normalised to unit sum here); the 2-D window is ``outer(window, window)``.
    c1, c2 : float
        Stabilising constants of the luminance and contrast-structure terms.

    Returns
    -------
    ssim_map, var_x, var_y : ndarray
        Maps of size ``shape - len(window) + 1`` ('valid').

    Notes
    -----
    Variances are ``E[x^2] - E[x]^2``, whose round-off in a window of constant value is about
    ``1e-16 * value^2`` (~1e-11 on the 8-bit scale) and of either sign. With the tiny constants of Q_Y
    (2e-16) such noise would decide ratios like ``var_a / (var_a + var_b)``, so windows in which an image is
    constant get their exact variance and covariance, 0.
    """
    w = np.asarray(window, dtype=np.float64)
    w = w / w.sum()

    def filt(z):
        return filter2_sep(z, w, w, "valid")

    mu1, mu2 = filt(x), filt(y)
    mu1_sq, mu2_sq, mu12 = mu1 * mu1, mu2 * mu2, mu1 * mu2
    s1 = filt(x * x) - mu1_sq
    s2 = filt(y * y) - mu2_sq
    s12 = filt(x * y) - mu12
    k = w.size
    flat_x, flat_y = _flat_windows(x, k), _flat_windows(y, k)
    s1[flat_x] = 0.0
    s2[flat_y] = 0.0
    s12[flat_x | flat_y] = 0.0
    if c1 > 0 and c2 > 0:
        smap = ((2 * mu12 + c1) * (2 * s12 + c2)) / ((mu1_sq + mu2_sq + c1) * (s1 + s2 + c2))
    else:  # pragma: no cover - only with zero constants
        n1, n2 = 2 * mu12 + c1, 2 * s12 + c2
        d1, d2 = mu1_sq + mu2_sq + c1, s1 + s2 + c2
        smap = np.ones_like(mu1)
        idx = d1 * d2 > 0
        smap[idx] = n1[idx] * n2[idx] / (d1[idx] * d2[idx])
        idx = (d1 != 0) & (d2 == 0)
        smap[idx] = n1[idx] / d1[idx]
    return smap, s1, s2


def ssim(ref, f):
    """Structural similarity index (Wang et al.), full reference, of ``f`` against ``ref``.

    Zhou Wang's reference implementation: 11x11 Gaussian window (sigma 1.5), K = (0.01, 0.03), L = 255,
    'valid' filtering, mean of the SSIM map. Colour inputs are converted with MATLAB's ``rgb2gray``.

    Parameters
    ----------
    ref : array_like
        Reference (all-in-focus) image, 8-bit scale.
    f : array_like
        Test (fused) image, same shape.

    Returns
    -------
    float
        1 for identical images.

    References
    ----------
    .. [1] Z. Wang, A. C. Bovik, H. R. Sheikh, E. P. Simoncelli, "Image quality assessment: from error
       visibility to structural similarity", IEEE Trans. Image Processing 13(4), 2004, 600-612.
    """
    ref, f = check_pair(ref, f)
    smap, _, _ = ssim_maps(ref, f, gaussian_1d(11, 1.5), (0.01 * 255) ** 2, (0.03 * 255) ** 2)
    return float(smap.mean())


# Q_E: UIQI (SSIM with K = 1e-6) on 8x8 windows, as in Piella & Heijmans and the survey's toolbox.
_QE_WINDOW = np.ones(8)
_QE_C = (1e-6 * 255) ** 2


def _weighted_fusion_quality(a, b, f):
    """Piella's weighted fusion quality index Q_W (toolbox ``metricPeilla`` variant 2)."""
    _, va, vb = ssim_maps(a, b, _QE_WINDOW, _QE_C, _QE_C)
    both_zero = (va + vb) == 0
    va = va + both_zero * 0.5
    vb = vb + both_zero * 0.5
    lam = va / (va + vb)
    qa, _, _ = ssim_maps(f, a, _QE_WINDOW, _QE_C, _QE_C)
    qb, _, _ = ssim_maps(f, b, _QE_WINDOW, _QE_C, _QE_C)
    cw = np.maximum(va, vb)
    cw = cw / cw.sum()
    return float(np.sum(cw * (lam * qa + (1 - lam) * qb)))


def _edge_image(x):
    """Gradient magnitude with the toolbox's Prewitt-type masks (zero-padded 'same')."""
    gx = filter2_sep(x, [1, 1, 1], [1, 0, -1])
    gy = filter2_sep(x, [1, 0, -1], [1, 1, 1])
    return np.sqrt(gx * gx + gy * gy)


def qe(a, b, f):
    """Piella's edge-dependent fusion quality index Q_E (third variant of Piella & Heijmans).

    The weighted fusion quality index ``Q_W = sum_w c(w) [lambda(w) Q0(A,F|w) + (1 - lambda(w)) Q0(B,F|w)]``
    uses the universal image quality index Q0 (SSIM with K = 1e-6, i.e. Wang-Bovik UIQI) on 8x8 windows
    ('valid'), saliency = local variance, ``lambda = s_A / (s_A + s_B)`` (0.5 where both are zero) and
    ``c(w) = max(s_A, s_B) / sum max(s_A, s_B)``. ``Q_E = Q_W(A, B, F) * Q_W(A', B', F')`` (alpha = 1), where
    primes denote gradient-magnitude images (Prewitt-type masks, zero-padded). Range [-1, 1] in principle;
    1 when ``A = B = F``; symmetric in A and B. Higher is better.

    Parameters
    ----------
    a, b : array_like
        Source images (2-D grey or (H, W, 3) RGB, 8-bit scale).
    f : array_like
        Fused image, same shape.

    Returns
    -------
    float

    References
    ----------
    .. [1] G. Piella, H. Heijmans, "A new quality metric for image fusion", Proc. IEEE ICIP 2003, vol. 3,
       173-176.
    .. [2] Z. Wang, A. C. Bovik, "A universal image quality index", IEEE Signal Processing Letters 9(3),
       2002, 81-84.
    """
    a, b, f = check_triplet(a, b, f)
    q = _weighted_fusion_quality(a, b, f)
    qw_edge = _weighted_fusion_quality(_edge_image(a), _edge_image(b), _edge_image(f))
    return float(q * qw_edge)


_QY_WINDOW = gaussian_1d(7, 1.5)
_QY_C = 2e-16
_QY_THRESHOLD = 0.75


def qy(a, b, f):
    """Yang's SSIM-based fusion metric Q_Y.

    With local SSIM maps (7x7 Gaussian window, sigma 1.5, 'valid', C1 = C2 = 2e-16) and local variances,
    where ``SSIM(A, B) >= 0.75`` the local score is ``lambda SSIM(A, F) + (1 - lambda) SSIM(B, F)`` with
    ``lambda = s_A / (s_A + s_B)`` (0.5 where both variances are zero); elsewhere it is
    ``max(SSIM(A, F), SSIM(B, F))``. Q_Y is the mean of the local scores. 1 when ``A = B = F``
    (non-flat); symmetric in A and B. Higher is better.

    Parameters
    ----------
    a, b : array_like
        Source images (2-D grey or (H, W, 3) RGB, 8-bit scale).
    f : array_like
        Fused image, same shape.

    Returns
    -------
    float

    References
    ----------
    .. [1] C. Yang, J.-Q. Zhang, X.-R. Wang, X. Liu, "A novel similarity based quality metric for image
       fusion", Information Fusion 9(2), 2008, 156-160.
    """
    a, b, f = check_triplet(a, b, f)
    sab, va, vb = ssim_maps(a, b, _QY_WINDOW, _QY_C, _QY_C)
    saf, _, _ = ssim_maps(a, f, _QY_WINDOW, _QY_C, _QY_C)
    sbf, _, _ = ssim_maps(b, f, _QY_WINDOW, _QY_C, _QY_C)
    both_zero = (va + vb) == 0
    va = va + both_zero * 0.5
    vb = vb + both_zero * 0.5
    lam = va / (va + vb)
    similar = sab >= _QY_THRESHOLD
    local = np.where(similar, lam * saf + (1 - lam) * sbf, np.maximum(saf, sbf))
    return float(local.mean())
