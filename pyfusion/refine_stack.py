"""Depth edges of a focus stack: the one-pass depth map re-decided near its label boundaries, and two blends.

The one-pass stack path (:mod:`pyfusion.methods.stack`) decides per 16x16 patch, so near an occlusion (a near
object in front of a far one) its label boundary lies up to a patch away from the true edge, and the frames
blended there show the rim of the near object blurred or its blur spread over the background (a *halo*). These
functions work on its cleaned label map (the depth map: int32 frame indices) and its sources, one frame at a time
(the sources are read once per pass; O(1) full-resolution maps whatever the number of frames):

* :func:`label_band`: the pixels within ``width`` px (chessboard distance) of a pixel with another label;
* :func:`redecide_band`: inside that band, each pixel to the frame of largest local focus measure
  (:func:`pyfusion.methods.cnn_plus.focus_measure`, the local energy of the Laplacian) where it is larger than the
  depth map's own frame's, as ``cnn-plus`` does for pairs;
* :func:`guided_blend`: the one-pass blend (the guided filter of each frame's one-hot mask, guided by the
  grayscale initial fusion, negatives clipped, normalised; then the weighted sum);
* :func:`pyramid_blend`: the multiresolution spline of Burt and Adelson [1]_ on the hard labels (each frame's
  Laplacian pyramid weighted by the Gaussian pyramid of its one-hot mask, summed, collapsed), so the transition
  between frames is as wide as each band's scale: fine detail switches within a pixel or two, smooth shading
  blends over a wide area;
* :func:`edge_fix`: the two chosen for the one-pass path: :func:`redecide_band` with :data:`BAND` and
  :data:`FOCUS_RADIUS`, then :func:`pyramid_blend` with :data:`LEVELS`, chosen among 28 combinations (the depth map
  as is or re-decided in a band of 4, 8 or 16 px with a focus window of radius 1 or 2; the guided blend with
  r = 8 or 2, or the pyramid blend with 4 or all levels) on synthetic occlusion tuning stacks by a rule fixed
  before the tuning run (docs/stacks.md, "Halo fix").

References
----------
.. [1] P. J. Burt, E. H. Adelson, "A multiresolution spline with application to image mosaics", ACM Transactions
   on Graphics 2(4) (1983) 217-236.
.. [2] K. He, J. Sun, X. Tang, "Guided image filtering", IEEE TPAMI 35(6) (2013) 1397-1409.
"""
from __future__ import annotations

import math

import cv2
import numpy as np

from pyfusion.constants import GF_EPS, GF_RADIUS
from pyfusion.io import from_unit, gray_unit32, to_gray, to_unit
from pyfusion.methods.cnn_plus import focus_measure
from pyfusion.refine import guided_filter
from pyfusion.util import available_bytes, imap_ordered, progress_frames, threads as thread_count

__all__ = ["label_band", "redecide_band", "guided_blend", "pyramid_blend", "laplacian_pyramid", "gaussian_pyramid",
           "collapse_pyramid", "max_levels", "edge_fix", "progress_frames", "BAND", "FOCUS_RADIUS", "LEVELS"]

#: :func:`edge_fix`'s defaults, chosen on the occlusion tuning stacks (docs/stacks.md, "Halo fix"): the band's
#: half-width (px), the focus measure's window radius and the pyramid levels.
BAND = 16
FOCUS_RADIUS = 1
LEVELS = 4


def _labels(labels) -> np.ndarray:
    out = np.asarray(labels)
    if out.ndim != 2 or not np.issubdtype(out.dtype, np.integer):
        raise ValueError(f"label map must be a 2-D integer array, got {out.dtype} {out.shape}")
    return out


def label_band(labels: np.ndarray, width: int) -> np.ndarray:
    """The pixels whose ``(2 width + 1)^2`` window (clipped at the borders) holds another label than their own:
    a band ``width`` px wide on each side of every label boundary. Bool ``(H, W)``; all False for ``width <= 0``."""
    lab = _labels(labels)
    if width <= 0:
        return np.zeros(lab.shape, bool)
    size = 2 * int(width) + 1
    kernel = np.ones((size, size), np.uint8)
    x = lab.astype(np.float32)   # exact for frame indices; windows clipped at the borders
    return cv2.dilate(x, kernel) != cv2.erode(x, kernel)


def frames_at_once(shape, *, per_pixel: float, threads: int | None = None, max_bytes: int | None = None) -> int:
    """Frames a pass works on at once: at most ``threads`` (default every core), and no more than fit, with one
    more finished and one more waiting, in ``max_bytes`` (default a quarter of the available memory) at
    ``per_pixel`` bytes per pixel of ``shape`` each; at least one."""
    budget = available_bytes() // 4 if max_bytes is None else int(max_bytes)
    each = max(1.0, per_pixel * int(shape[0]) * int(shape[1]))
    return max(1, min(thread_count(threads), int(budget // each) - 2))


def _channels(images) -> int:
    """The frames' channels (a FrameSequence's or the first array's; 3 for an iterator)."""
    shape = getattr(images, "shape", None)
    if shape is None and isinstance(images, (list, tuple)) and images:
        shape = np.shape(images[0])
    return 3 if shape is None else (shape[2] if len(shape) == 3 else 1)


def fast_focus_measure(gray: np.ndarray, radius: int) -> np.ndarray:
    """The local energy of the Laplacian (:func:`pyfusion.methods.cnn_plus.focus_measure`) in float32 by OpenCV:
    the same 4-neighbour Laplacian, the window mean with borders reflected instead of clipped (the two differ
    only within ``radius + 1`` px of the image border)."""
    lap = cv2.Laplacian(np.asarray(gray, np.float32), cv2.CV_32F, ksize=1, borderType=cv2.BORDER_REFLECT)
    np.multiply(lap, lap, out=lap)
    size = 2 * int(radius) + 1
    return cv2.boxFilter(lap, cv2.CV_32F, (size, size), normalize=True, borderType=cv2.BORDER_REFLECT)


def redecide_band(images, labels: np.ndarray, *, width: int, focus_radius: int, progress: bool = False,
                  fast: bool = False, threads: int | None = None, max_bytes: int | None = None) -> np.ndarray:
    """The label map with its boundary band re-decided pixel by pixel by a local focus measure.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        The frames (one shape; uint8, uint16 or float in [0, 1]), label ``k`` = ``images[k]``; read once, in order.
    labels : numpy.ndarray
        int ``(H, W)``: the depth map (frame indices).
    width : int
        Half-width of :func:`label_band` (0: the map is returned unchanged).
    focus_radius : int
        Window radius of the focus measure (:func:`pyfusion.methods.cnn_plus.focus_measure` of each frame's
        grayscale).
    progress : bool, optional
        A progress bar (:func:`progress_frames`, ``stack: edge band``).
    fast : bool, optional
        float32 gray and focus measure (:func:`pyfusion.io.gray_unit32`, :func:`fast_focus_measure`) instead of
        float64.
    threads, max_bytes : optional
        Frames measured at once: at most ``threads``, as many as fit in ``max_bytes`` (:func:`frames_at_once`;
        :func:`pyfusion.util.imap_ordered`; the result does not depend on it).

    Returns
    -------
    numpy.ndarray
        int32 ``(H, W)``, a new array: in the band, the frame with the largest focus measure (ties to the lower
        index) where that is strictly larger than the measure of the frame ``labels`` names; elsewhere ``labels``.
    """
    lab = _labels(labels)
    if width < 0 or focus_radius < 0:
        raise ValueError(f"width and focus_radius must be >= 0, got {width}, {focus_radius}")
    out = lab.astype(np.int32, copy=True)
    zone = label_band(lab, width)
    if not zone.any():
        return out
    ftype = np.float32 if fast else np.float64
    best = np.full(lab.shape, -np.inf, ftype)
    arg = np.zeros(lab.shape, np.int32)
    own = np.full(lab.shape, np.inf, ftype)
    def measure(item):
        k, img = item
        if img.shape[:2] != lab.shape:
            raise ValueError(f"frame {k + 1} has shape {img.shape[:2]}, the label map {lab.shape}")
        if fast:
            return fast_focus_measure(gray_unit32(img), focus_radius)
        return focus_measure(to_gray(to_unit(img)), focus_radius)

    frames = enumerate(progress_frames(images, "edge band", progress))
    at_once = frames_at_once(lab.shape, per_pixel=_channels(images) + 4 * ftype().itemsize, threads=threads,
                             max_bytes=max_bytes)   # a frame, its gray, Laplacian and measure
    for k, f in enumerate(imap_ordered(measure, frames, threads=at_once)):   # merged in frame order
        np.copyto(own, f, where=lab == k)
        better = f > best
        np.copyto(best, f, where=better)
        arg[better] = k
    sel = zone & (best > own)
    out[sel] = arg[sel]
    return out


def guided_blend(images, labels: np.ndarray, *, gf_radius: int = GF_RADIUS, gf_eps: float = GF_EPS,
                 threads: int | None = None, progress: bool = False) -> np.ndarray:
    """The one-pass blend of :mod:`pyfusion.methods.stack` (its steps 6-7) on a label map.

    The guide is the grayscale initial fusion (each pixel's gray value from the frame of its label); each labelled
    frame's weight is the guided filter (``gf_radius``, ``gf_eps``) of its one-hot mask, negatives clipped to 0;
    the weights are normalised to sum 1 at each pixel and the frames summed with them, rounded to the frames'
    dtype. Two passes over ``images`` (guide; weights and blend). ``gf_radius`` 0: the hard selection.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        The frames (one shape and dtype), label ``k`` = ``images[k]``.
    labels : numpy.ndarray
        int ``(H, W)`` frame indices.
    gf_radius, gf_eps : optional
        The guided filter's (default the paper's 8 and 0.1).
    threads : int, optional
        Threads of the guided filter's box means (the result does not depend on it).
    progress : bool, optional
        A progress bar per pass (:func:`progress_frames`: ``stack: guide``, ``stack: weights and blend``).

    Returns
    -------
    numpy.ndarray
        The fused image, in the frames' dtype.
    """
    lab = _labels(labels)
    h, w = lab.shape
    guide = np.empty((h, w))
    dtype = None
    for k, img in enumerate(progress_frames(images, "guide", progress)):
        dtype = img.dtype
        mask = lab == k
        if mask.any():
            guide[mask] = to_gray(to_unit(img))[mask]
    acc, wsum = None, np.zeros((h, w))
    for k, img in enumerate(progress_frames(images, "weights and blend", progress)):
        mask = lab == k
        if acc is None:
            acc = np.zeros(img.shape, np.float64)
        if not mask.any():
            continue
        wk = guided_filter(guide, mask.astype(np.float64), radius=gf_radius, eps=gf_eps, threads=threads)
        del mask
        np.maximum(wk, 0.0, out=wk)
        wsum += wk
        x = to_unit(img)
        acc += x * (wk[:, :, None] if x.ndim == 3 else wk)
        del x, wk
    if acc is None:
        raise ValueError("need one or more frames")
    # the unclipped weights sum to 1 (the guided filter of a constant), the clipped ones to at least that
    np.maximum(wsum, np.finfo(np.float64).tiny, out=wsum)
    acc /= wsum[:, :, None] if acc.ndim == 3 else wsum
    return from_unit(acc, dtype)


def laplacian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """Burt and Adelson's Laplacian pyramid [1]_ by OpenCV's ``pyrDown`` / ``pyrUp`` (the 5-tap binomial kernel,
    borders reflected): ``levels`` band-pass levels, finest first, then the coarsest Gaussian level."""
    out = []
    for _ in range(levels):
        down = cv2.pyrDown(x)
        out.append(x - cv2.pyrUp(down, dstsize=x.shape[1::-1]))
        x = down
    return out + [x]


def gaussian_pyramid(x: np.ndarray, levels: int) -> list[np.ndarray]:
    """``x`` and its ``levels`` successive ``pyrDown`` reductions, finest first."""
    out = [x]
    for _ in range(levels):
        out.append(cv2.pyrDown(out[-1]))
    return out


def collapse_pyramid(pyramid) -> np.ndarray:
    """The image of a Laplacian pyramid (:func:`laplacian_pyramid`'s layout): the coarsest level expanded and
    added level by level."""
    out = pyramid[-1]
    for level in reversed(pyramid[:-1]):
        out = cv2.pyrUp(out, dstsize=level.shape[1::-1]) + level
    return out


def max_levels(shape) -> int:
    """The most pyramid levels of an ``(H, W)`` image: ``floor(log2(min(H, W)))`` (the coarsest level 1-3 px)."""
    return max(0, int(math.floor(math.log2(max(1, min(int(shape[0]), int(shape[1])))))))


def pyramid_blend(images, labels: np.ndarray, *, levels: int | None = None, progress: bool = False,
                  float_type=np.float64, threads: int | None = None, max_bytes: int | None = None) -> np.ndarray:
    """Burt and Adelson's multiresolution spline [1]_ of the frames on a hard label map.

    Each frame's Laplacian pyramid (OpenCV's ``pyrDown`` / ``pyrUp``, the 5-tap binomial kernel, borders reflected)
    is weighted level by level by the Gaussian pyramid of its one-hot mask ``labels == k``; the weighted levels are
    summed over the frames and the sum collapsed. The masks' pyramids sum to 1 at every level (the kernel keeps
    constants), so no normalisation is needed; each frame is read once.

    Parameters
    ----------
    images : sequence of numpy.ndarray
        The frames (one shape and dtype; 1, 3 or 4 channels), label ``k`` = ``images[k]``.
    labels : numpy.ndarray
        int ``(H, W)`` frame indices.
    levels : int, optional
        Pyramid levels below full resolution (0: a hard selection); default and at most :func:`max_levels`.
    progress : bool, optional
        A progress bar (:func:`progress_frames`, ``stack: pyramid blend``).
    float_type : numpy dtype, optional
        The pyramids' float type (default float64; float32 halves the memory traffic).
    threads, max_bytes : optional
        Frames decomposed at once: at most ``threads`` (default every core), as many as fit in ``max_bytes``
        (:func:`frames_at_once`; :func:`pyfusion.util.imap_ordered`; summed in frame order, so the result does not
        depend on them).

    Returns
    -------
    numpy.ndarray
        The fused image, in the frames' dtype (clipped to its range).
    """
    lab = _labels(labels)
    top = max_levels(lab.shape)
    levels = top if levels is None else int(levels)
    if levels < 0:
        raise ValueError(f"levels must be >= 0, got {levels}")
    levels = min(levels, top)
    def weighted(item):
        """Frame k's Laplacian pyramid times its mask's Gaussian pyramid (None where the map never names it)."""
        k, img = item
        if img.shape[:2] != lab.shape:
            raise ValueError(f"frame {k + 1} has shape {img.shape[:2]}, the label map {lab.shape}")
        mask = lab == k
        if not mask.any():
            return img.dtype, None
        laps = laplacian_pyramid(to_unit(img, float_type), levels)
        for g, m in zip(laps, gaussian_pyramid(mask.astype(float_type), levels)):
            g *= m[:, :, None] if g.ndim == 3 else m
        return img.dtype, laps

    acc, dtype = None, None
    frames = enumerate(progress_frames(images, "pyramid blend", progress))
    c, size = _channels(images), np.dtype(float_type).itemsize
    at_once = frames_at_once(lab.shape, per_pixel=c + (3 * c + 3) * size, threads=threads,
                             max_bytes=max_bytes)   # a frame, its pyramid (4/3), its mask's, temporaries
    for dtype, pyr in imap_ordered(weighted, frames, threads=at_once):   # summed in frame order
        if pyr is None:
            continue
        if acc is None:
            acc = pyr
        else:
            for a, g in zip(acc, pyr):
                a += g
    if acc is None:
        raise ValueError("no frame is named by the label map")
    return from_unit(collapse_pyramid(acc), dtype)


def edge_fix(images, depth: np.ndarray, *, band: int = BAND, focus_radius: int = FOCUS_RADIUS,
             levels: int | None = LEVELS, progress: bool = False, fast: bool = False, threads: int | None = None,
             max_bytes: int | None = None):
    """The one-pass path's depth edges: :func:`redecide_band` of ``depth`` (``band``, ``focus_radius``), then
    :func:`pyramid_blend` of the frames on the result (``levels``). Two passes over ``images`` (``progress``: a
    progress bar each; frames at a time: :func:`frames_at_once` of ``threads`` and ``max_bytes``). ``fast``:
    float32 throughout (:func:`redecide_band`'s ``fast``, :func:`pyramid_blend`'s ``float_type``).

    Returns
    -------
    (fused, labels)
        The fused image in the frames' dtype and the re-decided label map (int32).
    """
    labels = redecide_band(images, depth, width=band, focus_radius=focus_radius, progress=progress, fast=fast,
                           threads=threads, max_bytes=max_bytes)
    return pyramid_blend(images, labels, levels=levels, progress=progress,
                         float_type=np.float32 if fast else np.float64, threads=threads, max_bytes=max_bytes), labels
