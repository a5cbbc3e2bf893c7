"""Inference backends of the deploy nets: one module each, one small interface.

Each backend module has

* ``NAME``; ``available() -> bool``;
* ``peak_bytes(model, h, w) -> int``: its memory model (the tile size follows it);
* ``runner(model, caffemodel, onnx, *, threads, gpu=None) -> run``, where ``run(a, b)`` maps two (H, W, C)
  float32 tiles to their score map; the runner checks the model file it reads against its side-car;
* optionally ``GRID``, ``HALO_BEFORE`` and ``exact_scores(n, head)`` when its arithmetic depends on the tile
  position (:mod:`pyfusion.tiling`).

Backends: ``winograd`` (C kernels, the fastest on a CPU), ``onnx`` (ONNX Runtime, CPU or CUDA), ``caffe`` (the
reference; CPU or GPU), ``torch`` (PyTorch, an optional dependency: ``pip install .[torch]``; CPU or CUDA GPU,
fp32 / tf32 / fp16). Importing a backend module imports none of its dependencies.
"""
from __future__ import annotations

import importlib
import importlib.util

from .. import models

BACKENDS = ("winograd", "onnx", "caffe", "torch")


def pair_shape(a, b, head: int) -> tuple[int, int, int, int]:
    """``(H, W, ceil(H/2), ceil(W/2))`` of a source pair for a net with a ``head`` x ``head`` head (the folded
    twins' kernels); ValueError for sources of different shapes or smaller than one patch."""
    if a.shape != b.shape:
        raise ValueError(f"sources of different shapes {a.shape} and {b.shape}")
    h, w = a.shape[:2]
    hp, wp = (h + 1) // 2, (w + 1) // 2
    if hp < head or wp < head:
        raise ValueError(f"image {h}x{w} is smaller than one {2 * head}x{2 * head} patch")
    return h, w, hp, wp


def get(name: str):
    """The backend module called ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
    return importlib.import_module(f"{__name__}.{name}")


def default_backend(model=None, *, gpu=None) -> str:
    """The fastest backend that can run ``model`` here.

    ``gpu`` given: ``"torch"`` when the model's ONNX twin exists and torch imports with CUDA (the folded head), else
    ``"caffe"`` (its GPU mode). Otherwise, when the model's ONNX twin
    exists: ``"onnx"`` if ONNX Runtime has a CUDA provider, else ``"winograd"`` if its C kernels are built, else
    ``"onnx"`` if onnxruntime imports. Else ``"caffe"``. Never ``"torch"`` without a GPU, nor where torch does not
    import (torch is imported only when ``gpu`` is given and it is installed).
    """
    if gpu is not None:
        _, _, onnx = models.resolve(model)
        if onnx.is_file() and importlib.util.find_spec("torch") is not None and get("torch").has_cuda():
            return "torch"
        return "caffe"
    _, _, onnx = models.resolve(model)
    if onnx.is_file():
        if get("onnx").has_cuda():
            return "onnx"
        if get("winograd").available():
            return "winograd"
        if get("onnx").available():
            return "onnx"
    return "caffe"
