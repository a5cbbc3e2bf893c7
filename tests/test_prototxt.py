"""The net files of every registered model: up to date with the registry, they parse, the branches share
weights, the deploy twin computes what the train net does; every shipped net file runs as shipped (Caffe's own
parser reads it and the files it names exist) and the docs name net files that exist."""
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyfusion import models

from pyfusion import netspec
from fusionlab.train import TrainConfig, data_lists

ROOT = Path(__file__).resolve().parents[1]
PROTO = ROOT / "prototxt"
NETS = sorted(models.MODELS)


#: Every .prototxt file of the checkout that git ships (tracked, or new and not ignored), repo-relative.
SHIPPED = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "*.prototxt"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout.split()
#: Fields of Caffe's messages that name a file (a snapshot prefix names a run folder that training creates).
PATH_FIELDS = {"net", "train_net", "test_net", "source", "mean_file", "weights"}
#: The user documentation, whose prototxt/NAME.prototxt paths must exist.
DOCS = [ROOT / "README.md", ROOT / "models" / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _layers(text):
    """(name, type, block) of every layer in a prototxt text."""
    out = []
    for m in re.finditer(r'layer \{\s*name: "([^"]+)"\s+type: "([^"]+)"', text):
        depth, i = 0, m.start()
        for j in range(m.start(), len(text)):
            depth += {"{": 1, "}": -1}.get(text[j], 0)
            if depth == 0 and text[j] == "}":
                out.append((m.group(1), m.group(2), text[i:j + 1]))
                break
    return out


def _branch(layers, suffix):
    names = ("conv1", "relu1", "conv2", "relu2", "pool1", "conv3", "relu3")
    by = {n: blk for n, _, blk in layers}
    return [re.sub(r'(name|bottom|top): "(\w+?)%s"' % suffix, r'\1: "\2"', by[n + suffix]) if suffix else by[n]
            for n in names]


def test_net_files_are_up_to_date():
    """The committed prototxt files are what tools/make_prototxt.py writes from the registry."""
    r = subprocess.run([sys.executable, "-m", "fusionlab", "make-prototxt", "--check"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    for name in NETS:
        m = models.get(name)
        assert m.train_val.read_text() == netspec.train_val(m) and m.deploy.read_text() == netspec.deploy(m)


def _suffixes(m):
    """Layer-name suffixes of the branches: A and B (``_p``), or one trunk for a 2-channel net."""
    return ("",) if m.branches == "2ch" else ("", "_p")


@pytest.mark.parametrize("name,kind", [(n, k) for n in NETS for k in ("train_val", "deploy")])
def test_branches_are_identical_text(name, kind):
    """Branch B is branch A with every name suffixed by _p (no drift between the two branches); a pseudo-siamese
    net's parameter names carry the suffix too (weights of their own), a siamese net's do not (shared)."""
    m = models.get(name)
    layers = _layers((PROTO / f"{name}_{kind}.prototxt").read_text())
    if m.branches == "2ch":
        assert not any(n.endswith("_p") for n, _, _ in layers)
        assert 'bottom: "stack"' in dict((n, b) for n, _, b in layers)["conv1"]
        return
    a, b = _branch(layers, ""), _branch(layers, "_p")
    if m.branches == "pseudo":
        assert all('_p_w" }' in x for x in b if 'param { name' in x)
        b = [re.sub(r'param \{ name: "(\w+)_p_(w|b)" \}', r'param { name: "\1_\2" }', x) for x in b]
    assert a == [re.sub(r'bottom: "b"', 'bottom: "a"', x) for x in b]


@pytest.mark.parametrize("name", NETS)
def test_twins_share_the_branch_definition(name):
    m = models.get(name)
    tv = _layers(m.train_val.read_text())
    dp = _layers(m.deploy.read_text())
    for s in _suffixes(m):
        assert _branch(tv, s) == _branch(dp, s)
    tvd = {n: blk for n, _, blk in tv}
    dpd = {n: blk for n, _, blk in dp}
    for fc, conv, k in (("fc1", "fc1-conv", m.head), ("fc2", "fc2-conv", 1)):
        n = re.search(r"num_output: (\d+)", tvd[fc]).group(1)
        assert re.search(r"num_output: (\d+)", dpd[conv]).group(1) == n
        assert f"kernel_size: {k}" in dpd[conv]
        for blk in (tvd[fc], dpd[conv]):
            assert "bias_term: false" in blk
    # no ReLU after fc1 in either twin
    assert not any(t == "ReLU" and "fc1" in blk for _, t, blk in tv + dp)


def test_solver_has_paper_hyperparameters():
    """Liu et al. 2017 Sec. 3.2.3: SGD, momentum 0.9, weight decay 5e-4, learning rate 1e-4."""
    s = (PROTO / "solver.prototxt").read_text()
    for key, val in (("base_lr", 1e-4), ("momentum", 0.9), ("weight_decay", 5e-4)):
        assert float(re.search(rf"^{key}: ([\d.e-]+)", s, re.M).group(1)) == val
    assert 'type: "SGD"' in s


def _named_paths(msg):
    """(field, value) of every file-naming string field set anywhere in a parsed Caffe message."""
    for field, value in msg.ListFields():
        values = value if field.label == field.LABEL_REPEATED else [value]
        if field.type == field.TYPE_MESSAGE:
            for v in values:
                yield from _named_paths(v)
        elif field.name in PATH_FIELDS:
            yield from ((field.full_name, v) for v in values)


def test_every_net_file_is_shipped():
    """The git listing the parser test runs over holds the registry's net files and the solver."""
    want = {str(p.relative_to(ROOT)) for n in NETS for p in (models.get(n).train_val, models.get(n).deploy)}
    assert want | {"prototxt/solver.prototxt"} <= set(SHIPPED)


@pytest.mark.caffe
@pytest.mark.parametrize("path", SHIPPED)
def test_shipped_net_file_runs_as_shipped(caffe, path):
    """Caffe's parser reads the file (a solver as SolverParameter, the rest as NetParameter), and every file it
    names is a repo-relative path, from the repo root: the solver's net exists; an HDF5 source is the list that
    `make dataset NET=name` writes for that net (fusionlab.train.data_lists)."""
    from caffe.proto import caffe_pb2
    from google.protobuf import text_format

    solver = path.endswith("solver.prototxt")
    msg = caffe_pb2.SolverParameter() if solver else caffe_pb2.NetParameter()
    text_format.Merge((ROOT / path).read_text(), msg)
    named = list(_named_paths(msg))
    if solver:
        assert msg.net and not (msg.train_net or msg.test_net), "a solver names one train_val net"
    lists = {str(models.get(n).train_val.relative_to(ROOT)): set(data_lists(TrainConfig(net=n))) for n in NETS}
    for field, value in named:
        assert not Path(value).is_absolute(), f"{path}: {field} {value!r} is not relative to the repo root"
        if field == "caffe.HDF5DataParameter.source":
            assert value in lists.get(path, ()), f"{path}: HDF5 source {value!r} is not a list `make dataset` writes"
        else:
            assert (ROOT / value).is_file(), f"{path}: {field} {value!r} does not exist"


def test_docs_name_existing_net_files():
    """Every prototxt/NAME.prototxt path in README.md, models/README.md and docs/*.md is a file of the checkout."""
    missing = [f"{doc.relative_to(ROOT)}: {name}" for doc in DOCS
               for name in sorted(set(re.findall(r"(?<![\w./-])prototxt/[\w.-]+\.prototxt", doc.read_text())))
               if not (ROOT / name).is_file()]
    assert not missing, f"net files named in the docs that do not exist: {missing}"


@pytest.mark.parametrize("name", NETS)
@pytest.mark.parametrize("hw,expect", [((16, 16), (1, 1)), ((17, 23), (2, 5)), ((520, 520), (253, 253)),
                                       ((31, 32), (9, 9))])
def test_deploy_score_shape(caffe, name, hw, expect):
    """(ceil(H/2) - 7, ceil(W/2) - 7): stated in Liu et al. 2017 Sec. 3.3.1 for the 16x16 patch at stride 2
    (ceil(H/2) - 3 for the 8x8 patch of the ablation net)."""
    m = models.get(name)
    expect = tuple(e + 8 - m.head for e in expect)      # the 8x8 head of the 16x16 patch, or the model's own
    assert m.score_shape(*hw) == expect
    net = caffe.Net(str(m.deploy), caffe.TEST)
    net.blobs["a"].reshape(1, m.in_channels, *hw)
    net.blobs["b"].reshape(1, m.in_channels, *hw)
    net.reshape()
    assert net.blobs["prob"].data.shape == (1, 2) + expect


@pytest.mark.parametrize("name", NETS)
def test_train_val_parses_and_branches_share_blobs(caffe, name):
    from fusionlab.export import train_input_net

    m = models.get(name)
    net = train_input_net(m)
    assert net.blobs["a"].data.shape[1] == m.in_channels
    maps = 1 if m.branches == "2ch" else 2
    assert net.blobs["conv3" if maps == 1 else "concat"].data.shape == (1, 256 * maps, m.head, m.head)
    if m.branches == "2ch":
        assert net.params["conv1"][0].data.shape[1] == 2 * m.in_channels and "conv1_p" not in net.params
    for name in ("conv1", "conv2", "conv3") if maps == 2 else ():
        pa, pb = net.params[name], net.params[name + "_p"]
        for x, y in zip(pa, pb):
            y.data[...] = 0.5
            x.data[...] = 0.25
            # siamese: one update moves both (same memory); pseudo-siamese: weights of their own
            assert np.all(y.data == (0.25 if m.branches == "siamese" else 0.5))
    assert net.params["fc1"][0].data.shape == (256, 256 * maps * m.head ** 2)
    assert len(net.params["fc1"]) == 1 and len(net.params["fc2"]) == 1   # no biases


@pytest.mark.parametrize("name", NETS)
def test_export_equivalence_on_16x16_pairs(caffe, tmp_path, name):
    """Exported deploy prob == train net softmax on isolated patch pairs (sub-band pairs for the wavelet nets;
    random weights; every branch layout)."""
    from fusionlab.export import export_deploy, train_input_net

    m = models.get(name)
    c = m.in_channels
    caffe.set_random_seed(3)
    tn = train_input_net(m)
    rng = np.random.default_rng(0)
    for layer in tn.params:                      # nontrivial biases too
        for p in tn.params[layer]:
            p.data[...] += rng.normal(0, 0.01, p.data.shape)
    snap = tmp_path / "snap_iter_7.caffemodel"
    tn.save(str(snap))
    meta = export_deploy(snap, tmp_path / "deploy.caffemodel", net=name)
    assert meta["iteration"] == 7 and len(meta["sha256"]) == 64 and meta["net"] == name
    dn = caffe.Net(str(m.deploy), str(tmp_path / "deploy.caffemodel"), caffe.TEST)
    p = m.patch
    pair = rng.random((20, 2 * c, p, p)).astype(np.float32)
    tn.blobs[m.data_top].reshape(20, 2 * c, p, p)
    tn.blobs["label"].reshape(20)
    tn.blobs[m.data_top].data[...] = pair
    tn.forward()
    logits = tn.blobs["fc2"].data
    soft = np.exp(logits - logits.max(1, keepdims=True))
    soft /= soft.sum(1, keepdims=True)
    dn.blobs["a"].reshape(20, c, p, p)
    dn.blobs["b"].reshape(20, c, p, p)
    dn.blobs["a"].data[...] = pair[:, :c]
    dn.blobs["b"].data[...] = pair[:, c:]
    prob = dn.forward()["prob"][:, :, 0, 0]
    assert np.abs(prob - soft).max() < 1e-5
    assert np.abs(soft[:, 1] - 0.5).max() > 1e-3    # the check is not trivially about constant outputs
