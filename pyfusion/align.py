"""Register the frames of a hand-held focus stack to one reference frame before fusion.

Each frame is registered to the reference (the middle frame by default) with OpenCV's ECC
(:func:`cv2.findTransformECC`, Evangelidis & Psarakis 2008) on Gaussian pyramids of the grayscale images
(:func:`pyfusion.io.to_gray`, float32), coarsest level first: the estimate of one level, scaled by two, starts
the next. By default ECC stops at half size (``finest_level=1``), or for frames of more than 4 x 520 x 520
pixels at the first level of at most 520 x 520 (:func:`auto_finest_level`: quarter size for 3 megapixels), and
the estimate is scaled to full size: on synthetic hand-held stacks the half-size corner error was no larger than
that of ECC at full size, at 0.37 of the time (docs/stacks.md, "Speed"); ``finest_level=0`` runs the full size
too (finer on sharp, finely textured frames).
A frame that moves no image corner by more than ``still`` (0.05 px) is not resampled. ECC maximises the enhanced
correlation coefficient, so the exposure may differ between frames, and defocus (a zero-phase blur) hardly
biases it. The motion is affine (default: shift, rotation, scale for focus breathing, shear), a homography,
euclidean (shift and rotation) or a translation.

Accuracy (tests/test_align.py): a synthetic 5-frame stack with shifts of a few px, rotations < 1 degree, 1-3%
scale and blurred frames is recovered by full-size ECC (``finest_level=0``) to <= 0.05 px (affine) and <= 0.08 px
(homography) at the corners and the centre on skimage's astronaut, <= 0.11 / 0.17 px on a less textured photo
(BSDS500 val 101085); by the default half-size ECC to 0.09 / 0.14 px on the astronaut. On the synthetic
hand-held focus stacks of docs/stacks.md half size was the more accurate (0.18 against 0.21 px mean corner error).
Frames that differ in focus bias the parameters beyond a translation a little: a pure (3, -2) px shift
between two sources sharp in different regions comes back within 0.04-0.3 px at the corners with affine (more
for stronger defocus) but within 0.05 px with ``motion="translation"``; use the simplest model that fits.

Conventions
-----------
* ``transforms[name]`` maps a pixel ``(x, y)`` of the reference (= of the aligned output before cropping) to
  the frame's own pixel: ``[u, v] = A @ [x, y, 1]`` (affine, 2x3) or ``[u, v, w] = H @ [x, y, 1]``, divided by
  ``w`` (homography, 3x3); pixel centres at integer coordinates. The aligned frame is ``frame(transform(x))``,
  sampled bicubically (``interpolation="cubic"``, default, ``INTER_CUBIC``) or bilinearly (``"linear"``,
  ``INTER_LINEAR``) by :func:`cv2.warpAffine` / :func:`cv2.warpPerspective` with ``WARP_INVERSE_MAP``, in the
  frame's own dtype, borders replicated. Bicubic sampling can overshoot: integer frames saturate to their dtype,
  float frames are clipped to the frame's own value range. Bicubic is the default because on synthetic
  hand-held focus stacks (10 tuning stacks, docs/stacks.md) it gave the fused result 3.0 dB more PSNR than
  bilinear on average, and more on every stack: bilinear sampling blurs.
* Crop (``fill=False``, default): the output is cut to the axis-aligned rectangle every frame covers. The
  covered set is computed per pixel (a reference pixel is covered by a frame when its transform lands inside
  the frame, ``0 <= u <= W-1``, ``0 <= v <= H-1``); the rectangle is found greedily, conservatively: start
  from the whole image and move in, one pixel at a time, the side whose edge row/column has the most uncovered
  pixels, until no uncovered pixel is left inside. For the near-identity motions of a focus stack (the
  intersection is a convex polygon close to the frame) this loses at most a pixel or two against the largest
  rectangle, and never includes an uncovered pixel. ``report.crop = (x, y, width, height)``.
* Fill (``fill=True``): the frames keep the reference's size; pixels a frame does not cover are filled by
  replicating its nearest edge pixel (``BORDER_REPLICATE``); ``report.crop`` still gives the fully covered
  rectangle and ``report.filled`` the fraction of pixels filled in at least one frame.
* Failure: ECC raising (it did not converge), a correlation below ``min_correlation``, or an implausible
  transform (a corner moved by more than ``max_motion`` of the shorter side) fails the frame, named in the
  message. ``on_failure="stop"`` (default) raises :class:`pyfusion.io.FusionInputError`; ``"skip"`` leaves
  the frame out and records it in ``report.skipped`` (name -> reason).

References
----------
.. [1] G. D. Evangelidis, E. Z. Psarakis, "Parametric image alignment using enhanced correlation coefficient
   maximization", IEEE TPAMI 30(10) (2008) 1858-1865.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import cv2
import numpy as np

from pyfusion.constants import WORK_PIXELS
from pyfusion.io import FusionInputError, to_gray
from pyfusion.util import imap_ordered, progress_frames

__all__ = ["AlignReport", "align", "auto_finest_level", "map_points", "MOTIONS", "INTERPOLATIONS", "INTERPOLATION"]

#: Motion models: name -> OpenCV motion type ("translation": shift only; "euclidean": shift and rotation, no
#: scale, so no focus breathing; "affine": the default; "homography": perspective too).
MOTIONS = {"translation": cv2.MOTION_TRANSLATION, "euclidean": cv2.MOTION_EUCLIDEAN, "affine": cv2.MOTION_AFFINE,
           "homography": cv2.MOTION_HOMOGRAPHY}

#: Resampling of the aligned frames: name -> OpenCV interpolation flag.
INTERPOLATIONS = {"linear": cv2.INTER_LINEAR, "cubic": cv2.INTER_CUBIC}
#: Default of :func:`align`'s ``interpolation`` (chosen on synthetic tuning stacks, docs/stacks.md).
INTERPOLATION = "cubic"

#: Default finest pyramid level of ECC (1: half size; measured on synthetic hand-held stacks and the pcb stack,
#: docs/stacks.md: as accurate as the full size and about 3x faster).
FINEST_LEVEL = 1
#: Default largest corner motion (px) of a frame taken as it is, not resampled.
STILL = 0.05

#: Default smallest correlation (ECC) a registered frame must reach against the reference.
MIN_CORRELATION = 0.5


@dataclass
class AlignReport:
    """What :func:`align` did (module docstring for the conventions).

    Attributes
    ----------
    reference : str
        Name of the reference frame.
    motion : str
        ``"affine"``, ``"homography"``, ``"euclidean"`` or ``"translation"``.
    names : list of str
        The frames kept, in input order (the reference included).
    transforms : dict of str to numpy.ndarray
        Reference pixel -> frame pixel, 3x3 (homography) or 2x3 (the others) float64; identity for the reference.
    correlations : dict of str to float
        ECC correlation coefficient of each registered frame at the finest level (1.0 for the reference).
    crop : tuple of int
        ``(x, y, width, height)`` of the rectangle every kept frame covers, in reference pixels.
    filled : float or None
        With ``fill=True``: the fraction of output pixels filled in at least one frame; else ``None``.
    skipped : dict of str to str
        Frames left out (``on_failure="skip"``) and why.
    levels : int
        Pyramid levels used.
    """

    reference: str
    motion: str
    names: list = field(default_factory=list)
    transforms: dict = field(default_factory=dict)
    correlations: dict = field(default_factory=dict)
    crop: tuple = (0, 0, 0, 0)
    filled: float | None = None
    skipped: dict = field(default_factory=dict)
    levels: int = 1


def map_points(transform: np.ndarray, points) -> np.ndarray:
    """Apply a 2x3 affine or 3x3 homography to ``(N, 2)`` points ``(x, y)``; returns ``(N, 2)`` float64."""
    p = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    t = np.asarray(transform, dtype=np.float64)
    q = p @ t[:, :2].T + t[:, 2]
    if t.shape[0] == 3:
        q = q[:, :2] / q[:, 2:3]
    return q


@contextlib.contextmanager
def _cv2_threads(n):
    if n is None:
        yield
        return
    old = cv2.getNumThreads()
    cv2.setNumThreads(int(n))
    try:
        yield
    finally:
        cv2.setNumThreads(old)


def _pyramid(gray: np.ndarray, levels: int) -> list[np.ndarray]:
    pyr = [gray]
    for _ in range(levels - 1):
        pyr.append(cv2.pyrDown(pyr[-1]))
    return pyr


def auto_finest_level(shape, levels: int, *, pixels: int = WORK_PIXELS) -> int:
    """ECC's finest level by default: the first level of the pyramid with at most ``pixels`` pixels (each level
    ``ceil`` half the one above), at least :data:`FINEST_LEVEL` and at most ``levels - 1``. Frames of at most
    4 ``pixels`` (e.g. 1040x1040) stop at half size; the 2004x1502 frames of a 3-megapixel camera at quarter size."""
    h, w = int(shape[0]), int(shape[1])
    level = 0
    while h * w > pixels and level < levels - 1:
        h, w, level = -(-h // 2), -(-w // 2), level + 1
    return max(min(FINEST_LEVEL, levels - 1), level)


def _auto_levels(shape, min_side: int = 48, max_levels: int = 6) -> int:
    levels, side = 1, min(shape[:2])
    while levels < max_levels and side // 2 >= min_side:
        side //= 2
        levels += 1
    return levels


def _upscale(warp: np.ndarray) -> np.ndarray:
    """The warp of one pyramid level expressed at the next finer one (coordinates x2: pyrDown keeps pixel 2x
    at x)."""
    w = warp.copy()
    w[0, 2] *= 2
    w[1, 2] *= 2
    if w.shape[0] == 3:
        w[2, 0] /= 2
        w[2, 1] /= 2
    return w


def _register(ref_pyr, frame_pyr, motion: str, *, iterations: int, eps: float, gauss: int, gauss_fine: int,
              finest_level: int = 0):
    """ECC from the coarsest level down to ``finest_level``, the warp then scaled to full size; returns (warp
    float64, correlation). Raises cv2.error."""
    mtype = MOTIONS[motion]
    warp = np.eye(3 if motion == "homography" else 2, 3, dtype=np.float32)
    levels = len(ref_pyr)
    cc = float("nan")
    for level in range(levels - 1, finest_level - 1, -1):
        if level < levels - 1:
            warp = _upscale(warp)
        finest = level == finest_level
        criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, iterations, eps if finest else eps * 10)
        cc, warp = cv2.findTransformECC(ref_pyr[level], frame_pyr[level], warp, mtype, criteria, None,
                                        gauss_fine if finest else gauss)
    for _ in range(finest_level):
        warp = _upscale(warp)
    return warp.astype(np.float64), float(cc)


def _warp(img: np.ndarray, transform: np.ndarray, size, interpolation: str) -> np.ndarray:
    """``img`` sampled at ``transform`` of every output pixel (borders replicated); float results clipped to
    ``img``'s range (bicubic overshoot; integer dtypes saturate in OpenCV)."""
    flags = INTERPOLATIONS[interpolation] | cv2.WARP_INVERSE_MAP
    src = np.ascontiguousarray(img)
    if transform.shape[0] == 2:
        out = cv2.warpAffine(src, transform, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    else:
        out = cv2.warpPerspective(src, transform, size, flags=flags, borderMode=cv2.BORDER_REPLICATE)
    if out.dtype.kind == "f" and interpolation != "linear":
        np.clip(out, src.min(), src.max(), out=out)
    if img.ndim == 3 and out.ndim == 2:
        out = out[:, :, None]
    return out


def _coverage(transform: np.ndarray, shape, rows: int = 256) -> np.ndarray:
    """Boolean map of reference pixels whose transform lands inside a frame of ``shape`` (H, W); computed
    ``rows`` rows at a time to bound the memory."""
    h, w = shape
    t = np.asarray(transform, dtype=np.float64)
    out = np.empty((h, w), bool)
    xs = np.arange(w, dtype=np.float64)[None, :]
    tol = 1e-6
    for y0 in range(0, h, rows):
        ys = np.arange(y0, min(h, y0 + rows), dtype=np.float64)[:, None]
        u = t[0, 0] * xs + t[0, 1] * ys + t[0, 2]
        v = t[1, 0] * xs + t[1, 1] * ys + t[1, 2]
        ok = np.ones(u.shape, bool)
        if t.shape[0] == 3:
            d = t[2, 0] * xs + t[2, 1] * ys + t[2, 2]
            ok = d > 0
            with np.errstate(divide="ignore", invalid="ignore"):
                u, v = u / d, v / d
        out[y0:y0 + rows] = ok & (u >= -tol) & (u <= w - 1 + tol) & (v >= -tol) & (v <= h - 1 + tol)
    return out


def covered_rectangle(mask: np.ndarray) -> tuple[int, int, int, int]:
    """``(x, y, width, height)`` of an axis-aligned rectangle holding only True pixels of ``mask``: the greedy,
    conservative method of the module docstring (move in the side with most uncovered pixels). ``(0, 0, 0, 0)``
    when nothing is covered."""
    bad = ~np.asarray(mask, dtype=bool)
    # cumulative sums make each edge count O(1)
    rows = np.cumsum(np.pad(bad, ((0, 0), (1, 0))).astype(np.int64), axis=1)   # rows[y, x] = bad[y, :x].sum()
    cols = np.cumsum(np.pad(bad, ((1, 0), (0, 0))).astype(np.int64), axis=0)   # cols[y, x] = bad[:y, x].sum()
    y0, y1, x0, x1 = 0, bad.shape[0], 0, bad.shape[1]          # half-open
    while y0 < y1 and x0 < x1:
        top = rows[y0, x1] - rows[y0, x0]
        bottom = rows[y1 - 1, x1] - rows[y1 - 1, x0]
        left = cols[y1, x0] - cols[y0, x0]
        right = cols[y1, x1 - 1] - cols[y0, x1 - 1]
        worst = max(top, bottom, left, right)
        if worst == 0:
            # the edges are clean; the interior of a convex region is too, but check (non-convex masks)
            if not bad[y0:y1, x0:x1].any():
                return x0, y0, x1 - x0, y1 - y0
            worst_side = None
        else:
            worst_side = [top, bottom, left, right].index(worst)
        if worst_side is None:  # interior hole: shrink the longer side from its nearer end to the hole
            ys, xs = np.nonzero(bad[y0:y1, x0:x1])
            if y1 - y0 >= x1 - x0:
                worst_side = 0 if ys.min() < (y1 - y0) - 1 - ys.max() else 1
            else:
                worst_side = 2 if xs.min() < (x1 - x0) - 1 - xs.max() else 3
        if worst_side == 0:
            y0 += 1
        elif worst_side == 1:
            y1 -= 1
        elif worst_side == 2:
            x0 += 1
        else:
            x1 -= 1
    return 0, 0, 0, 0


def _displacement(transform: np.ndarray, shape) -> float:
    """The largest distance (px, per axis) a transform moves one of the image corners; inf if degenerate."""
    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    moved = map_points(transform, corners)
    return float(np.abs(moved - corners).max()) if np.all(np.isfinite(moved)) else float("inf")


def _check_plausible(transform: np.ndarray, shape, max_motion: float) -> str | None:
    h, w = shape
    d = _displacement(transform, shape)
    if not np.isfinite(d):
        return "degenerate transform"
    if d > max_motion * min(h, w):
        return f"implausible transform (a corner moves {d:.0f} px, more than {max_motion:g} of the shorter side)"
    return None


def align(images, *, names=None, reference: int | None = None, motion: str = "affine", levels: int | None = None,
          iterations: int = 100, eps: float = 1e-6, gauss_size: int = 5, gauss_fine: int = 1,
          min_correlation: float = MIN_CORRELATION, max_motion: float = 0.25, fill: bool = False,
          on_failure: str = "stop", interpolation: str = INTERPOLATION, threads: int | None = None,
          finest_level: int | None = None, still: float = STILL, progress: bool = False):
    """Register every frame to a reference with ECC on a pyramid; warp; crop to the common region (or fill).

    Parameters
    ----------
    images : sequence of numpy.ndarray
        Two or more frames of one shape and dtype (as :func:`pyfusion.io.validate_images` passes them).
    names : sequence of str, optional
        Frame names for the report and error messages (default ``image 1``, ...).
    reference : int, optional
        Index of the reference frame (default: the middle one, ``len(images) // 2``).
    motion : {"affine", "homography", "euclidean", "translation"}
    levels : int, optional
        Pyramid levels (default: halve until the shorter side would drop below 48 px, at most 6).
    iterations, eps : optional
        ECC stopping rule per level: at most ``iterations`` iterations, or until the correlation rises by less
        than ``eps`` (``eps`` at the finest level, ``10 * eps`` above it).
    gauss_size, gauss_fine : int, optional
        ECC's Gaussian pre-filter (odd) on the coarser levels (5, OpenCV's default) and on the finest (1: none;
        measured: larger filters at the finest level biased the estimate by up to 0.2-0.4 px on synthetic stacks).
    min_correlation : float, optional
        A registered frame whose final correlation is below this fails (default 0.5).
    max_motion : float, optional
        A transform moving an image corner by more than this fraction of the shorter side fails (default 0.25).
    fill : bool, optional
        Keep the full size and fill uncovered pixels (edge replication) instead of cropping.
    on_failure : {"stop", "skip"}
        A frame that fails: raise :class:`~pyfusion.io.FusionInputError` naming it (default) or leave it out.
    interpolation : {"cubic", "linear"}
        Resampling of the warped frames (:data:`INTERPOLATION`, default ``"cubic"``); the module docstring.
    threads : int, optional
        OpenCV threads during the alignment (restored afterwards); default: OpenCV's setting.
    finest_level : int, optional
        The finest pyramid level ECC runs on (0: full size; 1: half size, :data:`FINEST_LEVEL`; ...); the
        estimate is then scaled to full size. Clipped to the pyramid's levels. Default: :func:`auto_finest_level`
        (half size, or the first level of at most ``constants.WORK_PIXELS`` pixels for larger frames).
    still : float, optional
        A frame whose transform moves none of the image corners by more than ``still`` pixels is taken as it
        is, not resampled (its transform in the report is still the estimate; default :data:`STILL` = 0.05 px;
        0: every frame but the reference and exact identities is resampled).
    progress : bool, optional
        Progress bars on stderr counting the frames (``stack: align``, ``stack: resample``).

    Returns
    -------
    aligned : list of numpy.ndarray
        The kept frames, registered to the reference, same dtype and channels, cropped to ``report.crop``
        unless ``fill``.
    report : AlignReport

    Raises
    ------
    FusionInputError
        A frame that fails with ``on_failure="stop"``; fewer than two frames left; no common region.
    """
    frames = list(images)
    n = len(frames)
    if n < 2:
        raise FusionInputError(f"need at least two frames to align, got {n}")
    if motion not in MOTIONS:
        raise ValueError(f"unknown motion {motion!r}; choose from {', '.join(MOTIONS)}")
    if on_failure not in ("stop", "skip"):
        raise ValueError(f"on_failure must be 'stop' or 'skip', got {on_failure!r}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from {', '.join(INTERPOLATIONS)}")
    names = [str(x) for x in names] if names is not None else [f"image {k + 1}" for k in range(n)]
    ref = n // 2 if reference is None else int(reference)
    if not 0 <= ref < n:
        raise ValueError(f"reference {ref} out of range for {n} frames")
    shape = frames[ref].shape[:2]
    h, w = shape
    nlev = _auto_levels(shape) if levels is None else max(1, int(levels))
    report = AlignReport(reference=names[ref], motion=motion, levels=nlev)
    identity = np.eye(3 if motion == "homography" else 2, 3)
    finest = auto_finest_level(shape, nlev) if finest_level is None else min(int(finest_level), nlev - 1)

    with _cv2_threads(threads):
        ref_pyr = _pyramid(to_gray(frames[ref]).astype(np.float32), nlev)

        def register(k):
            """(warp, correlation, reason it failed or None) of frame k."""
            if k == ref:
                return identity.copy(), 1.0, None
            try:
                warp, cc = _register(ref_pyr, _pyramid(to_gray(frames[k]).astype(np.float32), nlev), motion,
                                     iterations=iterations, eps=eps, gauss=gauss_size,
                                     gauss_fine=gauss_fine, finest_level=finest)
                return warp, cc, None
            except cv2.error as e:
                msg = " ".join(str(e).split())
                return None, float("nan"), "ECC did not converge" + (
                    " (images uncorrelated or not overlapping)" if "converge" in msg or "uncorrelated" in msg
                    else f" ({msg})")

        kept = []
        registered = imap_ordered(register, progress_frames(range(n), "align", progress), threads=threads)
        for k, (warp, cc, reason) in enumerate(registered):
            name = names[k]
            if k == ref:
                kept.append(k)
                report.transforms[name] = warp
                report.correlations[name] = cc
                continue
            if reason is None and not cc >= min_correlation:
                reason = f"correlation {cc:.3f} below {min_correlation:g}"
            if reason is None:
                reason = _check_plausible(warp, shape, max_motion)
            if reason is not None:
                if on_failure == "stop":
                    raise FusionInputError(f"{name}: cannot align to {names[ref]}: {reason}")
                report.skipped[name] = reason
                continue
            kept.append(k)
            report.transforms[name] = warp
            report.correlations[name] = cc
        if len(kept) < 2:
            raise FusionInputError(f"alignment left fewer than two frames ({', '.join(report.skipped)} "
                                   f"could not be aligned to {names[ref]})")
        report.names = [names[k] for k in kept]

        moves = [k for k in kept if k != ref and _displacement(report.transforms[names[k]], shape) > still]
        covered = np.ones(shape, bool)
        for k in moves:
            covered &= _coverage(report.transforms[names[k]], shape)
        report.crop = covered_rectangle(covered)
        x, y, cw, ch = report.crop
        if not fill and (cw == 0 or ch == 0):
            raise FusionInputError(f"the aligned frames have no region in common with {names[ref]}")

        def resample(k):
            out = _warp(frames[k], report.transforms[names[k]], (w, h), interpolation) if k in moves else frames[k]
            return np.ascontiguousarray(out if fill else out[y:y + ch, x:x + cw])

        aligned = list(imap_ordered(resample, progress_frames(kept, "resample", progress), threads=threads))
        if fill:
            report.filled = float(1.0 - covered.mean())
    return aligned, report
