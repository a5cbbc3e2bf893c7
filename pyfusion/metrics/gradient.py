"""Gradient-based fusion metric Q_G (Xydeas & Petrovic's Q^AB/F)."""
from __future__ import annotations

import numpy as np

from ._common import check_triplet, filter2_sep

__all__ = ["qg", "sobel"]

# Sigmoid constants of Xydeas & Petrovic (Electronics Letters 2000, Fig. 1), as in the survey's
# corrected toolbox: strength (Gamma, kappa, sigma) and orientation (Gamma, kappa, sigma).
_GAMMA_G, _KAPPA_G, _SIGMA_G = 0.9994, -15.0, 0.5
_GAMMA_A, _KAPPA_A, _SIGMA_A = 0.9879, -22.0, 0.8
_TINY = 1e-5  # the toolbox's guard against division by zero


def sobel(x):
    """Horizontal and vertical Sobel responses, MATLAB ``filter2`` ('same', zero padding).

    ``sx = filter2([-1 0 1; -2 0 2; -1 0 1], x)``, ``sy = filter2([-1 -2 -1; 0 0 0; 1 2 1], x)``.
    """
    sx = filter2_sep(x, [1, 2, 1], [-1, 0, 1])
    sy = filter2_sep(x, [-1, 0, 1], [1, 2, 1])
    return sx, sy


def _strength_angle(x):
    sx, sy = sobel(x)
    g = np.sqrt(sx * sx + sy * sy)
    sx = sx + (sx == 0) * _TINY
    return g, np.arctan(sy / sx)


def qg(a, b, f):
    """Gradient-based fusion metric Q_G = Q^AB/F (Xydeas & Petrovic).

    Sobel edge strength g and orientation alpha = atan(s_y / s_x) are computed for each image
    (zero-padded 'same' filtering). For a source X the relative strength is
    ``G^XF = min(g_X, g_F) / max(g_X, g_F)`` and the relative orientation ``A^XF = 1 - 2|alpha_X - alpha_F| / pi``;
    they are mapped by sigmoids ``Gamma / (1 + exp(kappa (v - sigma)))`` with (0.9994, -15, 0.5) for strength
    and (0.9879, -22, 0.8) for orientation, and ``Q^XF`` is their product. The score is the edge-strength
    weighted mean ``sum(Q^AF g_A + Q^BF g_B) / sum(g_A + g_B)`` (Eq. 8 of the paper). Zero denominators are
    guarded with 1e-5 exactly as in the toolbox. Symmetric in A and B. Higher is better; ``A = B = F``
    gives the sigmoid ceiling ``Q_G,max`` ~ 0.97479 (not exactly 1 with the published constants).

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
    .. [1] C. S. Xydeas, V. Petrovic, "Objective image fusion performance measure", Electronics Letters
       36(4), 2000, 308-309.
    """
    a, b, f = check_triplet(a, b, f)
    gf, af = _strength_angle(f)
    ga, aa = _strength_angle(a)
    gb, ab = _strength_angle(b)

    def preservation(gx, ax, gf):
        bigger = gx > gf
        gx = gx + (gx == 0) * _TINY
        r1 = gf / gx
        gf = gf + (gf == 0) * _TINY
        r2 = gx / gf
        g_rel = np.where(bigger, r1, r2)
        a_rel = 1.0 - np.abs(ax - af) * 2.0 / np.pi
        qg_ = _GAMMA_G / (1.0 + np.exp(_KAPPA_G * (g_rel - _SIGMA_G)))
        qa_ = _GAMMA_A / (1.0 + np.exp(_KAPPA_A * (a_rel - _SIGMA_A)))
        return qg_ * qa_, gx, gf

    qaf, wa, gf = preservation(ga, aa, gf)
    qbf, wb, gf = preservation(gb, ab, gf)
    num = np.sum(qaf * wa + qbf * wb)
    den = np.sum(wa + wb)
    return float(num / den)


def qg_max():
    """The value of Q_G when all three images are identical (perfect preservation everywhere)."""
    return float(_GAMMA_G / (1.0 + np.exp(_KAPPA_G * (1.0 - _SIGMA_G)))
                 * _GAMMA_A / (1.0 + np.exp(_KAPPA_A * (1.0 - _SIGMA_A))))
