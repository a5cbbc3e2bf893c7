"""Focus detection: score map -> focus map -> binary map ([Liu2017] Sec. 3.3.1-3.3.2).

The deploy net gives one score per 16x16 patch at stride 2 (``pyfusion.net.score_map``): score ``S[i, j]``
is the probability that source A is in focus in the patch whose top-left pixel is ``(2i, 2j)``.
:func:`focus_map` spreads those scores back to pixels by averaging over all overlapping patches, and
:func:`binary_map` thresholds the result (initial segmentation).

Boundary conventions
--------------------
* A patch that sticks out of the image (for odd H or W the deploy net's last patch row/column starts at
  ``H - 15`` because Caffe pools in ceil mode) counts only for the pixels it covers inside the image, exactly
  as the authors' MATLAB loop clips ``temp_size_y = hei - jj + 1``. With the deploy net's
  ``(ceil(H/2) - 7) x (ceil(W/2) - 7)`` score map every pixel is therefore covered.
* If a shorter score map is given (e.g. ``floor((H - 16)/2) + 1`` rows from a "valid patches only" sampler),
  the bottom rows / right columns that no patch covers take the value of the nearest covered row / column
  (edge replication) instead of the authors' 0/0 = NaN.
* Threshold: a pixel is 1 ("A in focus") when its focus value is **strictly greater** than 0.5, as in the
  authors' code (``decisionMap(focusMap > 0.5) = 1``); exactly 0.5 goes to B.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207, Sec. 3.3.1 (Fig. 5: score map and focus map), Sec. 3.3.2 (Eq. 3).
"""
from __future__ import annotations

import numpy as np

from pyfusion.constants import PATCH, STRIDE, THRESHOLD

__all__ = ["focus_map", "binary_map"]


def _patch_ranges(n: int, count: int, patch: int, stride: int):
    """For each pixel index 0..n-1 along one axis: the half-open range [lo, hi) of patches covering it.

    Patch ``i`` covers pixels ``[stride*i, stride*i + patch)``; pixel ``y`` is covered by the ``i`` with
    ``(y - patch + 1)/stride <= i <= y/stride``, clipped to ``[0, count)``.
    """
    y = np.arange(n)
    lo = np.clip(-((patch - 1 - y) // stride), 0, count)  # ceil((y - patch + 1) / stride)
    hi = np.clip(y // stride + 1, 0, count)
    return lo, hi


def _distinct(lo: np.ndarray, hi: np.ndarray):
    """The distinct ``(lo, hi)`` pairs (as two arrays) and how many positions have each (``lo``, ``hi`` ascend,
    so equal pairs are adjacent)."""
    pairs, inverse = np.unique(np.stack([lo, hi]), axis=1, return_inverse=True)
    return (pairs[0], pairs[1]), np.bincount(inverse.reshape(-1), minlength=pairs.shape[1])


def focus_map(scores: np.ndarray, shape, *, patch: int = PATCH, stride: int = STRIDE) -> np.ndarray:
    """Focus map: each pixel's average score over all ``patch x patch`` patches (stride ``stride``) covering it.

    O(pixels): a summed-area table of the score map gives each pixel's patch-sum in four look-ups (done once per
    distinct pair of row and column patch ranges).

    Parameters
    ----------
    scores : numpy.ndarray
        2-D score map; ``scores[i, j]`` belongs to the patch with top-left pixel ``(stride*i, stride*j)``.
    shape : tuple of int
        ``(H, W)`` of the source images.
    patch, stride : int, optional
        Patch size and stride (defaults: ``constants.PATCH`` = 16, ``constants.STRIDE`` = 2).

    Returns
    -------
    numpy.ndarray
        float64 ``(H, W)`` map with values in the range of ``scores``. Patches extending past the image count
        for the pixels they cover; pixels covered by no patch copy the nearest covered row/column (see the
        module docstring).

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207, Sec. 3.3.1, Fig. 5.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 2 or s.size == 0:
        raise ValueError(f"score map must be a non-empty 2-D array, got shape {s.shape}")
    h, w = int(shape[0]), int(shape[1])
    if h < 1 or w < 1:
        raise ValueError(f"image shape must be positive, got {shape}")
    sat = np.zeros((s.shape[0] + 1, s.shape[1] + 1))
    np.cumsum(np.cumsum(s, axis=0), axis=1, out=sat[1:, 1:])
    r0, r1 = _patch_ranges(h, s.shape[0], patch, stride)
    c0, c1 = _patch_ranges(w, s.shape[1], patch, stride)
    rows = int(np.count_nonzero(r1 > r0))  # covered pixels form a top-left rectangle
    cols = int(np.count_nonzero(c1 > c0))
    if rows == 0 or cols == 0:
        raise ValueError(f"score map {s.shape} covers no pixel of a {h}x{w} image")
    # pixels with the same patch ranges (pairs of rows / columns at stride 2) have the same value: compute each
    # distinct (row range, column range) once, then spread it to its pixels
    (a0, a1), rrep = _distinct(r0[:rows], r1[:rows])
    (b0, b1), crep = _distinct(c0[:cols], c1[:cols])
    total = sat[a1][:, b1] - sat[a0][:, b1] - sat[a1][:, b0] + sat[a0][:, b0]
    mean = total / np.outer(a1 - a0, b1 - b0).astype(np.float64)
    out = np.empty((h, w))
    out[:rows, :cols] = np.repeat(np.repeat(mean, rrep, axis=0), crep, axis=1)
    out[rows:, :cols] = out[rows - 1, :cols]
    out[:, cols:] = out[:, cols - 1:cols]
    return out


def binary_map(focus: np.ndarray, *, threshold: float = THRESHOLD) -> np.ndarray:
    """Initial segmentation: 1 where ``focus > threshold`` (strictly), else 0 (Eq. 3 of [1]_).

    Parameters
    ----------
    focus : numpy.ndarray
        Focus map from :func:`focus_map`.
    threshold : float, optional
        Default ``constants.THRESHOLD`` = 0.5. Ties go to source B, as in the authors' code.

    Returns
    -------
    numpy.ndarray
        float64 map of 0.0 and 1.0.

    References
    ----------
    .. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
       network", Information Fusion 36 (2017) 191-207, Sec. 3.3.2, Eq. (3).
    """
    return (np.asarray(focus) > threshold).astype(np.float64)
