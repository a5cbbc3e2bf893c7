"""The deploy twin as an ONNX model with a folded head, for ONNX Runtime (the fast backend of :mod:`pyfusion.net`).

Graph (input ``pair``: ``(2, 1, H, W)`` float32, source A then source B; output ``score``: ``(1, 1, h, w)``)::

    conv1 3x3 pad 1 -> ReLU -> conv2 3x3 pad 1 -> ReLU -> max pool 2x2/2 (ceil mode, as Caffe)
    -> conv3 3x3 pad 1 -> ReLU                  (both sources in one batch of 2: the branches share weights)
    -> reshape (2, 256, h', w') -> (1, 512, h', w')     (= Caffe's channel concat of branch A, branch B)
    -> head: one 8x8 convolution, 512 -> 1 channel, no bias -> Sigmoid
       (computed as a 1x1 convolution 512 -> 64 tap maps, summed with their 8x8 tap offsets)

Head folding: fc1 (256 x 512·8·8) and fc2 (2 x 256) have no bias and no nonlinearity between them, so the two
logits are ``l = W2 W1 x`` and ``softmax(l)[1] = 1 / (1 + exp(l0 - l1)) = sigmoid((W2[1] - W2[0]) W1 x)``. The
head is therefore the single filter ``w = (W2[1] - W2[0]) @ W1`` reshaped to ``1 x 512 x 8 x 8`` (the
InnerProduct flattening order is the convolution kernel layout, see :mod:`pyfusion.export`), followed by a
sigmoid: 256x fewer multiply-adds in the head than the Caffe twin's fc1-conv.

The weights are read from a caffemodel with ``caffe.proto.caffe_pb2`` (a protobuf parse: no net is built);
both the deploy caffemodel (layers ``fc1-conv``/``fc2-conv``) and a train_val snapshot (``fc1``/``fc2``)
are accepted. Running the ONNX model needs only onnxruntime, not Caffe.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207, Sec. 3.3.1 (fully connected layers as convolutions).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .constants import FC1_KERNEL
from .io import write_atomic

__all__ = ["read_caffemodel", "fold_head", "build_onnx", "export_onnx", "random_params", "set_deploy_params",
           "OPSET", "INPUT", "OUTPUT"]

OPSET = 17
INPUT = "pair"
OUTPUT = "score"
TRUNK = ("conv1", "conv2", "conv3")
_FC_NAMES = {"fc1": ("fc1-conv", "fc1"), "fc2": ("fc2-conv", "fc2")}


def _blob_array(blob) -> np.ndarray:
    """A caffe_pb2.BlobProto as a float32 array (new ``shape`` or legacy num/channels/height/width)."""
    data = blob.data if len(blob.data) else blob.double_data
    if blob.HasField("shape"):
        dims = tuple(blob.shape.dim)
    else:
        dims = (blob.num, blob.channels, blob.height, blob.width)
    return np.asarray(data, dtype=np.float32).reshape(dims)


def read_caffemodel(path) -> dict:
    """Parameters of a deploy caffemodel or train_val snapshot, by layer name.

    Parameters
    ----------
    path : path
        ``.caffemodel`` file (binary NetParameter).

    Returns
    -------
    dict
        ``{"conv1": (W, b), "conv2": (W, b), "conv3": (W, b), "fc1": W1 (256, 32768), "fc2": W2 (2, 256)}``,
        float32 arrays.

    Raises
    ------
    ValueError
        A layer is missing or a blob has an unexpected size.
    """
    from caffe.proto import caffe_pb2  # needs the Caffe build only at export time

    net = caffe_pb2.NetParameter()
    net.ParseFromString(Path(path).read_bytes())
    layers = {}
    for layer in list(net.layer) + list(net.layers):
        if layer.blobs and layer.name not in layers:
            layers[layer.name] = [_blob_array(b) for b in layer.blobs]
    out = {}
    for name in TRUNK:
        if name not in layers or len(layers[name]) != 2:
            raise ValueError(f"{path}: layer {name} with weights and bias not found")
        w, b = layers[name]
        out[name] = (w.astype(np.float32), b.reshape(-1).astype(np.float32))
    for key, names in _FC_NAMES.items():
        found = [n for n in names if n in layers]
        if not found:
            raise ValueError(f"{path}: none of the layers {names} found")
        out[key] = layers[found[0]][0]
    out["fc1"] = out["fc1"].reshape(out["fc1"].shape[0], -1)
    out["fc2"] = out["fc2"].reshape(out["fc2"].shape[0], -1)
    c3 = out["conv3"][0].shape[0]
    if out["fc1"].shape[1] != 2 * c3 * FC1_KERNEL ** 2 or out["fc2"].shape != (2, out["fc1"].shape[0]):
        raise ValueError(f"{path}: fc1 {out['fc1'].shape} / fc2 {out['fc2'].shape} do not fit conv3 {c3} channels")
    return out


def random_params(*, seed: int = 0, fc2_scale: float = 2.0) -> dict:
    """Random weights in :func:`read_caffemodel`'s format, for tests and benchmarks without a trained model.

    He-scaled convolutions, small biases, and an fc1 whose source-B half is minus its source-A half, so that
    swapping the sources flips the score and real or random pairs get scores spread over (0, 1).
    """
    rng = np.random.default_rng(seed)

    def he(*shape):
        return rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape).astype(np.float32)

    out = {name: (he(co, ci, 3, 3), rng.normal(0, 0.01, co).astype(np.float32))
           for name, ci, co in (("conv1", 1, 64), ("conv2", 64, 128), ("conv3", 128, 256))}
    half = he(256, 256 * FC1_KERNEL ** 2)
    out["fc1"] = np.concatenate([half, -half], axis=1)
    out["fc2"] = (he(2, 256) * fc2_scale).astype(np.float32)
    return out


def set_deploy_params(deploy_net, params: dict) -> None:
    """Copy :func:`read_caffemodel`-style ``params`` into a pycaffe deploy twin (both branches), in place."""
    for name in TRUNK:
        for layer in (name, f"{name}_p"):
            for dst, src in zip(deploy_net.params[layer], params[name]):
                dst.data[...] = src.reshape(dst.data.shape)
    for key, (conv, _) in _FC_NAMES.items():
        dst = deploy_net.params[conv][0].data
        dst[...] = params[key].reshape(dst.shape)


def fold_head(w1: np.ndarray, w2: np.ndarray) -> np.ndarray:
    """The folded head filter ``(W2[1] - W2[0]) @ W1`` reshaped to ``(1, C, 8, 8)``.

    Parameters
    ----------
    w1 : ndarray (K, C*8*8)
        fc1 weights (or fc1-conv weights, any shape with K rows).
    w2 : ndarray (2, K)
        fc2 weights.

    Returns
    -------
    ndarray (1, C, 8, 8), float32
        ``sigmoid(<w, x>)`` equals ``softmax(W2 @ W1 @ x)[1]`` for every ``x`` (computed in float64).
    """
    w1 = np.asarray(w1, dtype=np.float64).reshape(np.shape(w1)[0], -1)
    w2 = np.asarray(w2, dtype=np.float64).reshape(2, -1)
    w = (w2[1] - w2[0]) @ w1
    return w.reshape(1, -1, FC1_KERNEL, FC1_KERNEL).astype(np.float32)


def build_onnx(params: dict):
    """The folded deploy twin as an ``onnx.ModelProto`` from :func:`read_caffemodel` parameters."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, arr):
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    x = INPUT
    for i, name in enumerate(TRUNK):
        w, b = params[name]
        k = w.shape[-1]
        nodes.append(helper.make_node("Conv", [x, const(f"{name}_w", w), const(f"{name}_b", b)], [name],
                                      name=name, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[1, 1]))
        nodes.append(helper.make_node("Relu", [name], [f"relu{i + 1}"], name=f"relu{i + 1}"))
        x = f"relu{i + 1}"
        if name == "conv2":
            nodes.append(helper.make_node("MaxPool", [x], ["pool1"], name="pool1", kernel_shape=[2, 2],
                                          strides=[2, 2], ceil_mode=1))
            x = "pool1"
    c3 = params["conv3"][0].shape[0]
    nodes.append(helper.make_node("Reshape", [x, const("concat_shape", np.array([1, 2 * c3, 0, 0], np.int64))],
                                  ["concat"], name="concat"))
    # The 8x8 head as a 1x1 convolution to k*k = 64 channels (one per kernel tap, a plain GEMM) and a sum of
    # the 64 tap maps, each shifted by its tap offset: the same sums, and far faster than a 1-output 8x8 conv.
    k = FC1_KERNEL
    head = fold_head(params["fc1"], params["fc2"])                       # (1, 512, 8, 8)
    taps = head[0].transpose(1, 2, 0).reshape(k * k, -1, 1, 1)           # tap (dy, dx) -> channel dy*8+dx
    nodes.append(helper.make_node("Conv", ["concat", const("head_taps_w", taps)], ["taps"], name="head_taps",
                                  kernel_shape=[1, 1]))
    big = np.iinfo(np.int64).max
    shifted = []
    for dy in range(k):
        for dx in range(k):
            c = dy * k + dx
            ends = [c + 1, dy - (k - 1) if dy < k - 1 else big, dx - (k - 1) if dx < k - 1 else big]
            nodes.append(helper.make_node(
                "Slice", ["taps", const(f"tap{c}_starts", np.array([c, dy, dx], np.int64)),
                          const(f"tap{c}_ends", np.array(ends, np.int64)), "tap_axes"],
                [f"tap{c}"], name=f"tap{c}"))
            shifted.append(f"tap{c}")
    const("tap_axes", np.array([1, 2, 3], np.int64))
    nodes.append(helper.make_node("Sum", shifted, ["logit"], name="head_sum"))
    nodes.append(helper.make_node("Sigmoid", ["logit"], [OUTPUT], name="prob"))
    graph = helper.make_graph(
        nodes, "cnn_fusion_folded",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [2, 1, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 1, "h", "w"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pyfusion", doc_string=__doc__.split("\n\n")[0])
    model.ir_version = min(model.ir_version, 8)
    onnx.checker.check_model(model)
    return model


def export_onnx(caffemodel, out, *, extra: dict | None = None) -> dict:
    """Write the folded ONNX model ``out`` from ``caffemodel`` and its side-car ``<out>.json``.

    Parameters
    ----------
    caffemodel : path
        Deploy caffemodel (or train_val snapshot) holding the weights.
    out : path
        ONNX file to write (atomically, as is the side-car).
    extra : dict, optional
        More side-car entries.

    Returns
    -------
    dict
        The side-car: ``sha256`` of the ONNX file, ``source_caffemodel``, ``source_sha256``, opset, graph I/O.
    """
    from .data import sha256_file

    out = Path(out)
    model = build_onnx(read_caffemodel(caffemodel))
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, model.SerializeToString())
    meta = {
        "model": out.name,
        "sha256": sha256_file(out),
        "format": f"onnx opset {OPSET}",
        "input": f"{INPUT}: (2, 1, H, W) float32, sources A and B in [0, 1]",
        "output": f"{OUTPUT}: (1, 1, ceil(H/2) - 7, ceil(W/2) - 7), P(source A in focus)",
        "head": "fc2 . fc1 folded into one 1x512x8x8 convolution + sigmoid",
        "source_caffemodel": Path(caffemodel).name,
        "source_sha256": sha256_file(caffemodel),
        **(extra or {}),
    }
    write_atomic(Path(str(out) + ".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return meta
