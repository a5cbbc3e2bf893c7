"""The 2-D dual-tree complex wavelet transform (DT-CWT) of Kingsbury [1]_ [2]_: forward and inverse, J levels.

Two real wavelet trees (a and b) whose filters differ by a quarter-sample shift per level act as the real and
imaginary parts of complex wavelets: the transform is nearly shift invariant (the energy of each band barely
changes when the image moves by a pixel, unlike the critically sampled DWT) and directional, with six complex
sub-bands per level oriented at 15, 45, 75, 105, 135 and 165 degrees [3]_. It is redundant by 4:1 in 2-D.

Layout (as in Kingsbury's MATLAB toolbox and its ports): level 1 filters the image without decimation with a
near-symmetric odd-length biorthogonal pair (:data:`BIORT`); levels 2..J filter the lowpass with the even-length
Q-shift pair (:data:`QSHIFT`), tree a on one sample parity and tree b (the time reverse) on the other, and
decimate by 2. In each level the three real highpass images (column highpass / row lowpass, column lowpass /
row highpass, both highpass) are each at twice the band resolution; each 2x2 quad of samples holds the four
trees, combined into two complex sub-bands (``q2c``; the inverse is ``c2q``).

Borders: half-sample symmetric extension (``x1 x0 | x0 x1``) before every filter. Sizes: an image of odd
height (width) is first extended by a copy of its last row (column); a level's lowpass whose height (width)
is not a multiple of 4 is extended by a copy of its first and last rows (columns) before the Q-shift filters.
:func:`inverse` undoes both and returns the input's shape. Reconstruction is perfect up to rounding (about
1e-13 on 0-255 images).

Orientation of sub-band ``k`` (``highpasses[level][..., k, :, :]``): it responds to edges and stripes lying at
:data:`ORIENTATIONS` ``[k]`` degrees, counted counter-clockwise from the image's horizontal axis with the
vertical axis pointing up (rows counted downwards): bands 0 and 5 (15, 165 degrees) to near-horizontal
features, 2 and 3 (75, 105) to near-vertical ones, 1 and 4 (45, 135) to diagonals.

References
----------
.. [1] N. Kingsbury, "Complex wavelets for shift invariant analysis and filtering of signals", Applied and
   Computational Harmonic Analysis 10 (3) (2001) 234-253.
.. [2] N. Kingsbury, "Design of Q-shift complex wavelets for image processing using frequency domain energy
   minimization", Proc. IEEE ICIP (2003) (the ``qshift_06`` filters); filter coefficients as published in
   Kingsbury's DT-CWT MATLAB toolbox (``near_sym_a.mat``, ``qshift_06.mat``, ...), also distributed with the
   ``dtcwt`` and ``pytorch_wavelets`` Python packages.
.. [3] I.W. Selesnick, R.G. Baraniuk, N.G. Kingsbury, "The dual-tree complex wavelet transform", IEEE Signal
   Processing Magazine 22 (6) (2005) 123-151.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BIORT", "QSHIFT", "ORIENTATIONS", "Pyramid", "biort_filters", "qshift_filters", "forward", "inverse"]

#: Orientation in degrees of each of the six complex sub-bands of a level (see the module notes).
ORIENTATIONS = (15, 45, 75, 105, 135, 165)

#: Level-1 biorthogonal filters, as published: name -> (analysis lowpass ``h0o``, synthesis lowpass ``g0o``).
#: The highpasses are their modulations (:func:`biort_filters`).
BIORT = {
    # Antonini-like (5,7)-tap near-symmetric filters
    "near_sym_a": ([-0.05, 0.25, 0.6, 0.25, -0.05],
                   [-0.010714285714285713, -0.05357142857142857, 0.26071428571428573, 0.6071428571428571,
                    0.26071428571428573, -0.05357142857142857, -0.010714285714285713]),
    # (13,19)-tap near-orthogonal filters
    "near_sym_b": ([-0.0017578125, 0.0, 0.022265625, -0.046875, -0.0482421875, 0.296875, 0.55546875, 0.296875,
                    -0.0482421875, -0.046875, 0.022265625, 0.0, -0.0017578125],
                   [7.062639508928571e-05, 0.0, -0.0013419015066964285, -0.0018833705357142855,
                    0.007156808035714285, 0.023856026785714284, -0.05564313616071428, -0.05168805803571428,
                    0.29975760323660716, 0.5594308035714286, 0.29975760323660716, -0.05168805803571428,
                    -0.05564313616071428, 0.023856026785714284, 0.007156808035714285, -0.0018833705357142855,
                    -0.0013419015066964285, 0.0, 7.062639508928571e-05]),
    # LeGall (5,3)-tap filters
    "legall": ([-0.125, 0.25, 0.75, 0.25, -0.125], [0.25, 0.5, 0.25]),
}

#: Q-shift filters of levels 2..J, as published: name -> tree a's analysis lowpass ``h0a``; the other seven
#: filters are its reverse and modulations (:func:`qshift_filters`).
QSHIFT = {
    # (10,10)-tap, designed by frequency-domain energy minimisation [2]
    "qshift_06": [0.03516383657149474, 0.0, -0.08832942445107285, 0.23389032060723564, 0.7602723690661257,
                  0.5875182977235605, 0.0, -0.11430183714424873, 0.0, 0.0],
    # (10,10)-tap
    "qshift_a": [0.051130405283831656, -0.013975370246888838, -0.10983605166597087, 0.26383956105893763,
                 0.7666284677930372, 0.5636557101270515, 0.0008736226952170968, -0.1002312195074762,
                 -0.0016896812725281543, -0.006181881892116438],
    # (14,14)-tap
    "qshift_b": [0.003253142763653182, -0.00388321199915849, 0.03466034684485349, -0.03887280126882779,
                 -0.11720388769911527, 0.27529538466888204, 0.7561456438925225, 0.5688104207121227,
                 0.011866092033797, -0.1067118046866654, 0.023825384794920298, 0.01702522388155399,
                 -0.005439475937274115, -0.004556895628475491],
}

# The three real highpass images of a level -> the two complex sub-bands each one gives.
_QUADS = (("hl", (0, 5)), ("lh", (2, 3)), ("hh", (1, 4)))  # (column filter, row filter) = (h, l), (l, h), (h, h)


def _modulate(h: np.ndarray) -> np.ndarray:
    """``(-1)^(n - c) h[n]`` with ``c`` the centre tap of the odd-length ``h``."""
    n = np.arange(len(h))
    return np.where((n - len(h) // 2) % 2, -h, h)


def biort_filters(name: str) -> dict:
    """The level-1 filters ``h0o, h1o, g0o, g1o`` (analysis / synthesis, lowpass / highpass) of :data:`BIORT` ``name``.

    Raises
    ------
    ValueError
        Unknown name.
    """
    if name not in BIORT:
        raise ValueError(f"unknown level-1 filters {name!r}; choose one of {', '.join(BIORT)}")
    h0o, g0o = (np.array(f, dtype=np.float64) for f in BIORT[name])
    return {"h0o": h0o, "h1o": _modulate(g0o), "g0o": g0o, "g1o": _modulate(h0o)}


def qshift_filters(name: str) -> dict:
    """The Q-shift filters ``h0a, h0b, h1a, h1b`` (analysis) and ``g0a, g0b, g1a, g1b`` (synthesis) of
    :data:`QSHIFT` ``name``: tree b is tree a reversed, the highpasses alternate the lowpasses' signs, and the
    synthesis filters are the analysis ones reversed (the Q-shift pairs are orthonormal).

    Raises
    ------
    ValueError
        Unknown name.
    """
    if name not in QSHIFT:
        raise ValueError(f"unknown Q-shift filters {name!r}; choose one of {', '.join(QSHIFT)}")
    h0a = np.array(QSHIFT[name], dtype=np.float64)
    h0b = h0a[::-1].copy()
    h1a = np.where(np.arange(len(h0b)) % 2, -h0b, h0b)
    h1b = h1a[::-1].copy()
    return {"h0a": h0a, "h0b": h0b, "h1a": h1a, "h1b": h1b, "g0a": h0b, "g0b": h0a, "g1a": h1b, "g1b": h1a}


# ------------------------------------------------------------------------------------------ 1-D filtering
# Every function filters along axis -2 (the columns) of a (..., rows, cols) array; rows are filtered on the
# swapped view (:func:`_rows`). Zero taps are skipped (they add exact zeros).


def _rows(fn, x, *args):
    return np.swapaxes(fn(np.swapaxes(x, -1, -2), *args), -1, -2)


def _pad(x: np.ndarray, n: int) -> np.ndarray:
    """Half-sample symmetric extension by ``n`` rows on each side (periodic mirror when ``n`` exceeds them)."""
    return np.pad(x, [(0, 0)] * (x.ndim - 2) + [(n, n), (0, 0)], mode="symmetric")


def _taps(p: np.ndarray, h: np.ndarray, starts, step: int, count: int) -> np.ndarray:
    """``sum_j h[j] p[starts[j] + step * k]`` for ``k < count`` (over the taps ``j`` where ``starts[j]`` is not None)."""
    out = None
    for j, s in enumerate(starts):
        if s is None or h[j] == 0.0:
            continue
        t = p[..., s:s + step * (count - 1) + 1:step, :] * h[j]
        if out is None:
            out = t
        else:
            out += t
    return np.zeros(p.shape[:-2] + (count, p.shape[-1])) if out is None else out


def _colfilter(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    """Odd-length ``h`` on the columns, no decimation: ``y[n] = sum_j h[j] x[n + m//2 - j]``, same size."""
    from scipy import ndimage  # imported where used: it costs a fifth of a second of every start

    return ndimage.convolve1d(x, h, axis=-2, mode="reflect")  # scipy's "reflect": half-sample symmetric


def _coldfilt(x: np.ndarray, ha: np.ndarray, hb: np.ndarray) -> np.ndarray:
    """Q-shift analysis with decimation by 2 of each tree: rows ``r`` (a multiple of 4) -> ``r / 2``.

    Tree a filters the even rows with ``ha`` and tree b the odd rows with ``hb``, each decimated by 2:
    ``ya[n] = sum_j ha[j] x[4n + m - 2j]``, ``yb[n] = sum_j hb[j] x[4n + m + 1 - 2j]`` (``m = len(ha)``,
    symmetric extension); the outputs interleave, tree a first when ``ha . hb > 0``, else tree b first.
    """
    r, m = x.shape[-2], len(ha)
    if r % 4:
        raise ValueError(f"the Q-shift analysis needs a multiple of 4 rows, got {r}")
    p = _pad(x, m)
    ya = _taps(p, ha, [2 * m - 2 * j for j in range(m)], 4, r // 4)
    yb = _taps(p, hb, [2 * m + 1 - 2 * j for j in range(m)], 4, r // 4)
    y = np.empty(x.shape[:-2] + (r // 2, x.shape[-1]))
    first, second = (ya, yb) if ha @ hb > 0 else (yb, ya)
    y[..., 0::2, :], y[..., 1::2, :] = first, second
    return y


def _interp(p: np.ndarray, h: np.ndarray, offset: int, parity: int, m2: int, r: int) -> np.ndarray:
    """``out[l] = sum_j h[j] x[l + offset - j]`` for ``l < r``, over the terms whose ``x`` index has ``parity``
    (one tree's samples: the other tree's are zeros here), ``x`` extended by ``m2`` rows in ``p``."""
    out = np.empty(p.shape[:-2] + (r, p.shape[-1]))
    for q in (0, 1):  # output parity
        starts = [q + offset - j + m2 if (q + offset - j - parity) % 2 == 0 else None for j in range(len(h))]
        out[..., q::2, :] = _taps(p, h, starts, 2, r // 2)
    return out


def _colifilt(x: np.ndarray, ha: np.ndarray, hb: np.ndarray) -> np.ndarray:
    """Q-shift synthesis with interpolation by 2: rows ``r`` (even) -> ``2 r``; the adjoint layout of
    :func:`_coldfilt` (each tree upsampled by 2 and filtered, the two interleaved)."""
    r, m2 = x.shape[-2], len(ha) // 2
    p = _pad(x, m2)
    if ha @ hb > 0:
        even, odd = _interp(p, ha, m2 - 1, 0, m2, r), _interp(p, hb, m2, 1, m2, r)
    else:
        even, odd = _interp(p, ha, m2, 1, m2, r), _interp(p, hb, m2 - 1, 0, m2, r)
    y = np.empty(x.shape[:-2] + (2 * r, x.shape[-1]))
    y[..., 0::2, :], y[..., 1::2, :] = even, odd
    return y


# ------------------------------------------------------------------------------------- quads <-> complex
def _q2c(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 2x2 quads ``[[a, b], [c, d]]`` of ``y`` -> the two complex sub-bands ``p - q`` and ``p + q``,
    ``p = (a + jb) / sqrt 2``, ``q = (d - jc) / sqrt 2``."""
    s = np.sqrt(0.5)
    p = (y[..., 0::2, 0::2] + 1j * y[..., 0::2, 1::2]) * s
    q = (y[..., 1::2, 1::2] - 1j * y[..., 1::2, 0::2]) * s
    return p - q, p + q


def _c2q(z1: np.ndarray, z2: np.ndarray) -> np.ndarray:
    """The inverse of :func:`_q2c`."""
    s = np.sqrt(0.5)
    p, q = (z1 + z2) * s, (z2 - z1) * s  # a + jb, d - jc
    y = np.empty(z1.shape[:-2] + (2 * z1.shape[-2], 2 * z1.shape[-1]))
    y[..., 0::2, 0::2], y[..., 0::2, 1::2] = p.real, p.imag
    y[..., 1::2, 0::2], y[..., 1::2, 1::2] = -q.imag, q.real
    return y


# ---------------------------------------------------------------------------------------------- transform
@dataclass(frozen=True)
class Pyramid:
    """A DT-CWT of a stack of images.

    Attributes
    ----------
    lowpass : numpy.ndarray
        ``(..., h_J, w_J)`` float64: the real lowpass of the coarsest level (level 1's is the image's size).
    highpasses : tuple of numpy.ndarray
        Per level 1..J, ``(..., 6, h_k, w_k)`` complex128: the six oriented sub-bands (:data:`ORIENTATIONS`),
        ``h_1 = ceil(H / 2)``, then about half of the level before.
    shape : tuple of int
        ``(H, W)`` of the transformed images.
    """

    lowpass: np.ndarray
    highpasses: tuple
    shape: tuple


def _bands(hl, lh, hh) -> np.ndarray:
    out = [None] * 6
    for y, (_, idx) in zip((hl, lh, hh), _QUADS):
        out[idx[0]], out[idx[1]] = _q2c(y)
    return np.stack(out, axis=-3)


def _grow(x: np.ndarray) -> np.ndarray:
    """Copies of the first and last row (column) around ``x`` when their count is not a multiple of 4."""
    if x.shape[-2] % 4:
        x = np.concatenate([x[..., :1, :], x, x[..., -1:, :]], axis=-2)
    if x.shape[-1] % 4:
        x = np.concatenate([x[..., :1], x, x[..., -1:]], axis=-1)
    return x


def forward(images, *, levels: int = 4, biort: str = "near_sym_a", qshift: str = "qshift_06") -> Pyramid:
    """The J-level 2-D DT-CWT of an image or a stack of images.

    Parameters
    ----------
    images : array_like
        ``(H, W)`` or ``(..., H, W)`` real, ``H, W >= 2``; every leading index is transformed on its own.
    levels : int
        J >= 1.
    biort : str
        Level-1 filters, a key of :data:`BIORT`.
    qshift : str
        Filters of levels 2..J, a key of :data:`QSHIFT`.

    Returns
    -------
    Pyramid

    Raises
    ------
    ValueError
        Bad shape, level count or filter name.
    """
    x = np.asarray(images, dtype=np.float64)
    if x.ndim < 2 or min(x.shape[-2:]) < 2:
        raise ValueError(f"images must be (..., H, W) with H, W >= 2, got shape {x.shape}")
    if int(levels) != levels or levels < 1:
        raise ValueError(f"levels must be a positive integer, got {levels!r}")
    b, q = biort_filters(biort), qshift_filters(qshift) if levels > 1 else None
    shape = x.shape[-2:]
    if shape[0] % 2:
        x = np.concatenate([x, x[..., -1:, :]], axis=-2)
    if shape[1] % 2:
        x = np.concatenate([x, x[..., -1:]], axis=-1)
    lo, hi = _colfilter(x, b["h0o"]), _colfilter(x, b["h1o"])
    ll = _rows(_colfilter, lo, b["h0o"])
    highs = [_bands(_rows(_colfilter, hi, b["h0o"]), _rows(_colfilter, lo, b["h1o"]), _rows(_colfilter, hi, b["h1o"]))]
    for _ in range(1, int(levels)):
        ll = _grow(ll)
        lo, hi = _coldfilt(ll, q["h0b"], q["h0a"]), _coldfilt(ll, q["h1b"], q["h1a"])
        ll = _rows(_coldfilt, lo, q["h0b"], q["h0a"])
        highs.append(_bands(_rows(_coldfilt, hi, q["h0b"], q["h0a"]), _rows(_coldfilt, lo, q["h1b"], q["h1a"]),
                            _rows(_coldfilt, hi, q["h1b"], q["h1a"])))
    return Pyramid(ll, tuple(highs), tuple(shape))


def _quads(z: np.ndarray):
    return {name: _c2q(z[..., i, :, :], z[..., k, :, :]) for name, (i, k) in _QUADS}


def inverse(pyramid: Pyramid, *, biort: str = "near_sym_a", qshift: str = "qshift_06") -> np.ndarray:
    """The image(s) of a DT-CWT :class:`Pyramid` (the filters must be those of :func:`forward`).

    Returns
    -------
    numpy.ndarray
        ``(..., H, W)`` float64, ``(H, W) = pyramid.shape``.
    """
    b = biort_filters(biort)
    highs = pyramid.highpasses
    q = qshift_filters(qshift) if len(highs) > 1 else None
    z = np.asarray(pyramid.lowpass, dtype=np.float64)
    for k in range(len(highs) - 1, 0, -1):
        t = _quads(highs[k])
        y1 = _colifilt(z, q["g0b"], q["g0a"]) + _colifilt(t["hl"], q["g1b"], q["g1a"])
        y2 = _colifilt(t["lh"], q["g0b"], q["g0a"]) + _colifilt(t["hh"], q["g1b"], q["g1a"])
        z = _rows(_colifilt, y1, q["g0b"], q["g0a"]) + _rows(_colifilt, y2, q["g1b"], q["g1a"])
        want = 2 * np.array(highs[k - 1].shape[-2:])  # undo _grow
        if z.shape[-2] != want[0]:
            z = z[..., 1:-1, :]
        if z.shape[-1] != want[1]:
            z = z[..., 1:-1]
    t = _quads(highs[0])
    y1 = _colfilter(z, b["g0o"]) + _colfilter(t["hl"], b["g1o"])
    y2 = _colfilter(t["lh"], b["g0o"]) + _colfilter(t["hh"], b["g1o"])
    z = _rows(_colfilter, y1, b["g0o"]) + _rows(_colfilter, y2, b["g1o"])
    h, w = pyramid.shape
    return z[..., :h, :w]
