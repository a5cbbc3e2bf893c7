"""Human-perception inspired fusion metrics: Q_CB (Chen & Blum) and Q_CV (Chen & Varshney).

Both filter images with a contrast sensitivity function (CSF) defined on MATLAB's ``freqspace`` grid and
applied to the centred spectrum (``ifft2(ifftshift(fftshift(fft2(x)) .* S))``), and both first stretch
each image to [0, 255] with rounding (toolbox ``normalize1``).
"""
from __future__ import annotations

import numpy as np
from scipy import fft as sfft

from ._common import check_triplet, filter2_sep, normalize255
from .gradient import sobel

__all__ = ["qcb", "qcv"]


def _freqspace(rows, cols):
    """MATLAB ``freqspace([rows, cols], 'meshgrid')``: normalised frequencies in [-1, 1)."""
    u = (np.arange(cols) - cols // 2) * (2.0 / cols)
    v = (np.arange(rows) - rows // 2) * (2.0 / rows)
    return np.meshgrid(u, v)


def _csf_filter(x, csf):
    """Filter ``x`` with a zero-phase CSF given on the centred frequency grid."""
    spec = np.fft.fftshift(sfft.fft2(x))
    return sfft.ifft2(np.fft.ifftshift(spec * csf))


# ---------------------------------------------------------------- Chen-Blum
_CB_F0, _CB_F1, _CB_A = 15.3870, 1.3456, 0.7622  # DoG CSF (Eq. of Chen & Blum, 2009)
_CB_P, _CB_Q, _CB_Z = 3.0, 2.0, 1e-4  # masking: C' = C^p / (C^q + Z)
_CB_VIEW = 30.0  # image side / 30 -> cycles per degree scaling of the toolbox ("DoG1")
_CB_HALF = 15  # 31x31 Gaussian kernels


def _cb_gaussian(sigma):
    """1-D factor of the toolbox's unnormalised 31x31 Gaussian exp(-r^2 / 2 s^2) / (2 pi s^2)."""
    x = np.arange(-_CB_HALF, _CB_HALF + 1, dtype=np.float64)
    return np.exp(-(x * x) / (2 * sigma * sigma)) / (np.sqrt(2 * np.pi) * sigma)


_CB_G1 = _cb_gaussian(2.0)
_CB_G2 = _cb_gaussian(4.0)


def _cb_masked_contrast(x):
    """Peli band-limited contrast (Gaussian sigma 2 over sigma 4, minus 1), then contrast masking."""
    num = filter2_sep(x, _CB_G1, _CB_G1, "same")
    den = filter2_sep(x, _CB_G2, _CB_G2, "same")
    with np.errstate(invalid="ignore", divide="ignore"):
        c = np.abs(num / den - 1.0)
    return c ** _CB_P / (c ** _CB_Q + _CB_Z)


def qcb(a, b, f):
    """Chen-Blum human-perception based fusion metric Q_CB.

    Each image (stretched to [0, 255]) is filtered in the frequency domain with the DoG contrast sensitivity
    function ``S(r) = exp(-(r/f0)^2) - a exp(-(r/f1)^2)`` (f0 = 15.3870, f1 = 1.3456, a = 0.7622; radial
    frequency r from ``freqspace`` scaled by image side / 30). Local band-limited contrast is
    ``C = |G_2 * I / G_4 * I - 1|`` (unnormalised 31x31 Gaussians, sigma 2 and 4, zero-padded 'same'
    filtering), masked as ``C' = C^3 / (C^2 + 1e-4)``. Information preservation is
    ``Q_XF = min(C'_X, C'_F) / max(C'_X, C'_F)``, the saliency weights are
    ``lambda_A = C'_A^2 / (C'_A^2 + C'_B^2)``, and Q_CB is the mean of ``lambda_A Q_AF + lambda_B Q_BF``.
    1 when ``A = B = F``; symmetric in A and B. Higher is better. NaN where the toolbox's formula is
    undefined (e.g. a constant image, which has no contrast anywhere).

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
    .. [1] Y. Chen, R. S. Blum, "A new automated quality assessment algorithm for image fusion", Image and
       Vision Computing 27(10), 2009, 1421-1432.
    """
    a, b, f = check_triplet(a, b, f)
    rows, cols = a.shape
    u, v = _freqspace(rows, cols)
    r = np.sqrt((u * cols / _CB_VIEW) ** 2 + (v * rows / _CB_VIEW) ** 2)
    csf = np.exp(-(r / _CB_F0) ** 2) - _CB_A * np.exp(-(r / _CB_F1) ** 2)
    ca, cb, cf = (_cb_masked_contrast(_csf_filter(normalize255(x), csf)) for x in (a, b, f))
    with np.errstate(invalid="ignore", divide="ignore"):
        qaf = np.where(ca < cf, ca / cf, cf / ca)
        qbf = np.where(cb < cf, cb / cf, cf / cb)
        wa, wb = ca * ca, cb * cb
        lam_a = wa / (wa + wb)
        lam_b = wb / (wa + wb)
    q = lam_a * qaf + lam_b * qbf
    return float(np.mean(q))


# ---------------------------------------------------------------- Chen-Varshney
_CV_BLOCK = 16
_CV_ALPHA = 5
_CV_VIEW = 8.0  # image side / 8 -> cycles per degree scaling of the toolbox ("length 3")


def _block_reduce(x, fn):
    """MATLAB ``blkproc(x, [16 16], fn)``: partial blocks at the right / bottom are zero-padded."""
    rows, cols = x.shape
    pr = (-rows) % _CV_BLOCK
    pc = (-cols) % _CV_BLOCK
    if pr or pc:
        x = np.pad(x, ((0, pr), (0, pc)))
    nr, nc = x.shape[0] // _CV_BLOCK, x.shape[1] // _CV_BLOCK
    blocks = x.reshape(nr, _CV_BLOCK, nc, _CV_BLOCK)
    return fn(blocks)


def qcv(a, b, f):
    """Chen-Varshney human-perception based fusion metric Q_CV (lower is better).

    On images stretched to [0, 255]: regional saliency ``lambda_X(w) = sum_w g_X^5`` (Sobel edge strength,
    zero-padded 'same', over 16x16 blocks); the difference images ``A - F`` and ``B - F`` are filtered with
    the Mannos-Sakrison CSF ``2.6 (0.0192 + 0.144 r) exp(-(0.144 r)^1.1)`` (radial frequency r from
    ``freqspace`` scaled by image side / 8) and their mean squared value per block gives ``D_X(w)``.
    ``Q_CV = sum_w (lambda_A D_A + lambda_B D_B) / sum_w (lambda_A + lambda_B)``. Partial blocks at the
    right and bottom edges are zero-padded to 16x16 (MATLAB ``blkproc``). 0 when ``A = B = F``;
    symmetric in A and B. Lower is better.

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
    .. [1] H. Chen, P. K. Varshney, "A human perception inspired quality metric for image fusion based on
       regional information", Information Fusion 8(2), 2007, 193-207.
    """
    a, b, f = check_triplet(a, b, f)
    a, b, f = normalize255(a), normalize255(b), normalize255(f)
    rows, cols = a.shape

    def saliency(x):
        sx, sy = sobel(x)
        g = np.sqrt(sx * sx + sy * sy)
        return _block_reduce(g ** _CV_ALPHA, lambda blk: blk.sum(axis=(1, 3)))

    lam_a, lam_b = saliency(a), saliency(b)
    u, v = _freqspace(rows, cols)
    r = np.sqrt((u * cols / _CV_VIEW) ** 2 + (v * rows / _CV_VIEW) ** 2)
    csf = 2.6 * (0.0192 + 0.144 * r) * np.exp(-(0.144 * r) ** 1.1)

    def distortion(d):
        filtered = _csf_filter(d, csf)
        return _block_reduce(filtered * filtered, lambda blk: blk.mean(axis=(1, 3)))

    d_a, d_b = distortion(a - f), distortion(b - f)
    total = np.sum(lam_a + lam_b)
    if total == 0:   # sources without saliency anywhere (e.g. constant): no distortion can be weighted, so 0
        return 0.0
    q = np.sum(lam_a * d_a + lam_b * d_b) / total
    return float(np.real(q))
