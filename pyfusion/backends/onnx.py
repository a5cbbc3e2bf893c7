"""The ``onnx`` backend: a model's folded ONNX twin (:mod:`fusionlab.onnx_export`) run by ONNX Runtime.

Both sources go in one batch of two (2 x C x H x W); the fc1/fc2/softmax head is one K x K convolution and a
sigmoid. Runs on the CPU, or on a GPU where ONNX Runtime has a CUDA execution provider. Needs no Caffe.

Per-frame scores (:func:`frame_runner`, :func:`pyfusion.net.frame_scores`) of a siamese net: the model's trunk
(its nodes before the head, cut out as a model of its own) on one source, then the antisymmetric head
``(A - B) / 2`` of the folded head's taps (:func:`antisymmetric_head`) applied in numpy (:func:`frame_head`), as
:meth:`pyfusion.backends.winograd.Net.frame_scores`.
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
    return _new_session(path, threads)


def _new_session(model, threads: int):
    """An ONNX Runtime session of ``model`` (a path or the serialized bytes)."""
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
    return ort.InferenceSession(model, so, providers=providers)


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


def frame_head(features: np.ndarray, head: np.ndarray) -> np.ndarray:
    """One source's per-frame score from its conv3 maps: a K x K head, valid positions only.

    Parameters
    ----------
    features : ndarray (C3, h, w)
        The source's conv3 maps (after the ReLU).
    head : ndarray (C3, K, K)
        The antisymmetric head ``(A - B) / 2`` of the folded head's source-A and source-B halves.

    Returns
    -------
    ndarray (h - K + 1, w - K + 1), float32
        ``sum_{c, dy, dx} head[c, dy, dx] features[c, y + dy, x + dx]`` (the head's taps as one float32 product,
        their shifted sum in float64).
    """
    c3, k = head.shape[0], head.shape[-1]
    _, h, w = features.shape
    taps = (np.asarray(head, np.float32).reshape(c3, k * k).T @ features.reshape(c3, h * w)).reshape(k * k, h, w)
    out = np.zeros((h - k + 1, w - k + 1))
    for t in range(k * k):
        dy, dx = divmod(t, k)
        out += taps[t, dy:dy + h - k + 1, dx:dx + w - k + 1]
    return out.astype(np.float32)


def antisymmetric_head(folded: np.ndarray) -> np.ndarray:
    """The per-frame head (C3, K, K), float32: ``(A - B) / 2`` of the folded head's source-A and source-B halves
    (``folded``: (2 C3, K, K), A's channels first), computed in float64."""
    t = np.asarray(folded, np.float64)
    c3 = t.shape[0] // 2
    return ((t[:c3] - t[c3:]) / 2).astype(np.float32)


@lru_cache(maxsize=4)
def _frame_net(path: str, mtime_ns: int, threads: int):
    """``(session, output name, head)``: the trunk of the siamese ONNX twin at ``path`` (its nodes before the
    ``concat`` reshape, on a batch of any size) and the per-frame head (C3, K, K), ``(A - B) / 2`` computed in
    float64 from the folded head's taps."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    full = onnx.load(path)
    g = full.graph
    names = [n.name for n in g.node]
    if "concat" not in names:
        raise ValueError(f"{path}: no 'concat' node; not a folded twin of fusionlab.onnx_export")
    nodes = list(g.node)[: names.index("concat")]
    used = {x for n in nodes for x in n.input}
    src = g.input[0]
    c0 = src.type.tensor_type.shape.dim[1].dim_value
    trunk = helper.make_graph(nodes, "trunk", [helper.make_tensor_value_info(src.name, TensorProto.FLOAT,
                                                                           ["N", c0, "H", "W"])],
                              [helper.make_tensor_value_info(nodes[-1].output[0], TensorProto.FLOAT, None)],
                              initializer=[t for t in g.initializer if t.name in used])
    model = helper.make_model(trunk, opset_imports=full.opset_import)
    model.ir_version = full.ir_version
    taps = next(numpy_helper.to_array(t) for t in g.initializer if t.name == "head_taps_w")   # (K*K, 2 C3, 1, 1)
    k = int(round(taps.shape[0] ** 0.5))
    head = antisymmetric_head(taps.reshape(k, k, -1).transpose(2, 0, 1))                       # (C3, K, K)
    return _new_session(model.SerializeToString(), threads), nodes[-1].output[0], head


def frame_runner(model: models.Model, caffemodel, onnx, *, threads: int, gpu=None):
    """``run(img)`` for one (H, W, C) float32 tile: its per-frame score (pre-sigmoid, without the head's bias;
    :func:`pyfusion.net.frame_scores`), the trunk by ONNX Runtime and the head by :func:`frame_head`."""
    if gpu is not None:
        raise ValueError("the onnx backend picks its device itself (CUDA where ONNX Runtime has it); use "
                         "backend='caffe' for gpu=")
    models.require_siamese(model.branches, model.name)
    path = models.check_onnx(onnx, caffemodel)
    sess, out, head = _frame_net(str(path), os.stat(path).st_mtime_ns, threads)
    name = sess.get_inputs()[0].name

    def run(img):
        x = np.ascontiguousarray(img.transpose(2, 0, 1)[None], np.float32)      # (1, C, H, W)
        return frame_head(sess.run([out], {name: x})[0][0], head)

    return run
