"""Information-theory based fusion metrics: QMI (normalized mutual information) and QNCIE.

Both follow the conventions of Zheng Liu's fusion-metric toolbox (TPAMI 2012) as used by the
multi-focus fusion survey of Liu et al. (2020): each image is first stretched to [0, 255] and rounded
to integer levels, histograms have 256 bins (one per level), and logarithms are base 2.
"""
from __future__ import annotations

import numpy as np

from ._common import check_triplet, normalize255

__all__ = ["qmi", "qncie", "entropy_terms"]

_LEVELS = 256


def _joint_hist(x, y):
    """Joint probability table of two images of integer levels 0..255 (x indexes rows)."""
    idx = x.astype(np.int64).ravel() * _LEVELS + y.astype(np.int64).ravel()
    h = np.bincount(idx, minlength=_LEVELS * _LEVELS).astype(np.float64).reshape(_LEVELS, _LEVELS)
    return h / h.sum()


def _entropy(p):
    p = p[p > 0]
    return float(-np.sum(p * np.log2(p)))


def entropy_terms(x, y):
    """Marginal and joint entropies (bits) of two images of integer levels 0..255.

    Returns
    -------
    h_x, h_y, h_xy : float
    """
    h = _joint_hist(x, y)
    return _entropy(h.sum(axis=1)), _entropy(h.sum(axis=0)), _entropy(h)


def qmi(a, b, f):
    """Normalized mutual information fusion metric Q_MI (Hossny et al.).

    ``Q_MI = 2 * [ I(A;F) / (H(A) + H(F)) + I(B;F) / (H(B) + H(F)) ]``, with entropies from 256-bin
    histograms of the images stretched to [0, 255] and rounded (toolbox ``normalize1``), log base 2.
    Range [0, 2]; 2 when ``A = B = F`` (non-constant). Symmetric in A and B. Higher is better. A term whose
    entropy sum is zero (both images constant) counts as 0 (MATLAB would return NaN).

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
    .. [1] M. Hossny, S. Nahavandi, D. Creighton, "Comments on 'Information measure for performance of
       image fusion'", Electronics Letters 44(18), 2008, 1066-1067.
    .. [2] Z. Liu et al., "Objective assessment of multiresolution image fusion algorithms for context
       enhancement in night vision: a comparative study", IEEE TPAMI 34(1), 2012, 94-109.
    """
    a, b, f = check_triplet(a, b, f)
    a, b, f = normalize255(a), normalize255(b), normalize255(f)
    ha, hf, haf = entropy_terms(a, f)
    hb, hf2, hbf = entropy_terms(b, f)
    total = 0.0
    for hx, hy, hxy in ((ha, hf, haf), (hb, hf2, hbf)):
        denom = hx + hy
        if denom > 0:
            total += (hx + hy - hxy) / denom
    return float(2.0 * total)


def _ncc(x, y):
    """Nonlinear correlation coefficient: mutual information with entropies in base-256 units."""
    hx, hy, hxy = entropy_terms(x, y)
    return (hx + hy - hxy) / np.log2(_LEVELS)


def qncie(a, b, f):
    """Nonlinear correlation information entropy Q_NCIE (Wang et al.).

    The nonlinear correlation coefficients NCC (mutual information of 256-bin histograms, normalised by
    log2 256) of the pairs (A, B), (A, F), (B, F) form a 3x3 correlation matrix R with unit diagonal; with
    its eigenvalues r_i, ``Q_NCIE = 1 + sum_i (r_i / 3) log_256(r_i / 3)``. Images are first stretched to
    [0, 255] and rounded (toolbox ``normalize1``). Range [0, 1]; 1 when all three NCCs are 1 (eigenvalues
    3, 0, 0, taking 0 log 0 = 0), i.e. ``A = B = F`` with all 256 levels equally frequent; for ``A = B = F`` in
    general ``NCC = H(A) / 8 < 1``. Symmetric in A and B. Higher is better.

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
    .. [1] Q. Wang, Y. Shen, J. Q. Zhang, "A nonlinear correlation measure for multivariable data set",
       Physica D 200(3-4), 2005, 287-295.
    .. [2] Q. Wang, Y. Shen, J. Jin, "Performance evaluation of image fusion techniques", in Image
       Fusion: Algorithms and Applications (T. Stathaki, ed.), Academic Press, 2008, 469-492.
    """
    a, b, f = check_triplet(a, b, f)
    a, b, f = normalize255(a), normalize255(b), normalize255(f)
    nab, naf, nbf = _ncc(a, b), _ncc(a, f), _ncc(b, f)
    r = np.linalg.eigvalsh(np.array([[1.0, nab, naf], [nab, 1.0, nbf], [naf, nbf, 1.0]]))
    k = 3.0
    p = r[r > 0] / k
    hr = -np.sum(p * np.log2(p)) / np.log2(_LEVELS)
    return float(1.0 - hr)
