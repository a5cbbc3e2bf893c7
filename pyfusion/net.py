"""The deploy net behind one small interface: :func:`score_map`.

The convolutional twin of the siamese CNN ([1]_, Sec. 3.3.1) turns an H x W pair into a
(ceil(H/2) - 7) x (ceil(W/2) - 7) map of P(source A in focus), one score per 16 x 16 patch at stride 2.
Backends: ``"caffe"`` (the reference: pycaffe on prototxt/deploy.prototxt).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import json
import math
import os
from functools import lru_cache
from pathlib import Path

import numpy as np

from .constants import FC1_KERNEL, PATCH, STRIDE

ROOT = Path(__file__).resolve().parents[1]
DEPLOY_PROTOTXT = ROOT / "prototxt" / "deploy.prototxt"
MODEL_DEFAULT = ROOT / "models" / "cnn_fusion.caffemodel"
BACKENDS = ("caffe",)


class ModelError(ValueError):
    """A model file that is missing, corrupt or does not match its recorded sha256."""


def score_shape(h: int, w: int) -> tuple[int, int]:
    """Shape of the score map of an ``h`` x ``w`` pair: ``(ceil(h/2) - 7, ceil(w/2) - 7)``."""
    if h < PATCH or w < PATCH:
        raise ValueError(f"image {h}x{w} is smaller than one {PATCH}x{PATCH} patch")
    return math.ceil(h / STRIDE) - FC1_KERNEL + 1, math.ceil(w / STRIDE) - FC1_KERNEL + 1


def caffe_bytes(h: int, w: int) -> int:
    """Estimated peak memory (bytes) of the Caffe deploy twin on an ``h`` x ``w`` pair.

    Dominated by the im2col buffer of the 8x8 fc1 convolution: 512*8*8 floats per output position.
    """
    sh, sw = score_shape(h, w)
    hp, wp = math.ceil(h / 2), math.ceil(w / 2)
    blobs = 2 * (64 + 64 + 128 + 128) * h * w + 2 * 2 * 256 * hp * wp + 512 * hp * wp + (256 + 2 + 2) * sh * sw
    im2col = max(512 * FC1_KERNEL * FC1_KERNEL * sh * sw, 128 * 9 * hp * wp, 64 * 9 * h * w)
    return 4 * (blobs + im2col)


def available_bytes() -> int:
    """Memory the process may use: MemAvailable from /proc/meminfo (fallback 4 GiB)."""
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 4 << 30


def check_model(path) -> Path:
    """Return ``path`` if it exists and matches the sha256 in its side-car ``<path>.json``; else ModelError."""
    from .data import sha256_file

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"model not found: {path}")
    side = Path(str(path) + ".json")
    if side.is_file():
        want = json.loads(side.read_text()).get("sha256")
        got = sha256_file(path)
        if want and want != got:
            raise ModelError(f"model {path} has sha256 {got[:12]}…, its side-car says {want[:12]}…: corrupt or wrong")
    elif path.resolve() == MODEL_DEFAULT.resolve():
        raise ModelError(f"shipped model side-car missing: {side}")
    return path


@lru_cache(maxsize=4)
def _caffe_net(model: str, mtime: float):
    import caffe

    caffe.set_mode_cpu()
    return caffe.Net(str(DEPLOY_PROTOTXT), model, caffe.TEST)


def _score_caffe(a: np.ndarray, b: np.ndarray, model: Path) -> np.ndarray:
    h, w = a.shape
    need, have = caffe_bytes(h, w), available_bytes()
    if need > have:
        raise MemoryError(f"the Caffe twin needs about {need / 2**30:.1f} GiB for a {h}x{w} pair, "
                          f"{have / 2**30:.1f} GiB available; use a smaller image")
    net = _caffe_net(str(model), os.path.getmtime(model))
    net.blobs["a"].reshape(1, 1, h, w)
    net.blobs["b"].reshape(1, 1, h, w)
    net.blobs["a"].data[0, 0] = a
    net.blobs["b"].data[0, 0] = b
    prob = net.forward()["prob"][0, 1].copy()
    # free the big buffers between calls: a 1x1 reshape releases nothing in Caffe, so drop the cached net
    _caffe_net.cache_clear()
    return prob


def score_map(a, b, *, model=None, backend=None) -> np.ndarray:
    """Score map of the pair (``a``, ``b``): P(source A in focus) for every 16x16 patch at stride 2.

    Parameters
    ----------
    a, b : ndarray (H, W)
        Grayscale sources, float in [0, 1], same shape, H, W >= 16.
    model : path, optional
        Deploy caffemodel (default: the shipped ``models/cnn_fusion.caffemodel``, checked by sha256).
    backend : {"caffe"}, optional
        Inference backend (default: the fastest available).

    Returns
    -------
    ndarray (ceil(H/2) - 7, ceil(W/2) - 7), float32
        Entry (i, j) scores the patch with top-left corner (2i, 2j).
    """
    a = np.ascontiguousarray(a, dtype=np.float32)
    b = np.ascontiguousarray(b, dtype=np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise ValueError(f"score_map needs two grayscale images of one shape, got {a.shape} and {b.shape}")
    score_shape(*a.shape)
    backend = backend or BACKENDS[0]
    if backend not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    model = check_model(model or MODEL_DEFAULT)
    return _score_caffe(a, b, model)
