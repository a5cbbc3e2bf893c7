"""Shared helpers of the fusion metrics: input checks, colour conversion and MATLAB-compatible filtering.

The published values these metrics are checked against were computed with MATLAB code, so a few of
MATLAB's conventions are reproduced here on purpose:

* ``rgb2gray`` uses the luma row of the inverse NTSC (YIQ) matrix, 0.298936 R + 0.587043 G + 0.114021 B,
  and rounds back to ``uint8`` for ``uint8`` input (half away from zero, saturating);
* ``filter2(h, x, shape)`` is a *correlation* with zero padding ('same') or without padding ('valid');
* ``round`` rounds halves away from zero (``numpy.round`` rounds them to even).
"""
from __future__ import annotations

import numpy as np

__all__ = [
    "RGB2GRAY_WEIGHTS",
    "rgb2gray",
    "as_gray",
    "check_pair",
    "check_triplet",
    "matlab_round",
    "normalize255",
    "filter2_sep",
    "gaussian_1d",
]

# MATLAB rgb2gray: first row of inv([1 .956 .621; 1 -.272 -.647; 1 -1.106 1.703]).
RGB2GRAY_WEIGHTS = np.linalg.inv(
    np.array([[1.0, 0.956, 0.621], [1.0, -0.272, -0.647], [1.0, -1.106, 1.703]])
)[0]

#: smallest side accepted by the metrics (the largest 'valid' window used is 11 pixels)
MIN_SIDE = 16


def matlab_round(x):
    """Round halves away from zero, as MATLAB's ``round`` does."""
    x = np.asarray(x, dtype=np.float64)
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def rgb2gray(img):
    """Convert an RGB image to grey levels with MATLAB's ``rgb2gray`` weights.

    Parameters
    ----------
    img : ndarray, shape (H, W, 3)
        Colour image. ``uint8`` input is rounded back to ``uint8`` levels, as MATLAB does
        (half away from zero, saturated to [0, 255]); other dtypes are weighted without rounding.

    Returns
    -------
    ndarray of float64, shape (H, W)
    """
    img = np.asarray(img)
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"rgb2gray expects an (H, W, 3) array, got shape {img.shape}")
    g = img.astype(np.float64) @ RGB2GRAY_WEIGHTS
    if img.dtype == np.uint8:
        g = np.clip(matlab_round(g), 0, 255)
    return g


def as_gray(img, name="image"):
    """Validate one image and return it as a 2-D float64 array of grey levels.

    Accepts a 2-D array, an (H, W, 1) array, or an (H, W, 3) RGB array (converted with :func:`rgb2gray`).
    Values are expected on the [0, 255] scale of 8-bit images; they are not rescaled.

    Raises
    ------
    ValueError
        If the array is not an image, is too small, or holds non-finite values.
    """
    arr = np.asarray(img)
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise ValueError(f"{name}: expected a numeric array, got dtype {arr.dtype}")
    if np.iscomplexobj(arr):
        raise ValueError(f"{name}: complex images are not supported")
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[:, :, 0]
    if arr.ndim == 3 and arr.shape[2] == 3:
        out = rgb2gray(arr)
    elif arr.ndim == 2:
        out = arr.astype(np.float64)
    else:
        raise ValueError(f"{name}: expected a 2-D grey image or an (H, W, 3) colour image, got shape {arr.shape}")
    if min(out.shape) < MIN_SIDE:
        raise ValueError(f"{name}: image of shape {out.shape} is too small (each side must be >= {MIN_SIDE})")
    if not np.all(np.isfinite(out)):
        raise ValueError(f"{name}: image contains non-finite values (NaN or inf)")
    return out


def _check_shapes(named):
    shapes = {n: np.shape(x) for n, x in named}
    first = named[0][1].shape
    if any(x.shape != first for _, x in named):
        desc = ", ".join(f"{n}={s}" for n, s in shapes.items())
        raise ValueError(f"images must have the same shape, got {desc}")


def check_triplet(a, b, f):
    """Validate the two source images and the fused image; return them as 2-D float64 grey arrays.

    Raises
    ------
    ValueError
        On mismatched shapes (after colour conversion), non-finite values, or non-image arrays.
    """
    named = [("a", as_gray(a, "a")), ("b", as_gray(b, "b")), ("f", as_gray(f, "f"))]
    _check_shapes(named)
    return named[0][1], named[1][1], named[2][1]


def check_pair(ref, f):
    """Validate a reference and a test image; return them as 2-D float64 grey arrays."""
    named = [("ref", as_gray(ref, "ref")), ("f", as_gray(f, "f"))]
    _check_shapes(named)
    return named[0][1], named[1][1]


def normalize255(x):
    """Stretch an image linearly to [0, 255] and round to integer levels (toolbox ``normalize1``).

    An all-zero image is returned unchanged; any other constant image maps to zeros (the MATLAB
    original divides by zero there).
    """
    x = np.asarray(x, dtype=np.float64)
    hi, lo = x.max(), x.min()
    if hi == lo:
        return np.zeros_like(x)
    return matlab_round((x - lo) / (hi - lo) * 255)


def gaussian_1d(size, sigma, normalize=True):
    """1-D Gaussian taps centred on the middle of ``size`` samples.

    With ``normalize=True`` the taps sum to one, so ``outer(g, g)`` equals MATLAB's
    ``fspecial('gaussian', size, sigma)``.
    """
    x = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(x * x) / (2.0 * sigma * sigma))
    if normalize:
        g = g / g.sum()
    return g


def _corr1d(x, taps, axis, pad):
    """Valid 1-D correlation along ``axis`` after zero padding ``pad`` = (before, after)."""
    taps = np.asarray(taps, dtype=np.float64)
    k = taps.size
    if pad != (0, 0):
        widths = [(0, 0)] * x.ndim
        widths[axis] = pad
        x = np.pad(x, widths)
    n = x.shape[axis] - k + 1
    if n <= 0:
        raise ValueError("filter larger than image")
    out = None
    for j, t in enumerate(taps):
        if t == 0:
            continue
        sl = [slice(None)] * x.ndim
        sl[axis] = slice(j, j + n)
        term = t * x[tuple(sl)]
        out = term if out is None else out + term
    if out is None:
        shape = list(x.shape)
        shape[axis] = n
        out = np.zeros(shape, dtype=x.dtype)
    return out


def filter2_sep(x, col, row, shape="same"):
    """MATLAB ``filter2(outer(col, row), x, shape)`` for a separable kernel.

    Parameters
    ----------
    x : ndarray, 2-D (real or complex)
    col, row : sequence of float
        Vertical and horizontal factors of the kernel ``h = outer(col, row)``.
    shape : {'same', 'valid'}
        'same' zero-pads so the output has the size of ``x`` (odd kernel sizes only);
        'valid' keeps only the positions where the kernel fits entirely inside ``x``.
    """
    col = np.asarray(col, dtype=np.float64)
    row = np.asarray(row, dtype=np.float64)
    if shape == "same":
        if col.size % 2 == 0 or row.size % 2 == 0:
            raise ValueError("'same' filtering needs odd kernel sizes")
        pr, pc = (col.size // 2, col.size // 2), (row.size // 2, row.size // 2)
    elif shape == "valid":
        pr = pc = (0, 0)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    y = _corr1d(x, col, 0, pr)
    return _corr1d(y, row, 1, pc)
