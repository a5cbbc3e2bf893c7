"""Multi-focus pairs with ground truth, made from sharp photos: the project's own benchmark.

Unlike the training data (Gaussian blur, [1]_ Sec. 3.2.2), the defocus here is a uniform disk (the geometric
point-spread function of a defocused lens), of several radii, and the focus boundary is a random smooth shape
that can be hard or soft (a Gaussian-feathered mask, as a depth edge seen through a lens): source A is sharp
where the mask ``M`` is 1, ``A = M S + (1 - M) D(S)``, and B the complement, ``B = (1 - M) S + M D(S)``, where
``S`` is the photo and ``D`` the disk blur. A fused image is scored against ``S`` (:func:`scores`: PSNR and
SSIM), and so is each source alone.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

__all__ = ["disk_kernel", "random_mask", "make_pair", "benchmark_pairs", "scores", "RADII", "SOFTNESS"]

#: Disk radii (pixels) cycled over the pairs, and the Gaussian feather (sigma, pixels; 0 = hard edge) of the mask.
RADII = (2, 3, 4, 6)
SOFTNESS = (0.0, 2.0, 6.0)


def disk_kernel(radius: float) -> np.ndarray:
    """A normalised uniform disk of ``radius`` pixels, anti-aliased by 8x8 supersampling of its edge."""
    r = int(np.ceil(radius))
    n = 2 * r + 1
    sub = (np.arange(n * 8) + 0.5) / 8 - r - 0.5
    yy, xx = np.meshgrid(sub, sub, indexing="ij")
    k = (yy ** 2 + xx ** 2 <= radius ** 2).astype(np.float64).reshape(n, 8, n, 8).mean((1, 3))
    return k / k.sum()


def random_mask(shape, rng: np.random.Generator, *, softness: float) -> np.ndarray:
    """A random smooth region covering 30-70% of the image: a low-pass random field thresholded at its median
    shifted by a random quantile; feathered by a Gaussian of ``softness`` pixels (0: a hard 0/1 edge)."""
    h, w = shape
    field = cv2.GaussianBlur(rng.standard_normal((h, w)), (0, 0), max(h, w) / 8, borderType=cv2.BORDER_REFLECT)
    field += np.linspace(-1, 1, w)[None, :] * field.std() * rng.uniform(-2, 2)   # a random tilt: one big region
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
    blurred = cv2.filter2D(s, -1, disk_kernel(radius), borderType=cv2.BORDER_REFLECT)
    m = random_mask(sharp.shape[:2], rng, softness=softness)
    mm = m[..., None] if s.ndim == 3 else m
    a = np.clip(np.round(mm * s + (1 - mm) * blurred), 0, 255).astype(np.uint8)
    b = np.clip(np.round((1 - mm) * s + mm * blurred), 0, 255).astype(np.uint8)
    return Pair(name, sharp, a, b, m, radius, softness)


def benchmark_pairs(photos, *, count: int = 40, seed: int = 0, start: int = 0):
    """``count`` pairs from the photos (paths, sorted order from index ``start``, cycled), radius and softness
    cycled over :data:`RADII` and :data:`SOFTNESS`; deterministic for a seed. The test set is ``start=0, seed=0``;
    a tuning set takes other photos and another seed (e.g. ``start=50, seed=1``)."""
    from .io import read_image

    photos = sorted(photos)
    for k in range(count):
        path = photos[(start + k) % len(photos)]
        img = read_image(path)
        rng = np.random.default_rng([seed, k])
        yield make_pair(img, rng, radius=RADII[k % len(RADII)], softness=SOFTNESS[k % len(SOFTNESS)],
                        name=f"{k:02d}_{path.stem}")


def scores(img: np.ndarray, sharp: np.ndarray) -> dict:
    """PSNR (dB, 0-255) and SSIM (Wang et al. 2004, Gaussian window sigma 1.5, on the colour image, as
    scikit-image's ``structural_similarity(..., gaussian_weights=True, sigma=1.5, use_sample_covariance=False)``)
    of ``img`` against the sharp original, both 8-bit."""
    from skimage.metrics import structural_similarity

    x, y = img.astype(np.float64), sharp.astype(np.float64)
    mse = np.mean((x - y) ** 2)
    psnr = float("inf") if mse == 0 else float(10 * np.log10(255.0 ** 2 / mse))
    ssim = structural_similarity(x, y, data_range=255, gaussian_weights=True, sigma=1.5,
                                 use_sample_covariance=False, channel_axis=-1 if x.ndim == 3 else None)
    return {"psnr": psnr, "ssim": float(ssim)}
