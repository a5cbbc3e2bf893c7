"""Net surgery: a trained train_val caffemodel becomes the convolutional deploy twin's caffemodel.

The conv layers are copied as they are; fc1 (256 x 32768) is reshaped to an 8x8 convolution (256 x 512 x 8 x 8) and
fc2 (2 x 256) to a 1x1 convolution (2 x 256 x 1 x 1), as in Caffe's net-surgery example and [1]_, Sec. 3.3.1.
The InnerProduct layer flattens the concatenated 512 x 8 x 8 blob in C-order (channel, row, column), which is
exactly the layout of a convolution kernel, so the reshape is a plain view.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from pyfusion import models

from pyfusion import netspec
from pyfusion.io import write_atomic
from fusionlab.train import caffe_version
from fusionlab import ROOT
from pyfusion.util import sha256_file

FC_TO_CONV = {"fc1": "fc1-conv", "fc2": "fc2-conv"}


def surgery(train_net, deploy_net) -> None:
    """Copy every parameter of ``train_net`` (TRAIN/TEST net) into ``deploy_net`` (deploy twin), in place.

    Convolutions by layer name (``conv1`` .. ``conv3``, and a pseudo-siamese net's ``conv1_p`` .. with weights of
    their own); fc1/fc2 reshaped to their convolution form.
    """
    for name in [n for n in deploy_net.params if n.startswith("conv")]:
        for src, dst in zip(train_net.params[name], deploy_net.params[name]):
            dst.data[...] = src.data
    for fc, conv in FC_TO_CONV.items():
        src, dst = train_net.params[fc][0].data, deploy_net.params[conv][0].data
        if src.size != dst.size:
            raise ValueError(f"{fc} has {src.shape}, {conv} needs {dst.shape}")
        dst[...] = src.reshape(dst.shape)


def export_deploy(snapshot, out, *, net: str = "cnn", extra: dict | None = None) -> dict:
    """Write the deploy caffemodel ``out`` from the train snapshot ``snapshot`` and its side-car ``out.json``.

    ``net``: the registered model the snapshot was trained as. The side-car records it, the source snapshot, its
    iteration, the sha256 of both files, the Caffe source version and ``extra`` (for instance the training config
    and validation accuracy). Both files are written atomically.
    """
    import caffe

    m = models.get(net)
    caffe.set_mode_cpu()
    train_net = train_input_net(m, snapshot)
    deploy_net = caffe.Net(str(m.deploy), caffe.TEST)
    surgery(train_net, deploy_net)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    deploy_net.save(str(tmp))
    os.replace(tmp, out)
    it = re.findall(r"_iter_(\d+)\.caffemodel$", str(snapshot))
    meta = {
        "model": out.name,
        "sha256": sha256_file(out),
        "net": m.name,
        "deploy_prototxt": str(m.deploy.relative_to(ROOT)),
        "inputs": ["a", "b"],
        "output": "prob (channel 1 = source A in focus)",
        "source_snapshot": str(snapshot),
        "source_sha256": sha256_file(snapshot),
        "iteration": int(it[0]) if it else None,
        "caffe": caffe_version(),
        **(extra or {}),
    }
    write_atomic(Path(str(out) + ".json"), json.dumps(meta, indent=2) + "\n")
    return meta


def train_input_net(model, weights=None):
    """The train_val net of ``model`` (TEST phase) with an Input layer instead of its HDF5 data.

    For net surgery and tests: no data files needed (:func:`pyfusion.netspec.deploy_input_net`).
    """
    import tempfile

    import caffe

    with tempfile.NamedTemporaryFile("w", suffix=".prototxt", delete=False) as f:
        f.write(netspec.deploy_input_net(models.get(model)))
    try:
        return caffe.Net(f.name, str(weights), caffe.TEST) if weights else caffe.Net(f.name, caffe.TEST)
    finally:
        os.unlink(f.name)
