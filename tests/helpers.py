"""Shared test helpers: random net weights, a float64 reference of the deploy twin in numpy, the CI skip rule.

Import as ``from helpers import random_params`` (pytest puts ``tests/`` on ``sys.path``).
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

IN_CI = os.environ.get("CI", "").lower() == "true"
#: Set by scripts/gpu_check.sh: the ``gpu``-marked tests fail instead of skipping without CUDA or the device.
REQUIRE_GPU = os.environ.get("PYFUSION_REQUIRE_GPU", "") == "1"


def need(ok, reason, *, required: bool = IN_CI, where: str = "under CI=true"):
    """Skip with ``reason`` unless ``ok``; fail instead where it is ``required`` (default: under CI=true, the rule
    of conftest's fixtures; ``where`` says which rule in the failure)."""
    if ok:
        return
    if required:
        pytest.fail(f"{reason} (required {where})")
    pytest.skip(reason)


def need_gpu(ok, reason):
    """:func:`need` for what only a GPU machine has (a CUDA build, a device): skip, also in CI (no GPU there), but
    fail under ``PYFUSION_REQUIRE_GPU=1``."""
    need(ok, reason, required=REQUIRE_GPU, where="under PYFUSION_REQUIRE_GPU=1")


def random_params(*, seed: int = 0, fc2_scale: float = 2.0, in_channels: int = 1, head: int = 8,
                  fc_bias: bool = False, branches: str = "siamese") -> dict:
    """Random weights in :func:`fusionlab.onnx_export.read_caffemodel`'s format, for tests without a trained model.

    He-scaled convolutions, small biases, and an fc1 whose source-B half is minus its source-A half, so that
    swapping the sources flips the score and real or random pairs get scores spread over (0, 1).

    Parameters
    ----------
    seed : int
        The weights are a function of the arguments (the defaults give the weights the tests always had).
    fc2_scale : float
        Scale of fc2 (larger: more confident scores).
    in_channels : int
        conv1's input channels C0 (1: grayscale; 3: the wavelet high bands).
    head : int
        The head's kernel size K (fc1 has 2 * 256 * K * K inputs): 8 for 16x16 patches, 4 for 8x8 patches.
    fc_bias : bool
        Also draw fc biases ``fc1_b`` (256,) and ``fc2_b`` (2,) (drawn last: the other weights do not change).
    branches : str
        ``"siamese"`` (the defaults' weights), ``"pseudo"`` (branch B's own ``conv1_p`` .. drawn after the rest)
        or ``"2ch"`` (conv1 takes 2 ``in_channels``; fc1 reads one trunk: 256 * K * K).
    """
    rng = np.random.default_rng(seed)

    def he(*shape):
        return rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape).astype(np.float32)

    c0 = 2 * in_channels if branches == "2ch" else in_channels
    out = {name: (he(co, ci, 3, 3), rng.normal(0, 0.01, co).astype(np.float32))
           for name, ci, co in (("conv1", c0, 64), ("conv2", 64, 128), ("conv3", 128, 256))}
    half = he(256, 256 * head ** 2)
    out["fc1"] = half if branches == "2ch" else np.concatenate([half, -half], axis=1)
    out["fc2"] = (he(2, 256) * fc2_scale).astype(np.float32)
    if fc_bias:
        out["fc1_b"] = rng.normal(0, 0.5, 256).astype(np.float32)
        out["fc2_b"] = rng.normal(0, 0.5, 2).astype(np.float32)
    if branches == "pseudo":
        out.update({f"{name}_p": (he(*out[name][0].shape), rng.normal(0, 0.01, len(out[name][1])).astype(np.float32))
                    for name in ("conv1", "conv2", "conv3")})
    return out


def toy_onnx_models(root, toys: dict) -> dict:
    """``{name: (params, onnx path)}``: each ``toys[name]`` (:func:`random_params` options) as an ONNX model in
    ``root`` (built without Caffe)."""
    from fusionlab.onnx_export import build_onnx

    out = {}
    for name, kw in toys.items():
        params = random_params(**kw)
        (root / f"{name}.onnx").write_bytes(build_onnx(params).SerializeToString())
        out[name] = params, root / f"{name}.onnx"
    return out


def _chw(img) -> np.ndarray:
    """(H, W) or (H, W, C) -> (C, H, W) float64."""
    x = np.asarray(img, np.float64)
    return x[None] if x.ndim == 2 else x.transpose(2, 0, 1)


def conv3x3(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Direct cross-correlation, pad 1, float64: x (Cin, H, W), w (Cout, Cin, 3, 3) -> (Cout, H, W)."""
    xp = np.pad(np.asarray(x, np.float64), ((0, 0), (1, 1), (1, 1)))
    w = np.asarray(w, np.float64)
    h, wd = x.shape[1:]
    return sum(np.tensordot(w[:, :, i, j], xp[:, i:i + h, j:j + wd], axes=(1, 0)) for i in range(3) for j in range(3))


def reference_features(params: dict, img) -> np.ndarray:
    """conv1 -> ReLU -> conv2 -> ReLU -> 2x2/2 max pool (ceil mode) -> conv3 -> ReLU of one source, in float64:
    ``img`` (H, W) or (H, W, C0) -> (C3, ceil(H/2), ceil(W/2))."""
    def layer(x, name):
        w, b = params[name]
        return np.maximum(conv3x3(x, w) + np.asarray(b, np.float64)[:, None, None], 0)

    x = layer(layer(_chw(img), "conv1"), "conv2")
    c, h, w = x.shape
    x = np.pad(x, ((0, 0), (0, h % 2), (0, w % 2)))   # ceil mode: the last window is clipped (values are >= 0)
    x = x.reshape(c, (h + 1) // 2, 2, (w + 1) // 2, 2).max(axis=(2, 4))
    return layer(x, "conv3")


def reference_scores(params: dict, a, b) -> np.ndarray:
    """The deploy twin's score map in float64, unfolded: fc1 (+ bias) and fc2 (+ bias) over every K x K window of
    the concatenated conv3 maps, then softmax channel 1 (source A in focus). Independent of the folded head."""
    x = np.concatenate([reference_features(params, a), reference_features(params, b)])   # (2 C3, h', w')
    w1 = np.asarray(params["fc1"], np.float64)
    k = int(round((w1.shape[1] // x.shape[0]) ** 0.5))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))             # (2 C3, sh, sw, K, K)
    sh, sw = win.shape[1:3]
    cols = np.ascontiguousarray(win.transpose(0, 3, 4, 1, 2)).reshape(-1, sh * sw)      # (2 C3 K K, sh sw)
    h1 = w1 @ cols + np.asarray(params.get("fc1_b", 0.0), np.float64).reshape(-1, 1)
    logits = np.asarray(params["fc2"], np.float64) @ h1 + np.asarray(params.get("fc2_b", 0.0),
                                                                    np.float64).reshape(-1, 1)
    return (1 / (1 + np.exp(logits[0] - logits[1]))).reshape(sh, sw)


def pair(h, w, seed=0, c=None):
    """A random pair (a, b) of float32 sources in [0, 1], (h, w) or (h, w, c); b is a noisy copy of a."""
    rng = np.random.default_rng(seed)
    shape = (h, w) if c is None else (h, w, c)
    a = rng.random(shape, dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.2, shape).astype(np.float32), 0, 1)
    return a, b


def tiny_datasets(root, *, train: int = 2000, val: int = 200):
    """Training and validation patch-pair sets (HDF5, ``root/{train,val}/list.txt``) cut from four random 48x48
    images in ``root/imgs``: enough for a few solver steps."""
    import cv2

    from fusionlab import data

    imgs = Path(root) / "imgs"
    imgs.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(4):
        cv2.imwrite(str(imgs / f"{i}.png"), rng.integers(0, 256, (48, 48), dtype=np.uint8))
    data.make_dataset([imgs], Path(root) / "train", examples=train, seed=1, progress=False)
    data.make_dataset([imgs], Path(root) / "val", examples=val, seed=2, progress=False)
    return Path(root)

