"""Training data of the CNN: clear/blurred 16x16 patch pairs written as HDF5 shards for Caffe's HDF5Data layer.

The recipe ([1]_, Sec. 3.2.2): natural images to grayscale; five blurred versions made by applying a Gaussian
filter (sigma 2, 7x7) repeatedly; for every blur level, 16x16 patch pairs (clear, blurred) taken at random places
whose clear patch has variance > 25; the pair (clear, blurred) is a positive example (label 1, "first input in
focus") and the swapped pair (blurred, clear) a negative one (label 0).

Conventions that the paper leaves open, chosen here and recorded in every manifest:

* grayscale with MATLAB's rgb2gray weights, in 0-255 double;
* each blur step works like MATLAB ``imfilter`` on a uint8 image: the filtered image is rounded back to 8-bit
  levels (so blurred training patches are quantised like the real 8-bit images the net later sees), and borders are
  replicated;
* the variance threshold uses the unbiased variance (MATLAB ``var``) of the 256 clear-patch values in 0-255 units;
* patch places are drawn uniformly, without replacement, among all places that pass the threshold, independently
  for each blur level.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import cv2
import h5py
import numpy as np

from .constants import BLUR_LEVELS, BLUR_SIGMA, BLUR_SIZE, PATCH, RGB2GRAY, VAR_THRESHOLD

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".ppm", ".pgm"}
SHARD_SIZE = 50_000  # examples per HDF5 file (100 MB); Caffe's HDF5Data holds one file in memory at a time


def to_gray_255(img: np.ndarray) -> np.ndarray:
    """Grayscale in 0-255 double with MATLAB's rgb2gray weights (``img`` as read by OpenCV: BGR or gray, 8-bit)."""
    img = np.asarray(img, dtype=np.float64)
    if img.ndim == 2:
        return img
    b, g, r = img[..., 0], img[..., 1], img[..., 2]
    return RGB2GRAY[0] * r + RGB2GRAY[1] * g + RGB2GRAY[2] * b


def blur_cascade(gray: np.ndarray, *, levels: int = BLUR_LEVELS, sigma: float = BLUR_SIGMA,
                 size: int = BLUR_SIZE) -> list[np.ndarray]:
    """Blurred versions 1..``levels`` of ``gray``, each the previous one filtered again by the Gaussian.

    Every step rounds to 8-bit levels (as MATLAB's imfilter on uint8) with replicated borders.
    """
    out, cur = [], np.asarray(gray, dtype=np.float64)
    for _ in range(levels):
        cur = np.clip(np.round(cv2.GaussianBlur(cur, (size, size), sigma, sigma, borderType=cv2.BORDER_REPLICATE)),
                      0, 255)
        out.append(cur)
    return out


def patch_variance(gray: np.ndarray, *, patch: int = PATCH) -> np.ndarray:
    """Unbiased variance of every ``patch`` x ``patch`` window; entry (y, x) is the window with top-left (y, x)."""
    g = np.asarray(gray, dtype=np.float64)
    n = patch * patch

    def window_sum(a):
        c = np.zeros((a.shape[0] + 1, a.shape[1] + 1))
        c[1:, 1:] = a.cumsum(0).cumsum(1)
        return c[patch:, patch:] - c[:-patch, patch:] - c[patch:, :-patch] + c[:-patch, :-patch]

    s1, s2 = window_sum(g), window_sum(g * g)
    return np.maximum(s2 - s1 * s1 / n, 0.0) / (n - 1)


def sample_places(gray: np.ndarray, count: int, rng: np.random.Generator, *, patch: int = PATCH,
                  var_threshold: float = VAR_THRESHOLD) -> np.ndarray:
    """``count`` top-left corners (k, 2) drawn uniformly without replacement among windows with variance > threshold.

    Returns fewer rows when the image has fewer such windows.
    """
    ys, xs = np.nonzero(patch_variance(gray, patch=patch) > var_threshold)
    if len(ys) == 0 or count <= 0:
        return np.zeros((0, 2), dtype=np.int64)
    pick = rng.choice(len(ys), size=min(count, len(ys)), replace=False)
    return np.stack([ys[pick], xs[pick]], axis=1)


def make_pairs(clear: np.ndarray, blurred: np.ndarray, places: np.ndarray, *, patch: int = PATCH):
    """Positive and negative examples at ``places``.

    Returns ``pair`` (2k, 2, patch, patch) float32 in [0, 1] and ``label`` (2k,) float32: rows 0..k-1 are
    (clear, blurred) with label 1, rows k..2k-1 the swapped (blurred, clear) with label 0.
    """
    k = len(places)
    c = np.empty((k, patch, patch), np.float32)
    b = np.empty((k, patch, patch), np.float32)
    for i, (y, x) in enumerate(places):
        c[i] = clear[y:y + patch, x:x + patch]
        b[i] = blurred[y:y + patch, x:x + patch]
    c /= 255.0
    b /= 255.0
    pair = np.concatenate([np.stack([c, b], 1), np.stack([b, c], 1)])
    label = np.concatenate([np.ones(k, np.float32), np.zeros(k, np.float32)])
    return pair, label


def list_images(dirs) -> list[Path]:
    """Image files (by suffix) under the given folders, sorted by path so the order is reproducible."""
    files = []
    for d in dirs:
        d = Path(d)
        if not d.is_dir():
            raise FileNotFoundError(f"image folder not found: {d}")
        files += [p for p in d.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()]
    return sorted(files)


def quota(total_pairs: int, n_images: int, levels: int) -> np.ndarray:
    """Places to draw per (image, level): ``total_pairs`` spread as evenly as possible, earlier slots first."""
    q = np.full(n_images * levels, total_pairs // (n_images * levels), dtype=np.int64)
    q[: total_pairs - q.sum()] += 1
    return q.reshape(n_images, levels)


def sha256_file(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_shard(path: Path, pair: np.ndarray, label: np.ndarray) -> None:
    with h5py.File(path, "w", libver="earliest", track_order=False) as f:
        f.create_dataset("pair", data=pair, track_times=False)
        f.create_dataset("label", data=label, track_times=False)


def make_dataset(image_dirs, out_dir, *, examples: int, seed: int, shard_size: int = SHARD_SIZE,
                 levels: int = BLUR_LEVELS, sigma: float = BLUR_SIGMA, size: int = BLUR_SIZE,
                 var_threshold: float = VAR_THRESHOLD, progress: bool = True) -> dict:
    """Write a shuffled patch-pair dataset to ``out_dir`` (HDF5 shards, ``list.txt``, ``manifest.json``).

    Parameters
    ----------
    image_dirs : list of path
        Folders of natural images (searched recursively). Unreadable files are skipped and counted.
    out_dir : path
        Output folder; must not exist. Built in a temporary sibling folder and renamed when complete.
    examples : int
        Number of examples (even: half positive, half negative). Paper: ~2,000,000 training, 10,000 validation.
    seed : int
        Seed of every random draw. Same inputs and seed give byte-identical shards.
    shard_size : int, keyword-only
        Examples per shard.

    Returns
    -------
    dict
        The manifest written to ``out_dir/manifest.json``.

    Notes
    -----
    Memory stays bounded by one image's examples plus one shard: pass 1 scatters every image's examples to random
    shards (appending to temporary per-shard files), pass 2 loads each shard alone, permutes it and writes it.
    """
    from tqdm import tqdm

    if examples < 2 or examples % 2:
        raise ValueError(f"examples must be a positive even number, got {examples}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"output folder exists: {out_dir}")
    files = list_images(image_dirs)
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, image_dirs))}")
    n_shards = max(1, -(-examples // shard_size))
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        # pass 1: per-image examples, scattered to random buckets
        buckets = [h5py.File(tmp / f"bucket_{k:04d}.h5", "w") for k in range(n_shards)]
        for bk in buckets:
            bk.create_dataset("pair", (0, 2, PATCH, PATCH), np.float32, maxshape=(None, 2, PATCH, PATCH),
                              chunks=(256, 2, PATCH, PATCH))
            bk.create_dataset("label", (0,), np.float32, maxshape=(None,), chunks=(4096,))
        skipped, used = [], []
        remaining = examples // 2  # places still to draw; a skipped image's share flows to the later ones
        for i, path in enumerate(tqdm(files, desc=f"patches {out_dir.name}", disable=not progress, unit="img")):
            img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
            if img is None or img.ndim not in (2, 3) or min(img.shape[:2]) < PATCH or img.dtype != np.uint8:
                skipped.append(str(path))
                continue
            if img.ndim == 3 and img.shape[2] == 4:
                img = img[..., :3]
            used.append(path)
            rng = np.random.default_rng([seed, i])
            clear = to_gray_255(img)
            q = quota(remaining, len(files) - i, levels)[0]
            pairs, labels = [], []
            for lvl, blurred in enumerate(blur_cascade(clear, levels=levels, sigma=sigma, size=size)):
                places = sample_places(clear, int(q[lvl]), rng, var_threshold=var_threshold)
                remaining -= len(places)
                p, lab = make_pairs(clear, blurred, places)
                pairs.append(p)
                labels.append(lab)
            pair, label = np.concatenate(pairs), np.concatenate(labels)
            dest = rng.integers(0, n_shards, size=len(label))
            for k in np.unique(dest):
                sel = dest == k
                for name, arr in (("pair", pair[sel]), ("label", label[sel])):
                    ds = buckets[k][name]
                    ds.resize(ds.shape[0] + len(arr), axis=0)
                    ds[-len(arr):] = arr
        for bk in buckets:
            bk.close()
        # pass 2: shuffle each bucket and write the final shard
        shards, total, positives = [], 0, 0
        for k in tqdm(range(n_shards), desc="shuffle shards", disable=not progress, unit="shard"):
            with h5py.File(tmp / f"bucket_{k:04d}.h5", "r") as bk:
                pair, label = bk["pair"][...], bk["label"][...]
            os.remove(tmp / f"bucket_{k:04d}.h5")
            perm = np.random.default_rng([seed, 1_000_003, k]).permutation(len(label))
            name = f"shard_{k:04d}.h5"
            _write_shard(tmp / name, pair[perm], label[perm])
            shards.append({"file": name, "examples": int(len(label)), "sha256": sha256_file(tmp / name)})
            total += len(label)
            positives += int(label.sum())
        image_list = "\n".join(str(p) for p in used).encode()
        manifest = {
            "recipe": {
                "paper": "Liu, Chen, Peng, Wang, Information Fusion 36 (2017), Sec. 3.2.2",
                "gray": f"MATLAB rgb2gray weights {RGB2GRAY}, 0-255",
                "blur": {"levels": levels, "sigma": sigma, "size": size, "cascaded": True,
                         "rounding": "each step rounded to 8-bit levels (imfilter on uint8)", "border": "replicate"},
                "patch": PATCH, "var_threshold": var_threshold, "variance": "unbiased (MATLAB var), 0-255 units",
                "labels": "pair[:,0]=A, pair[:,1]=B; 1 = (clear, blurred), 0 = (blurred, clear)",
                "scale": "float32 in [0, 1] (value / 255)",
            },
            "seed": seed,
            "examples_requested": examples,
            "examples": total,
            "positives": positives,
            "places_missing": remaining,
            "images_used": len(used),
            "images_skipped": len(skipped),
            "skipped": skipped,
            "image_dirs": [str(d) for d in image_dirs],
            "image_list_sha256": hashlib.sha256(image_list).hexdigest(),
            "shards": shards,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        (tmp / "list.txt").write_text("".join(f"{(out_dir / s['file']).resolve()}\n" for s in shards))
        os.replace(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest
