"""The ``onnx`` backend: a model's folded ONNX twin (:mod:`pyfusion.onnx_export`) run by ONNX Runtime.

Both sources go in one batch of two (2 x C x H x W); the fc1/fc2/softmax head is one K x K convolution and a
sigmoid. Runs on the CPU, or on a GPU where ONNX Runtime has a CUDA execution provider. Needs no Caffe.
"""
from __future__ import annotations

import os
from functools import lru_cache

import numpy as np

from .. import models

NAME = "onnx"
#: Peak bytes per input pixel of a tile (both sources of a 1-channel net; measured ~1510 B/px on 300^2..1000^2
#: tiles, VmHWM above the loaded process), and a fixed allowance.
BYTES_PER_PIXEL = 1600
BASE_BYTES = 16 << 20


def available() -> bool:
    """Whether onnxruntime imports."""
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def has_cuda() -> bool:
    """Whether ONNX Runtime has a CUDA execution provider here."""
    if not available():
        return False
    import onnxruntime as ort

    return "CUDAExecutionProvider" in ort.get_available_providers()


def peak_bytes(model: models.Model, h: int, w: int) -> int:
    """Estimated peak memory (bytes) on an ``h`` x ``w`` pair; the input channels add their share."""
    return BASE_BYTES + (BYTES_PER_PIXEL + 8 * (model.in_channels - 1)) * h * w


@lru_cache(maxsize=4)
def _session(path: str, mtime_ns: int, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # no arena: tiles of different sizes must not leave the arena at the largest size ever seen
    so.enable_cpu_mem_arena = False
    so.enable_mem_pattern = False
    so.log_severity_level = 3
    # no busy-waiting worker threads: they only burn a shared CPU (many small tiles, a busy machine)
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in ort.get_available_providers()]
    return ort.InferenceSession(path, so, providers=providers)


def runner(model: models.Model, caffemodel, onnx, *, threads: int, gpu=None):
    """``run(a, b)`` for (H, W, C) float32 tiles: the score map of the model's ONNX twin."""
    if gpu is not None:
        raise ValueError("the onnx backend picks its device itself (CUDA where ONNX Runtime has it); use "
                         "backend='caffe' for gpu=")
    path = models.check_onnx(onnx, caffemodel)
    sess = _session(str(path), os.stat(path).st_mtime_ns, threads)
    name = sess.get_inputs()[0].name

    def run(a, b):
        pair = np.stack([a, b]).transpose(0, 3, 1, 2)          # (2, C, H, W)
        return sess.run(None, {name: np.ascontiguousarray(pair, np.float32)})[0][0, 0]

    return run
