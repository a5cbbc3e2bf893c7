"""Full-reference image quality: PSNR (SSIM lives in :mod:`pyfusion.metrics.structural`)."""
from __future__ import annotations

import numpy as np

from ._common import check_pair

__all__ = ["psnr"]


def psnr(ref, f, peak=255.0):
    """Peak signal-to-noise ratio of ``f`` against the reference ``ref``, in dB.

    ``PSNR = 10 log10(peak^2 / MSE)`` with the mean squared error over all pixels of the grey images
    (colour inputs are converted with MATLAB's ``rgb2gray``). Identical images give ``inf``.

    Parameters
    ----------
    ref : array_like
        Reference (all-in-focus) image, 8-bit scale.
    f : array_like
        Test (fused) image, same shape.
    peak : float, optional
        Peak signal value, 255 for 8-bit images.

    Returns
    -------
    float

    References
    ----------
    .. [1] A. Hore, D. Ziou, "Image quality metrics: PSNR vs. SSIM", Proc. ICPR 2010, 2366-2369.
    """
    ref, f = check_pair(ref, f)
    mse = float(np.mean((ref - f) ** 2))
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(peak * peak / mse))
