"""The deploy twin as an ONNX model with a folded head, for ONNX Runtime (the fast backend of :mod:`pyfusion.net`).

Graph (input ``pair``: ``(2, C0, H, W)`` float32, source A then source B, C0 = the channels of each source: 1 for
grayscale sources, 3 for the wavelet high bands LH/HL/HH as channels; output ``score``: ``(1, 1, h, w)``)::

    conv1 3x3 pad 1 -> ReLU -> conv2 3x3 pad 1 -> ReLU -> max pool 2x2/2 (ceil mode, as Caffe)
    -> conv3 3x3 pad 1 -> ReLU                  (both sources in one batch of 2: the branches share weights)
    -> reshape (2, 256, h', w') -> (1, 512, h', w')     (= Caffe's channel concat of branch A, branch B)
    -> head: one KxK convolution (K = 8 for 16x16 patches), 512 -> 1 channel -> [+ head_bias] -> Sigmoid
       (computed as a 1x1 convolution 512 -> K*K tap maps, summed with their KxK tap offsets)

That is the siamese layout of the paper. The ablation layouts (:mod:`pyfusion.models` ``branches``) differ only
before the head: a pseudo-siamese net slices the pair into A and B and runs each through a trunk of its own
(initializers ``conv1_w`` .. for A, ``conv1_p_w`` .. for B) before the concat; a 2-channel net reshapes the pair
to ``(1, 2 C0, H, W)`` (A's channels, then B's: Caffe's concat of the two inputs) and runs one trunk, whose
256 conv3 maps the head reads. The layout is also recorded in the model's metadata (``branches``).

Head folding: fc1 (256 x 512·K·K, bias b1) and fc2 (2 x 256, bias b2) have no nonlinearity between them, so the two
logits are ``l = W2 (W1 x + b1) + b2`` and ``softmax(l)[1] = 1 / (1 + exp(l0 - l1)) = sigmoid(w x + beta)`` with
``w = (W2[1] - W2[0]) @ W1`` and ``beta = (W2[1] - W2[0]) . b1 + b2[1] - b2[0]``. The head is therefore the single
filter ``w`` reshaped to ``1 x 512 x K x K`` (the InnerProduct flattening order is the convolution kernel layout,
see :mod:`fusionlab.export`), plus the scalar ``beta`` (initializer ``head_bias``, only when the caffemodel's fc
layers have biases: the shipped nets have none), followed by a sigmoid: 256x fewer multiply-adds in the head than
the Caffe twin's fc1-conv.

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

from pyfusion.backends.head import fold_head, fold_head_bias
from pyfusion.io import write_atomic

__all__ = ["read_caffemodel", "params_from_layers", "fold_head", "fold_head_bias", "head_kernel", "branches_of",
           "build_onnx", "export_onnx", "set_deploy_params", "OPSET", "INPUT", "OUTPUT"]

OPSET = 17
INPUT = "pair"
OUTPUT = "score"
TRUNK = ("conv1", "conv2", "conv3")
#: Suffix of branch B's layers (pyfusion.netspec); a pseudo-siamese net's B trunk has weights of its own under it.
B_SUFFIX = "_p"
_FC_NAMES = {"fc1": ("fc1-conv", "fc1"), "fc2": ("fc2-conv", "fc2")}


def _blob_array(blob) -> np.ndarray:
    """A caffe_pb2.BlobProto as a float32 array (new ``shape`` or legacy num/channels/height/width)."""
    data = blob.data if len(blob.data) else blob.double_data
    if blob.HasField("shape"):
        dims = tuple(blob.shape.dim)
    else:
        dims = (blob.num, blob.channels, blob.height, blob.width)
    return np.asarray(data, dtype=np.float32).reshape(dims)


def read_caffemodel(path, *, branches: str | None = None) -> dict:
    """Parameters of a deploy caffemodel or train_val snapshot, by layer name.

    Parameters
    ----------
    path : path
        ``.caffemodel`` file (binary NetParameter).
    branches : str, optional
        Branch layout (``"siamese"``, ``"pseudo"``, ``"2ch"``); default: that of the registered net its
        side-car names (``"net"``), else siamese.

    Returns
    -------
    dict
        :func:`params_from_layers` of the file's layers.

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
    if branches is None:
        from pyfusion.models import get, side_car

        branches = get(side_car(path).get("net", "cnn")).branches
    return params_from_layers(layers, source=str(path), branches=branches)


def params_from_layers(layers: dict, *, source: str = "the model", branches: str = "siamese") -> dict:
    """The net's parameters from ``{layer name: [blob arrays]}`` (what :func:`read_caffemodel` parses).

    Returns
    -------
    dict
        ``{"conv1": (W, b), "conv2": (W, b), "conv3": (W, b), "fc1": W1 (256, 2*C3*K*K), "fc2": W2 (2, 256)}``,
        float32 arrays (conv1's W is ``(64, C0, 3, 3)``: C0 input channels), plus ``"fc1_b"`` (256,) and
        ``"fc2_b"`` (2,) when the fc layers have biases (:func:`build_onnx` folds them into ``head_bias``).
        ``branches="pseudo"``: also branch B's ``"conv1_p"`` .. ``"conv3_p"``; ``"2ch"``: conv1 takes both sources'
        channels (2 C0) and fc1 reads one trunk (256, C3*K*K).

    Raises
    ------
    ValueError
        A layer is missing, has an unexpected number of blobs, or a blob has an unexpected size.
    """
    if branches not in ("siamese", "pseudo", "2ch"):
        raise ValueError(f"{source}: unknown branch layout {branches!r}")
    out = {}
    for name in TRUNK + (tuple(n + B_SUFFIX for n in TRUNK) if branches == "pseudo" else ()):
        if name not in layers or len(layers[name]) != 2:
            raise ValueError(f"{source}: layer {name} with weights and bias not found")
        w, b = layers[name]
        out[name] = (np.asarray(w, np.float32), np.asarray(b, np.float32).reshape(-1))
    for key, names in _FC_NAMES.items():
        found = [n for n in names if n in layers]
        if not found:
            raise ValueError(f"{source}: none of the layers {names} found")
        blobs = layers[found[0]]
        if len(blobs) not in (1, 2):
            raise ValueError(f"{source}: layer {found[0]} has {len(blobs)} blobs (expected weights, optional bias)")
        w = np.asarray(blobs[0], np.float32)
        out[key] = w.reshape(w.shape[0], -1)
        if len(blobs) == 2:
            out[f"{key}_b"] = np.asarray(blobs[1], np.float32).reshape(-1)
    c3 = out["conv3"][0].shape[0]
    hidden = out["fc1"].shape[0]
    if out["fc2"].shape != (2, hidden) or head_kernel(out) is None or \
            (branches_of(out) == "2ch") != (branches == "2ch"):
        raise ValueError(f"{source}: fc1 {out['fc1'].shape} / fc2 {out['fc2'].shape} do not fit conv3 {c3} channels "
                         f"of a {branches} net")
    for key, n in (("fc1_b", hidden), ("fc2_b", 2)):
        if key in out and out[key].shape != (n,):
            raise ValueError(f"{source}: {key[:3]} bias {out[key].shape}, expected ({n},)")
    return out


def _head_reads(params: dict) -> tuple[int, int] | None:
    """``(maps, K)``: the head reads ``maps`` conv3 outputs (2: one per branch; 1: a 2-channel net's one trunk) of
    C3 channels over K x K, from fc1's width ``maps * C3 * K * K``; None when the width has neither form (it never
    has both: K^2 = 2 K'^2 has no integer solution)."""
    c3 = params["conv3"][0].shape[0]
    width = int(np.prod(np.shape(params["fc1"])[1:]))
    for maps in (2, 1):
        kk, rest = divmod(width, maps * c3)
        k = int(round(kk ** 0.5))
        if rest == 0 and k >= 1 and k * k == kk:
            return maps, k
    return None


def head_kernel(params: dict) -> int | None:
    """The head's kernel size K from fc1's width ``2 * C3 * K * K`` (8 for the paper's 16x16 patches; a 2-channel
    net's ``C3 * K * K``), or None when the width is not of that form."""
    reads = _head_reads(params)
    return reads[1] if reads else None


def branches_of(params: dict) -> str:
    """The branch layout of ``params``: ``"pseudo"`` (branch B's own ``conv1_p`` ..), ``"2ch"`` (fc1 reads one
    trunk) or ``"siamese"``."""
    if "conv1" + B_SUFFIX in params:
        return "pseudo"
    reads = _head_reads(params)
    return "2ch" if reads and reads[0] == 1 else "siamese"


def set_deploy_params(deploy_net, params: dict) -> None:
    """Copy :func:`read_caffemodel`-style ``params`` into a pycaffe deploy twin (both branches), in place.

    A siamese ``params`` fills both branches alike; a pseudo-siamese one fills branch B from ``conv1_p`` ...

    Raises ValueError for fc biases (``fc1_b``/``fc2_b``) that are not all zero when the twin's fc layers have no
    bias blob (``bias_term: false``), instead of dropping them.
    """
    for name in TRUNK:
        for layer in (name, name + B_SUFFIX):
            if layer in deploy_net.params:     # a 2-channel twin has one trunk; a siamese B shares A's weights
                for dst, src in zip(deploy_net.params[layer], params.get(layer, params[name])):
                    dst.data[...] = src.reshape(dst.data.shape)
    for key, (conv, _) in _FC_NAMES.items():
        blobs = deploy_net.params[conv]
        blobs[0].data[...] = params[key].reshape(blobs[0].data.shape)
        bias = params.get(f"{key}_b")
        if len(blobs) > 1:
            blobs[1].data[...] = 0 if bias is None else np.reshape(bias, blobs[1].data.shape)
        elif bias is not None and np.any(bias):
            raise ValueError(f"{conv} of the deploy net has no bias blob: cannot set a nonzero {key} bias")


def build_onnx(params: dict):
    """The folded deploy twin as an ``onnx.ModelProto`` from :func:`read_caffemodel` parameters.

    The input ``pair`` is ``(2, C0, H, W)`` with C0 conv1's input channels; the head's kernel K comes from fc1's
    width (:func:`head_kernel`); fc biases (``fc1_b``/``fc2_b``) are folded into a scalar ``head_bias`` added
    before the sigmoid (the graph has no such node when the fc layers have no biases).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits, nodes = [], []

    def const(name, arr):
        arr = np.ascontiguousarray(arr) if np.ndim(arr) else np.asarray(arr)   # a scalar stays 0-d
        inits.append(numpy_helper.from_array(arr, name))
        return name

    def trunk(x, suffix=""):
        for i, layer in enumerate(TRUNK):
            name = layer + suffix
            w, b = params[name]
            k = w.shape[-1]
            nodes.append(helper.make_node("Conv", [x, const(f"{name}_w", w), const(f"{name}_b", b)], [name],
                                          name=name, kernel_shape=[k, k], pads=[k // 2] * 4, strides=[1, 1]))
            nodes.append(helper.make_node("Relu", [name], [f"relu{i + 1}{suffix}"], name=f"relu{i + 1}{suffix}"))
            x = f"relu{i + 1}{suffix}"
            if layer == "conv2":
                nodes.append(helper.make_node("MaxPool", [x], [f"pool1{suffix}"], name=f"pool1{suffix}",
                                              kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1))
                x = f"pool1{suffix}"
        return x

    layout = branches_of(params)
    c3 = params["conv3"][0].shape[0]
    k = head_kernel(params)
    if k is None:
        raise ValueError(f"fc1 {np.shape(params['fc1'])} does not fit conv3's {c3} channels (2 * {c3} * K * K)")
    if layout == "2ch":      # the pair as one input of 2 C0 channels (A's, then B's), one trunk
        c0 = params["conv1"][0].shape[1] // 2
        nodes.append(helper.make_node("Reshape", [INPUT, const("stack_shape", np.array([1, -1, 0, 0], np.int64))],
                                      ["stack"], name="stack"))
        nodes.append(helper.make_node("Identity", [trunk("stack")], ["concat"], name="concat"))
    elif layout == "pseudo":  # A and B through trunks of their own, then the channel concat
        c0 = params["conv1"][0].shape[1]
        halves = []
        for j, suffix in enumerate(("", B_SUFFIX)):
            nodes.append(helper.make_node(
                "Slice", [INPUT, const(f"src{j}_starts", np.array([j], np.int64)),
                          const(f"src{j}_ends", np.array([j + 1], np.int64)), const(f"src{j}_axes", np.array([0]))],
                [f"src{j}"], name=f"src{j}"))
            halves.append(trunk(f"src{j}", suffix))
        nodes.append(helper.make_node("Concat", halves, ["concat"], name="concat", axis=1))
    else:                     # siamese: both sources in one batch of 2, then (2, C3, h, w) -> (1, 2 C3, h, w)
        c0 = params["conv1"][0].shape[1]
        nodes.append(helper.make_node("Reshape", [trunk(INPUT), const("concat_shape",
                                                                      np.array([1, 2 * c3, 0, 0], np.int64))],
                                      ["concat"], name="concat"))
    # The KxK head as a 1x1 convolution to k*k channels (one per kernel tap, a plain GEMM) and a sum of the k*k
    # tap maps, each shifted by its tap offset: the same sums, and far faster than a 1-output KxK conv.
    head = fold_head(params["fc1"], params["fc2"], kernel=k)             # (1, 512, K, K)
    taps = head[0].transpose(1, 2, 0).reshape(k * k, -1, 1, 1)           # tap (dy, dx) -> channel dy*K+dx
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
    logit = "logit"
    if "fc1_b" in params or "fc2_b" in params:
        bias = fold_head_bias(params["fc2"], params.get("fc1_b"), params.get("fc2_b"))
        nodes.append(helper.make_node("Add", [logit, const("head_bias", np.array(bias, np.float32))],
                                      ["logit_biased"], name="head_bias"))
        logit = "logit_biased"
    nodes.append(helper.make_node("Sigmoid", [logit], [OUTPUT], name="prob"))
    graph = helper.make_graph(
        nodes, "cnn_fusion_folded",
        [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, [2, c0, "H", "W"])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, [1, 1, "h", "w"])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="pyfusion", doc_string=__doc__.split("\n\n")[0])
    model.ir_version = min(model.ir_version, 8)
    onnx.helper.set_model_props(model, {"branches": layout})
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
        The side-car: ``sha256`` of the ONNX file, ``source_caffemodel``, ``source_sha256``, opset, graph I/O, and
        the registered ``net`` when the caffemodel's side-car names one (:func:`pyfusion.models.resolve` reads it).
    """
    from pyfusion.models import side_car
    from pyfusion.util import sha256_file

    out = Path(out)
    params = read_caffemodel(caffemodel)
    model = build_onnx(params)
    layout = branches_of(params)
    c0, c3, k = params["conv1"][0].shape[1] // (2 if layout == "2ch" else 1), params["conv3"][0].shape[0], \
        head_kernel(params)
    maps = 1 if layout == "2ch" else 2
    biased = "fc1_b" in params or "fc2_b" in params
    out.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(out, model.SerializeToString())
    meta = {
        "model": out.name,
        "sha256": sha256_file(out),
        "format": f"onnx opset {OPSET}",
        "input": (f"{INPUT}: (2, 1, H, W) float32, sources A and B in [0, 1]" if c0 == 1 else
                  f"{INPUT}: (2, {c0}, H, W) float32, sources A and B ({c0} channels each)"),
        "output": f"{OUTPUT}: (1, 1, ceil(H/2) - {k - 1}, ceil(W/2) - {k - 1}), P(source A in focus)",
        "branches": layout,
        "head": f"fc2 . fc1 folded into one 1x{maps * c3}x{k}x{k} convolution{' + bias' if biased else ''} + sigmoid",
        "source_caffemodel": Path(caffemodel).name,
        "source_sha256": sha256_file(caffemodel),
        **({"net": side_car(caffemodel)["net"]} if "net" in side_car(caffemodel) else {}),
        **(extra or {}),
    }
    write_atomic(Path(str(out) + ".json"), (json.dumps(meta, indent=2) + "\n").encode())
    return meta
