"""Training data of the CNNs: clear/blurred patch pairs written as HDF5 shards for Caffe's HDF5Data layer.

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

Each registered model (:mod:`pyfusion.models`) names its recipe: the blur ``levels`` and, for the wavelet-domain
nets, a ``wavelet``. A wavelet recipe takes pairs of 2P x 2P patches (P = the model's patch, 16) and stores their
one-level 2-D DWT (PyWavelets, ``periodization``: exactly P x P per band, no border terms) as two datasets, one
per band net: ``low`` (N x 2 x P x P: LL of A, LL of B, times :data:`BAND_SCALE` ``["low"]``) and ``high``
(N x 6 x P x P: LH, HL, HH of A, then of B, times ``BAND_SCALE["high"]``). The scales put each band near the
range of a [0, 1] image: the Haar LL times 1/2 is the 2x2 block mean; the detail bands times 2 are the sums of
+-1-weighted 2x2 block values.

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

from pyfusion import models
from pyfusion.constants import BAND_SCALE, BLUR_LEVELS, BLUR_SIGMA, BLUR_SIZE, PATCH, RGB2GRAY, VAR_THRESHOLD
from pyfusion.io import FusionInputError, read_image, to_gray
from pyfusion.util import sha256_file

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".bmp", ".ppm", ".pgm"}
SHARD_SIZE = 50_000  # examples per HDF5 file (100 MB); Caffe's HDF5Data holds one file in memory at a time


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


def band_pairs(pair: np.ndarray, *, wavelet: str = "haar") -> dict:
    """Sub-band pairs of 2P x 2P patch pairs: ``{"low": (n, 2, P, P), "high": (n, 6, P, P)}`` float32.

    One-level 2-D DWT (PyWavelets ``dwt2``, ``periodization``) of every patch, each band times
    :data:`BAND_SCALE`; ``high`` holds LH, HL, HH of source A, then of source B (the module docstring).
    """
    import pywt

    x = np.asarray(pair, np.float64)
    ll, (lh, hl, hh) = pywt.dwt2(x, wavelet, mode="periodization", axes=(-2, -1))
    s_low, s_high = BAND_SCALE["low"], BAND_SCALE["high"]
    low = (ll * s_low).astype(np.float32)
    high = np.concatenate([np.stack([lh[:, i], hl[:, i], hh[:, i]], 1) for i in (0, 1)], 1) * s_high
    return {"low": low, "high": high.astype(np.float32)}


def recipe_arrays(clear, blurred, places, *, patch: int, wavelet: str | None) -> tuple[dict, np.ndarray]:
    """The datasets of one image and blur level: ``{"pair": ...}`` (spatial) or the band pairs, and the labels."""
    if wavelet is None:
        pair, label = make_pairs(clear, blurred, places, patch=patch)
        return {"pair": pair}, label
    pair, label = make_pairs(clear, blurred, places, patch=2 * patch)
    return band_pairs(pair, wavelet=wavelet), label


def _write_shard(path: Path, arrays: dict, label: np.ndarray) -> None:
    with h5py.File(path, "w", libver="earliest", track_order=False) as f:
        for name, arr in arrays.items():
            f.create_dataset(name, data=arr, track_times=False)
        f.create_dataset("label", data=label, track_times=False)


def make_dataset(image_dirs, out_dir, *, examples: int, seed: int, net: str = "cnn", shard_size: int = SHARD_SIZE,
                 levels: int | None = None, sigma: float = BLUR_SIGMA, size: int = BLUR_SIZE,
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
    net : str, keyword-only
        Registered model whose recipe to follow (:mod:`pyfusion.models`): its patch size, blur levels and, for
        the wavelet nets, sub-band pairs (``low`` and ``high`` datasets, shared by both band nets).
    shard_size : int, keyword-only
        Examples per shard.
    levels : int, keyword-only
        Blur levels (default: the model's recipe; the paper's 5).

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

    model = models.get(net)
    levels = model.recipe["levels"] if levels is None else levels
    wavelet = model.recipe.get("wavelet")
    patch = model.patch
    window = 2 * patch if wavelet else patch
    if examples < 2 or examples % 2:
        raise ValueError(f"examples must be a positive even number, got {examples}")
    out_dir = Path(out_dir)
    if out_dir.exists():
        raise FileExistsError(f"output folder exists: {out_dir}")
    files = list_images(image_dirs)
    if not files:
        raise ValueError(f"no images found in {', '.join(map(str, image_dirs))}")
    n_shards = max(1, -(-examples // shard_size))
    probe = np.zeros((1, window, window))
    shapes = {k: v.shape[1:] for k, v in recipe_arrays(probe, probe, np.zeros((1, 2), int), patch=patch,
                                                         wavelet=wavelet)[0].items()}
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        # pass 1: per-image examples, scattered to random buckets
        buckets = [h5py.File(tmp / f"bucket_{k:04d}.h5", "w") for k in range(n_shards)]
        for bk in buckets:
            for name, shape in shapes.items():
                bk.create_dataset(name, (0, *shape), np.float32, maxshape=(None, *shape), chunks=(256, *shape))
            bk.create_dataset("label", (0,), np.float32, maxshape=(None,), chunks=(4096,))
        skipped, used = [], []
        remaining = examples // 2  # places still to draw; a skipped image's share flows to the later ones
        for i, path in enumerate(tqdm(files, desc=f"patches {out_dir.name}", disable=not progress, unit="img")):
            try:
                img = read_image(path)
            except FusionInputError:
                img = None
            if img is None or min(img.shape[:2]) < window or img.dtype != np.uint8:
                skipped.append(str(path))
                continue
            used.append(path)
            rng = np.random.default_rng([seed, i])
            clear = to_gray(img)
            q = quota(remaining, len(files) - i, levels)[0]
            parts, labels = [], []
            for lvl, blurred in enumerate(blur_cascade(clear, levels=levels, sigma=sigma, size=size)):
                places = sample_places(clear, int(q[lvl]), rng, patch=window, var_threshold=var_threshold)
                remaining -= len(places)
                arrays, lab = recipe_arrays(clear, blurred, places, patch=patch, wavelet=wavelet)
                parts.append(arrays)
                labels.append(lab)
            label = np.concatenate(labels)
            arrays = {k: np.concatenate([p[k] for p in parts]) for k in shapes}
            dest = rng.integers(0, n_shards, size=len(label))
            for k in np.unique(dest):
                sel = dest == k
                for name, arr in (*((n, a[sel]) for n, a in arrays.items()), ("label", label[sel])):
                    ds = buckets[k][name]
                    ds.resize(ds.shape[0] + len(arr), axis=0)
                    ds[-len(arr):] = arr
        for bk in buckets:
            bk.close()
        # pass 2: shuffle each bucket and write the final shard
        shards, total, positives = [], 0, 0
        for k in tqdm(range(n_shards), desc="shuffle shards", disable=not progress, unit="shard"):
            with h5py.File(tmp / f"bucket_{k:04d}.h5", "r") as bk:
                arrays = {name: bk[name][...] for name in shapes}
                label = bk["label"][...]
            os.remove(tmp / f"bucket_{k:04d}.h5")
            perm = np.random.default_rng([seed, 1_000_003, k]).permutation(len(label))
            name = f"shard_{k:04d}.h5"
            _write_shard(tmp / name, {n: a[perm] for n, a in arrays.items()}, label[perm])
            shards.append({"file": name, "examples": int(len(label)), "sha256": sha256_file(tmp / name)})
            total += len(label)
            positives += int(label.sum())
        image_list = "\n".join(str(p) for p in used).encode()
        recipe = {
            "paper": "Liu, Chen, Peng, Wang, Information Fusion 36 (2017), Sec. 3.2.2",
            "net": model.name,
            "gray": f"MATLAB rgb2gray weights {RGB2GRAY}, 0-255",
            "blur": {"levels": levels, "sigma": sigma, "size": size, "cascaded": True,
                     "rounding": "each step rounded to 8-bit levels (imfilter on uint8)", "border": "replicate"},
            "patch": window, "var_threshold": var_threshold, "variance": "unbiased (MATLAB var), 0-255 units",
            "labels": "A = first half of the channels, B = second half; 1 = (clear, blurred), 0 = (blurred, clear)",
            "scale": "float32 in [0, 1] (value / 255)",
            "datasets": {n: list(sh) for n, sh in shapes.items()},
        }
        if wavelet:
            recipe["bands"] = {"wavelet": wavelet, "levels": 1, "mode": "periodization", "scale": BAND_SCALE,
                               "high_order": "LH, HL, HH of A, then of B"}
        manifest = {
            "recipe": recipe,
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
