"""Multi-focus pairs with ground truth, made from sharp photos: the project's own benchmark.

Unlike the training data (Gaussian blur, [1]_ Sec. 3.2.2), the defocus here is a uniform disk (the geometric
point-spread function of a defocused lens), of several radii, and the focus boundary is a random smooth shape
that can be hard or soft (a Gaussian-feathered mask, as a depth edge seen through a lens): source A is sharp
where the mask ``M`` is 1, ``A = M S + (1 - M) D(S)``, and B the complement, ``B = (1 - M) S + M D(S)``, where
``S`` is the photo and ``D`` the disk blur. A fused image is scored against ``S`` (:func:`scores`: PSNR and
SSIM), and so is each source alone.

Focus stacks (:func:`make_stack`, :func:`benchmark_stacks`): a random smooth depth map (:func:`random_field`,
rescaled to [0, 1]) is cut at random quantiles into N layers (:func:`depth_layers`; layer 0 the nearest, each
layer 1/(3N) to 3/N of the image by the draw of its share), and frame k is focused on layer k: where the
layer is ``j``, frame k is the photo defocused by a disk of radius ``step |j - k|`` (:func:`defocus`; radius 0:
the photo itself), so frame k equals the photo on its own layer and grows blurrier with the depth distance. The
layer edges are hard (no occlusion halo). A hand-held variant (:func:`shake`) moves every frame but the middle
one by a small similarity: a few pixels of shift, a fraction of a degree of rotation and a zoom about the centre
that grows linearly along the stack (focus breathing, 1-3 % between the middle and the farthest frame), as a
camera refocusing would. The transforms are kept in :func:`pyfusion.align.align`'s convention, so the
fused image of the moved frames, cropped to the alignment's common region, is scored against the photo's same
crop.

A ``scale`` K >= 1 (:func:`make_stack`, :func:`benchmark_stacks`) makes the same scene at K times the pixels per
side: the photo enlarged by K (:func:`enlarge`), the depth map drawn at the photo's size and interpolated
(bilinear, :func:`upsample`) to K times it before the cut into layers (at the same depths, so the layer edges are
sampled K times as finely rather than repeated in K x K blocks), and every length in pixels times K: the disk
radius per layer step and the camera shake's shift (the rotation and the zoom are the same). K = 1 is the
benchmark itself.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

__all__ = ["disk_kernel", "random_mask", "make_pair", "benchmark_pairs", "scores", "psnr", "SSIM_OPTIONS", "RADII",
           "SOFTNESS", "random_field", "defocus", "depth_layers", "focus_frames", "shake", "make_stack",
           "benchmark_stacks", "read_photo", "enlarge", "upsample", "scaled_motion", "Stack", "STACK_FRAMES",
           "STACK_STEPS", "SHAKE_SHIFT", "SHAKE_ROTATION", "SHAKE_BREATHING"]

#: Disk radii (pixels) cycled over the pairs, and the Gaussian feather (sigma, pixels; 0 = hard edge) of the mask.
RADII = (2, 3, 4, 6)
SOFTNESS = (0.0, 2.0, 6.0)
#: Frames per focus stack and disk radius per layer of depth distance (pixels), cycled over the stacks (the
#: two cycles have 12 combinations).
STACK_FRAMES = (3, 4, 5, 6, 7, 8)
STACK_STEPS = (1.0, 1.5, 2.0, 2.5)
#: Camera motion of the hand-held variant: largest shift per axis (px), largest rotation (degrees), and the range
#: of the zoom between the middle and the farthest frame (focus breathing; its sign is drawn too).
SHAKE_SHIFT = 3.0
SHAKE_ROTATION = 0.5
SHAKE_BREATHING = (0.01, 0.03)


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised uniform disk of ``radius`` pixels, anti-aliased by 8x8 supersampling of its edge."""
    r = int(np.ceil(radius))
    n = 2 * r + 1
    sub = (np.arange(n * 8) + 0.5) / 8 - r - 0.5
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    k = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float64).reshape(n, 8, n, 8).mean((1, 3))
    return k / k.sum()


def random_field(shape, rng: np.random.Generator) -> np.ndarray:
    """A smooth random field ``(H, W)``: white noise low-passed by a Gaussian of ``max(H, W) / 8`` pixels, plus a
    random horizontal tilt (so that its level sets make one or a few big regions rather than many blobs)."""
    h, w = shape
    field = cv2.GaussianBlur(rng.standard_normal((h, w)), (0, 0), max(h, w) / 8, borderType=cv2.BORDER_REFLECT)
    field += np.linspace(-1, 1, w)[None, :] * field.std() * rng.uniform(-2, 2)   # a random tilt: one big region
    return field


def enlarge(img: np.ndarray, scale: int) -> np.ndarray:
    """An 8-bit photo enlarged ``scale`` times per side (bicubic, rounded and clipped to 0-255 by OpenCV);
    ``img`` itself for 1."""
    if scale == 1:
        return img
    h, w = img.shape[:2]
    return cv2.resize(np.ascontiguousarray(img), (w * scale, h * scale), interpolation=cv2.INTER_CUBIC)


def upsample(field: np.ndarray, scale: int) -> np.ndarray:
    """A float ``(H, W)`` field at ``scale`` times the size per side (bilinear, the pixel grid of :func:`enlarge`);
    ``field`` itself for 1."""
    if scale == 1:
        return field
    h, w = field.shape
    return cv2.resize(field, (w * scale, h * scale), interpolation=cv2.INTER_LINEAR)


def defocus(img: np.ndarray, radius: float) -> np.ndarray:
    """``img`` (float64) blurred by the disk :func:`disk_kernel` of ``radius`` pixels, borders reflected; a copy
    for ``radius == 0`` (in focus)."""
    if radius == 0:
        return np.array(img, dtype=np.float64, copy=True)
    return cv2.filter2D(img, -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT)


def random_mask(shape, rng: np.random.Generator, *, softness: float) -> np.ndarray:
    """A random smooth region covering 30-70% of the image: a low-pass random field thresholded at its median
    shifted by a random quantile; feathered by a Gaussian of ``softness`` pixels (0: a hard 0/1 edge)."""
    field = random_field(shape, rng)
    m = (field > np.quantile(field, rng.uniform(0.3, 0.7))).astype(np.float64)
    if softness > 0:
        m = cv2.GaussianBlur(m, (0, 0), softness, borderType=cv2.BORDER_REFLECT)
    return m


@dataclass(frozen=True)
class Pair:
    name: str
    sharp: np.ndarray      # uint8 (H, W, 3)
    a: np.ndarray          # uint8: sharp where mask is 1
    b: np.ndarray          # uint8: sharp where mask is 0
    mask: np.ndarray       # float64 in [0, 1]
    radius: float
    softness: float


def make_pair(sharp: np.ndarray, rng: np.random.Generator, *, radius: float, softness: float, name: str = "") -> Pair:
    """A synthetic multi-focus pair from an 8-bit photo (module docstring)."""
    s = sharp.astype(np.float64)
    blurred = defocus(s, radius)
    m = random_mask(sharp.shape[:2], rng, softness=softness)
    mm = m[..., None] if s.ndim == 3 else m
    a = np.clip(np.round(mm * s + (1 - mm) * blurred), 0, 255).astype(np.uint8)
    b = np.clip(np.round((1 - mm) * s + mm * blurred), 0, 255).astype(np.uint8)
    return Pair(name, sharp, a, b, m, radius, softness)


def benchmark_pairs(photos, *, count: int = 40, seed: int = 0, start: int = 0):
    """``count`` pairs from the photos (paths, sorted order from index ``start``, cycled), radius and softness
    cycled over :data:`RADII` and :data:`SOFTNESS`; deterministic for a seed. The test set is ``start=0, seed=0``;
    a tuning set takes other photos and another seed (e.g. ``start=50, seed=1``)."""
    from pyfusion.io import read_image

    photos = sorted(photos)
    for k in range(count):
        path = photos[(start + k) % len(photos)]
        img = read_image(path)
        rng = np.random.default_rng([seed, k])
        yield make_pair(img, rng, radius=RADII[k % len(RADII)], softness=SOFTNESS[k % len(SOFTNESS)],
                        name=f"{k:02d}_{path.stem}")


#: scikit-image ``structural_similarity`` options of :func:`scores` (Wang et al. 2004: Gaussian window sigma 1.5,
#: population covariances, 8-bit range).
SSIM_OPTIONS = {"data_range": 255, "gaussian_weights": True, "sigma": 1.5, "use_sample_covariance": False}


def psnr(x: np.ndarray, y: np.ndarray) -> float:
    """PSNR (dB, 0-255) of ``x`` against ``y`` (arrays of one shape, any number of pixels); inf where equal."""
    mse = np.mean((np.asarray(x, np.float64) - np.asarray(y, np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))


def scores(img: np.ndarray, sharp: np.ndarray) -> dict:
    """PSNR (dB, 0-255, :func:`psnr`) and SSIM (Wang et al. 2004, Gaussian window sigma 1.5, on the colour image,
    as scikit-image's ``structural_similarity(..., **SSIM_OPTIONS)``) of ``img`` against the sharp original,
    both 8-bit."""
    from skimage.metrics import structural_similarity

    x, y = img.astype(np.float64), sharp.astype(np.float64)
    ssim = structural_similarity(x, y, channel_axis=-1 if x.ndim == 3 else None, **SSIM_OPTIONS)
    return {"psnr": psnr(x, y), "ssim": float(ssim)}


def depth_layers(shape, rng: np.random.Generator, *, layers: int, scale: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A smooth random depth map and its cut into ``layers`` layers.

    Parameters
    ----------
    shape : tuple of int
        ``(H, W)``.
    rng : numpy.random.Generator
    layers : int
        Number of layers N >= 1.
    scale : int, optional
        The maps at ``scale`` times ``shape`` per side: the depth drawn at ``shape``, interpolated
        (:func:`upsample`) and cut at the depths drawn at ``shape`` (default 1).

    Returns
    -------
    depth : numpy.ndarray
        float64 ``(H, W)`` in [0, 1] (:func:`random_field` rescaled; 0 = near).
    labels : numpy.ndarray
        int32 ``(H, W)``: the layer ``0 .. N - 1`` of each pixel, cut at the depth's quantiles of random shares
        (each share uniform in [0.5, 1.5] before normalising: a layer covers about 1/(3N) to 3/N of the image).
    """
    field = random_field(shape, rng)
    depth = (field - field.min()) / max(float(np.ptp(field)), np.finfo(np.float64).tiny)
    shares = rng.uniform(0.5, 1.5, layers)
    cuts = np.quantile(depth, np.cumsum(shares)[:-1] / shares.sum())
    depth = upsample(depth, scale)
    return depth, np.searchsorted(cuts, depth, side="right").astype(np.int32)


def _similarity(shape, *, shift, angle: float, scale: float) -> np.ndarray:
    """2x3 map: moved-frame pixel -> reference pixel (rotation by ``angle`` degrees and zoom ``scale`` about the
    image centre, then ``shift`` (dx, dy))."""
    h, w = shape
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    a = np.deg2rad(angle)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return np.hstack([r, (centre + np.asarray(shift, np.float64) - r @ centre)[:, None]])


def shake(frames, rng: np.random.Generator, *, reference: int | None = None, shift: float = SHAKE_SHIFT,
          rotation: float = SHAKE_ROTATION, breathing=SHAKE_BREATHING) -> tuple[list, list]:
    """Move the frames of a registered stack as a hand-held camera would (module docstring).

    Parameters
    ----------
    frames : sequence of numpy.ndarray
        The registered frames (one shape).
    rng : numpy.random.Generator
    reference : int, optional
        The frame left still (default the middle one, ``len(frames) // 2``, :func:`pyfusion.align.align`'s
        default reference).
    shift : float, optional
        Largest shift per axis in pixels (uniform in ``[-shift, shift]``).
    rotation : float, optional
        Largest rotation in degrees (uniform).
    breathing : (float, float), optional
        Range of the zoom of the farthest frame from the reference (uniform, random sign); frame k's zoom is
        ``1 + b (k - reference) / max(reference, N - 1 - reference)``.

    Returns
    -------
    moved : list of numpy.ndarray
        The moved frames, same shape and dtype (bicubic, borders reflected; the reference is a copy).
    transforms : list of numpy.ndarray
        2x3 float64 per frame: reference pixel -> moved-frame pixel, the convention of
        :attr:`pyfusion.align.AlignReport.transforms` (identity for the reference).
    """
    n = len(frames)
    ref = n // 2 if reference is None else int(reference)
    h, w = frames[0].shape[:2]
    b = rng.uniform(*breathing) * rng.choice([-1.0, 1.0])
    reach = max(ref, n - 1 - ref, 1)
    moved, transforms = [], []
    for k, f in enumerate(frames):
        if k == ref:
            moved.append(np.array(f, copy=True))
            transforms.append(np.eye(2, 3))
            continue
        g = _similarity((h, w), shift=rng.uniform(-shift, shift, 2), angle=rng.uniform(-rotation, rotation),
                        scale=1.0 + b * (k - ref) / reach)
        out = cv2.warpAffine(np.ascontiguousarray(f), g, (w, h), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
                             borderMode=cv2.BORDER_REFLECT)
        moved.append(out.reshape(f.shape))
        transforms.append(np.linalg.inv(np.vstack([g, [0.0, 0.0, 1.0]]))[:2])
    return moved, transforms


@dataclass(frozen=True)
class Stack:
    """A synthetic focus stack (:func:`make_stack`)."""

    name: str
    sharp: np.ndarray      # uint8 (H, W, 3): the ground truth
    frames: tuple          # uint8, frame k sharp on layer k, registered
    layers: np.ndarray     # int32 (H, W): the layer (= the frame in focus) of each pixel
    depth: np.ndarray      # float64 (H, W) in [0, 1]: the smooth depth map the layers are cut from
    step: float            # disk radius per layer of depth distance (px)
    moved: tuple           # the frames moved by :func:`shake` (hand-held)
    transforms: tuple      # 2x3 reference pixel -> moved-frame pixel, per frame


def focus_frames(sharp: np.ndarray, layers: np.ndarray, *, step: float, n: int | None = None) -> list:
    """The frames of a stack: frame k is ``sharp`` defocused by a disk of radius ``step |j - k|`` where the layer
    is ``j`` (uint8, rounded; exactly ``sharp`` on layer k). ``n``: the number of frames (default the layers')."""
    n = int(layers.max()) + 1 if n is None else n
    s = sharp.astype(np.float64)
    blurred = [defocus(s, step * d) for d in range(n)]    # one blur per depth distance, shared by the frames
    frames = []
    for k in range(n):
        distance = np.abs(layers - k)
        f = np.empty_like(s)
        for d in np.unique(distance):
            sel = distance == d
            f[sel] = blurred[d][sel]
        frames.append(np.clip(np.round(f), 0, 255).astype(np.uint8))
    return frames


def make_stack(sharp: np.ndarray, rng: np.random.Generator, *, frames: int, step: float, name: str = "",
               scale: int = 1, **motion) -> Stack:
    """A synthetic focus stack of ``frames`` frames from an 8-bit photo (module docstring): the depth map and its
    layers (:func:`depth_layers`), the registered frames (:func:`focus_frames`) and their hand-held version
    (:func:`shake` with the ``motion`` options), drawn from ``rng`` in that order. ``scale``: the same scene at
    ``scale`` times the pixels per side (module docstring; the stack's ``step`` is then ``scale * step``)."""
    depth, layers = depth_layers(sharp.shape[:2], rng, layers=frames, scale=scale)
    sharp, step = enlarge(sharp, scale), step * scale
    registered = focus_frames(sharp, layers, step=step, n=frames)
    moved, transforms = shake(registered, rng, **scaled_motion(motion, scale))
    return Stack(name, sharp, tuple(registered), layers, depth, float(step), tuple(moved), tuple(transforms))


def scaled_motion(motion: dict, scale: int) -> dict:
    """:func:`shake`'s options with the shift (default :data:`SHAKE_SHIFT`) times ``scale``."""
    return {**motion, "shift": motion.get("shift", SHAKE_SHIFT) * scale}


def read_photo(path, *, crop: int | None = None) -> np.ndarray:
    """The photo at ``path`` (:func:`pyfusion.io.read_image`); ``crop``: only its middle ``crop x crop``."""
    from pyfusion.io import read_image

    img = read_image(path)
    if crop is not None:
        y, x = max(0, (img.shape[0] - crop) // 2), max(0, (img.shape[1] - crop) // 2)
        img = np.ascontiguousarray(img[y:y + crop, x:x + crop])
    return img


def benchmark_stacks(photos, *, count: int = 20, seed: int = 0, start: int = 0, crop: int | None = None,
                     scale: int = 1):
    """``count`` focus stacks from the photos (paths, sorted order from index ``start``, cycled): stack k has
    ``STACK_FRAMES[k % 6]`` frames and the radius step ``STACK_STEPS[k % 4]``, drawn from
    ``numpy.random.default_rng([seed, k])``: deterministic for a seed, and stack k the same whatever ``count``.
    ``crop``: cut the middle ``crop x crop`` of each photo first (small stacks for tests); ``scale``: the same
    stacks at ``scale`` times the pixels per side (:func:`make_stack`)."""
    photos = sorted(photos)
    for k in range(count):
        path = Path(photos[(start + k) % len(photos)])
        img = read_photo(path, crop=crop)
        rng = np.random.default_rng([seed, k])
        yield make_stack(img, rng, frames=STACK_FRAMES[k % len(STACK_FRAMES)], step=STACK_STEPS[k % len(STACK_STEPS)],
                         name=f"{k:02d}_{path.stem}", scale=scale)
