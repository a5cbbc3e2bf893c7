"""Net files from a registry entry: the train_val net and its convolutional deploy twin, as prototxt text.

Every registered model (:mod:`pyfusion.models`) has the same trunk ([1]_ Fig. 2: conv 3x3 -> ReLU -> conv 3x3 ->
ReLU -> max pool 2x2/2 -> conv 3x3 -> ReLU; 64, 128, 256 channels; Xavier weights, zero biases), then fc1 (256, no
bias) and fc2 (2, no bias) with no nonlinearity between them, as in the authors' released deploy code. What
differs is written here once, from the entry: input channels, patch size (fc1 covers 512 x head x head), branch
layout (siamese: shared parameter names; pseudo-siamese: own names; 2-channel: one trunk on the stacked pair) and
the HDF5 dataset the data layer reads. ``tools/make_prototxt.py`` writes ``prototxt/NAME_*.prototxt``;
tests/test_prototxt.py checks the files are up to date.

In the deploy twin fc1 becomes a ``head`` x ``head`` convolution and fc2 a 1x1 convolution over the concatenated
branches (``fc1-conv``, ``fc2-conv``), so a whole image pair gives a score map at the pool's stride ([1]_ Sec.
3.3.1); inputs ``a``, ``b`` (1 x C x H x W), output ``prob`` (channel 1 = source A in focus).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

from pyfusion.models import FC1_OUTPUTS, TRUNK_CHANNELS, Model

__all__ = ["train_val", "deploy", "deploy_input_net"]

_FILLERS = '    weight_filler { type: "xavier" }\n    bias_filler { type: "constant"  value: 0 }\n'


def _conv(name: str, bottom: str, out: int, param: str) -> str:
    return (f'layer {{\n  name: "{name}"  type: "Convolution"  bottom: "{bottom}"  top: "{name}"\n'
            f'  param {{ name: "{param}_w" }}\n  param {{ name: "{param}_b" }}\n  convolution_param {{\n'
            f"    num_output: {out}  kernel_size: 3  pad: 1  stride: 1\n{_FILLERS}  }}\n}}\n"
            f'layer {{ name: "relu{name[4:]}"  type: "ReLU"  bottom: "{name}"  top: "{name}" }}\n')


def _trunk(bottom: str, suffix: str, shared: bool) -> str:
    """conv1 .. relu3 on ``bottom``; layer names end in ``suffix``; parameters named without it when ``shared``."""
    c1, c2, c3 = TRUNK_CHANNELS
    p = "" if shared else suffix
    return (_conv(f"conv1{suffix}", bottom, c1, f"conv1{p}") + _conv(f"conv2{suffix}", f"conv1{suffix}", c2, f"conv2{p}")
            + f'layer {{\n  name: "pool1{suffix}"  type: "Pooling"  bottom: "conv2{suffix}"  top: "pool1{suffix}"\n'
              f"  pooling_param {{ pool: MAX  kernel_size: 2  stride: 2 }}\n}}\n"
            + _conv(f"conv3{suffix}", f"pool1{suffix}", c3, f"conv3{p}"))


def _body(m: Model, a: str, b: str) -> tuple[str, str]:
    """The trunk(s) on inputs ``a``, ``b`` and the name of the blob fc1 reads."""
    if m.branches == "2ch":
        return (f'layer {{ name: "stack"  type: "Concat"  bottom: "{a}"  bottom: "{b}"  top: "stack"  '
                f"concat_param {{ axis: 1 }} }}\n" + _trunk("stack", "", True), "conv3")
    if m.branches not in ("siamese", "pseudo"):
        raise ValueError(f"{m.name}: unknown branch layout {m.branches!r}")
    shared = m.branches == "siamese"
    how = "every parameter shared with the other branch by name" if shared else "parameters of its own"
    n = 2 * TRUNK_CHANNELS[-1]
    return (f"# ---- branch A (input {a}); {how} ----\n" + _trunk(a, "", shared)
            + f"# ---- branch B (input {b}); {how} ----\n" + _trunk(b, "_p", shared)
            + f"# ---- both branches side by side: {n} x {m.head} x {m.head} for a {m.patch} x {m.patch} patch pair ----\n"
            + 'layer { name: "concat"  type: "Concat"  bottom: "conv3"  bottom: "conv3_p"  top: "concat"  '
              "concat_param { axis: 1 } }\n", "concat")


def _header(m: Model, kind: str) -> str:
    return (f"# {m.name} ({kind}): {m.about}.\n# Written by tools/make_prototxt.py from pyfusion.models.MODELS"
            f"[{m.name!r}] (pyfusion/netspec.py); do not edit by hand.\n"
            f"# Trunk and head of Liu, Chen, Peng, Wang, Information Fusion 36 (2017) 191-207, Fig. 2; "
            f"branches: {m.branches}.\n")


def _inputs(m: Model) -> str:
    c, p = m.in_channels, m.patch
    return "".join(f'layer {{ name: "{x}"  type: "Input"  top: "{x}"  input_param {{ shape {{ dim: 1 dim: {c} '
                   f"dim: {p} dim: {p} }} }} }}\n" for x in ("a", "b"))


def _split(m: Model) -> str:
    top, c = m.data_top, m.in_channels
    return (f"# {top}: N x {2 * c} x {m.patch} x {m.patch} float32; channels 0..{c - 1} = source A, "
            f"{c}..{2 * c - 1} = source B\n"
            f'layer {{\n  name: "slice"  type: "Slice"  bottom: "{top}"  top: "a"  top: "b"\n'
            f"  slice_param {{ axis: 1  slice_point: {c} }}\n}}\n")


def train_val(m: Model, *, train_list: str | None = None, val_list: str | None = None, batch: int = 128,
              val_batch: int = 100) -> str:
    """The train_val net of ``m``: HDF5 data (train and test phases), slice, trunk(s), fc1, fc2, loss, accuracy.

    ``train_list``/``val_list``: the data layers' list files (default ``data/<m.data>/{train,val}/list.txt``).
    """
    train_list = train_list or f"data/{m.data}/train/list.txt"
    val_list = val_list or f"data/{m.data}/val/list.txt"
    top = m.data_top
    data = "".join(f'layer {{\n  name: "data"  type: "HDF5Data"  top: "{top}"  top: "label"\n'
                   f"  include {{ phase: {phase} }}\n  hdf5_data_param {{ source: \"{src}\"  batch_size: {bs}"
                   f"{'  shuffle: true' if phase == 'TRAIN' else ''} }}\n}}\n"
                   for phase, src, bs in (("TRAIN", train_list, batch), ("TEST", val_list, val_batch)))
    body, fc_in = _body(m, "a", "b")
    return (_header(m, "train_val") + f'name: "{m.name}_train_val"\n' + data + _split(m) + body
            + _fc(fc_in, "fc1", "fc1", FC1_OUTPUTS, None) + _fc("fc1", "fc2", "fc2", 2, None)
            + "# label 1 = A is the focused patch, label 0 = B is\n"
              'layer { name: "loss"  type: "SoftmaxWithLoss"  bottom: "fc2"  bottom: "label"  top: "loss" }\n'
              'layer { name: "accuracy"  type: "Accuracy"  bottom: "fc2"  bottom: "label"  top: "accuracy"  '
              "include { phase: TEST } }\n")


def _fc(bottom: str, name: str, param: str, out: int, kernel: int | None) -> str:
    """fc layer without bias: InnerProduct (``kernel`` None) or its convolution form with that kernel size."""
    if kernel is None:
        return (f'layer {{\n  name: "{name}"  type: "InnerProduct"  bottom: "{bottom}"  top: "{name}"\n'
                f'  param {{ name: "{param}_w" }}\n  inner_product_param {{ num_output: {out}  bias_term: false  '
                f'weight_filler {{ type: "xavier" }} }}\n}}\n')
    return (f'layer {{\n  name: "{name}"  type: "Convolution"  bottom: "{bottom}"  top: "{name}"\n'
            f'  param {{ name: "{param}_w" }}\n  convolution_param {{ num_output: {out}  kernel_size: {kernel}  '
            f"bias_term: false }}\n}}\n")


def deploy(m: Model) -> str:
    """The convolutional deploy twin of ``m``: inputs ``a``, ``b``; fc1/fc2 as convolutions; softmax ``prob``."""
    body, fc_in = _body(m, "a", "b")
    return (_header(m, "deploy") + f'name: "{m.name}_deploy"\n' + _inputs(m) + body
            + _fc(fc_in, "fc1-conv", "fc1", FC1_OUTPUTS, m.head) + _fc("fc1-conv", "fc2-conv", "fc2", 2, 1)
            + 'layer { name: "prob"  type: "Softmax"  bottom: "fc2-conv"  top: "prob" }\n')


def deploy_folded(m: Model) -> str:
    """The deploy twin of ``m`` with fc2 . fc1 folded into one K x K convolution to the logit difference and a
    sigmoid ``prob`` (one channel: P(source A in focus)); weights from :func:`fusionlab.onnx_export.fold_head`.
    The same scores as :func:`deploy` up to float rounding, with 1/256 of its head's multiplications."""
    body, fc_in = _body(m, "a", "b")
    return (_header(m, "deploy, folded head") + f'name: "{m.name}_deploy_folded"\n' + _inputs(m) + body
            + _fc(fc_in, "head", "head", 1, m.head)
            + 'layer { name: "prob"  type: "Sigmoid"  bottom: "head"  top: "prob" }\n')


def deploy_input_net(m: Model) -> str:
    """The train_val net with an Input layer instead of its HDF5 data (for net surgery and tests: no data files)."""
    c, p = m.in_channels, m.patch
    body, fc_in = _body(m, "a", "b")
    return (f'name: "{m.name}_train_input"\n'
            f'layer {{ name: "data"  type: "Input"  top: "{m.data_top}"  top: "label"\n'
            f"  input_param {{ shape {{ dim: 1 dim: {2 * c} dim: {p} dim: {p} }} shape {{ dim: 1 }} }} }}\n"
            + _split(m) + body + _fc(fc_in, "fc1", "fc1", FC1_OUTPUTS, None) + _fc("fc1", "fc2", "fc2", 2, None)
            + 'layer { name: "prob"  type: "Softmax"  bottom: "fc2"  top: "prob" }\n')
