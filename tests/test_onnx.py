"""The ONNX export (pyfusion.onnx_export): folded head identity, agreement with the Caffe twin, side-cars, CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyfusion import net
from pyfusion.onnx_export import fold_head

ROOT = Path(__file__).resolve().parents[1]
onnxruntime = pytest.importorskip("onnxruntime")


def _softmax1(logits):
    e = np.exp(logits - logits.max(axis=0))
    return e[1] / e.sum(axis=0)


def test_folded_head_is_softmax_of_fc2_fc1():
    """sigmoid(<(W2[1]-W2[0]) W1, x>) == softmax(W2 W1 x)[1] for any x (no bias, no ReLU between fc1 and fc2)."""
    rng = np.random.default_rng(0)
    c, k = 6, 32                                   # 6 channels x 8 x 8 inputs, 32 hidden units
    w1 = rng.normal(0, 0.05, (k, c * 64)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (2, k)).astype(np.float32)
    x = rng.normal(0, 1, (c * 64, 200)).astype(np.float32)
    ref = _softmax1(w2.astype(np.float64) @ (w1.astype(np.float64) @ x))
    head = fold_head(w1, w2)
    assert head.shape == (1, c, 8, 8) and head.dtype == np.float32
    folded = 1 / (1 + np.exp(-(head.reshape(-1).astype(np.float64) @ x)))
    assert np.abs(folded - ref).max() < 1e-6
    assert ref.min() < 0.1 and ref.max() > 0.9    # the test covers confident scores, not only ~0.5
    # the fc1-conv layout (256 x 512 x 8 x 8 in the deploy twin) folds to the same filter
    assert np.array_equal(fold_head(w1.reshape(k, c, 8, 8), w2.reshape(2, k, 1, 1)), head)


@pytest.fixture(scope="module")
def models(caffe, tmp_path_factory):
    """A random-weight deploy caffemodel (+ side-car) and its ONNX export, in a temporary folder."""
    from pyfusion.data import sha256_file
    from pyfusion.onnx_export import export_onnx, random_params, set_deploy_params

    root = tmp_path_factory.mktemp("onnx")
    deploy = caffe.Net(str(net.DEPLOY_PROTOTXT), caffe.TEST)
    set_deploy_params(deploy, random_params(seed=1))
    cm = root / "rand.caffemodel"
    deploy.save(str(cm))
    Path(str(cm) + ".json").write_text(json.dumps({"sha256": sha256_file(cm)}))
    meta = export_onnx(cm, root / "rand.onnx")
    return {"caffemodel": cm, "onnx": root / "rand.onnx", "meta": meta, "net": deploy}


def _caffe_prob(deploy, a, b):
    deploy.blobs["a"].reshape(1, 1, *a.shape)
    deploy.blobs["b"].reshape(1, 1, *b.shape)
    deploy.blobs["a"].data[0, 0] = a
    deploy.blobs["b"].data[0, 0] = b
    return deploy.forward()["prob"][0, 1].copy()


@pytest.mark.parametrize("hw", [(16, 16), (17, 23), (40, 33), (64, 64)])
def test_onnx_matches_caffe_twin(models, hw):
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    a, b = rng.random(hw, dtype=np.float32), rng.random(hw, dtype=np.float32)
    ref = _caffe_prob(models["net"], a, b)
    sess = onnxruntime.InferenceSession(str(models["onnx"]), providers=["CPUExecutionProvider"])
    got = sess.run(None, {"pair": np.stack([a, b])[:, None]})[0][0, 0]
    assert got.shape == ref.shape == net.score_shape(*hw)
    assert np.abs(got - ref).max() < 1e-5
    assert ref.size == 1 or ref.std() > 0.05      # weights that give varied scores
    via_net = net.score_map(a, b, model=models["caffemodel"], backend="onnx")
    assert np.array_equal(via_net, got)


def test_export_reads_train_snapshot_and_deploy_alike(caffe, tmp_path):
    """The train_val snapshot (fc1/fc2 layers) and its deploy export (fc1-conv/fc2-conv) give one ONNX model."""
    from pyfusion.export import export_deploy, train_net_for_tests
    from pyfusion.onnx_export import build_onnx, read_caffemodel

    train = train_net_for_tests()
    rng = np.random.default_rng(2)
    for params in train.params.values():
        for p in params:
            p.data[...] = rng.normal(0, 0.02, p.data.shape)
    snap = tmp_path / "snap_iter_1.caffemodel"
    train.save(str(snap))
    export_deploy(snap, tmp_path / "deploy.caffemodel")
    p1, p2 = read_caffemodel(snap), read_caffemodel(tmp_path / "deploy.caffemodel")
    assert p1.keys() == p2.keys()
    for key in p1:
        xs, ys = (p1[key], p2[key]) if isinstance(p1[key], tuple) else ((p1[key],), (p2[key],))
        assert all(np.array_equal(x, y) for x, y in zip(xs, ys))
    assert build_onnx(p1).SerializeToString() == build_onnx(p2).SerializeToString()


def test_side_car_and_checks(models, tmp_path):
    from pyfusion.data import sha256_file

    meta = json.loads(Path(str(models["onnx"]) + ".json").read_text())
    assert meta == models["meta"]
    assert meta["sha256"] == sha256_file(models["onnx"])
    assert meta["source_sha256"] == sha256_file(models["caffemodel"])
    assert meta["source_caffemodel"] == "rand.caffemodel"
    assert net.check_model(models["onnx"]) == models["onnx"]
    # corrupt copy: sha256 mismatch
    bad = tmp_path / "bad.onnx"
    data = bytearray(models["onnx"].read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    Path(str(bad) + ".json").write_text(json.dumps(meta))
    with pytest.raises(net.ModelError, match="sha256"):
        net.check_model(bad)
    # stale: an ONNX model exported from another caffemodel than the one beside it
    stale = tmp_path / "rand.onnx"
    stale.write_bytes(models["onnx"].read_bytes())
    Path(str(stale) + ".json").write_text(json.dumps({**meta, "source_sha256": "0" * 64}))
    (tmp_path / "rand.caffemodel").write_bytes(models["caffemodel"].read_bytes())
    a = np.zeros((32, 32), np.float32)
    with pytest.raises(net.ModelError, match="another caffemodel"):
        net.score_map(a, a, model=tmp_path / "rand.caffemodel", backend="onnx")


def test_default_backend(models, tmp_path, monkeypatch):
    fastest = "winograd" if net.winograd_available() else "onnx"
    assert net.default_backend(models["caffemodel"]) == fastest
    assert net.default_backend(models["onnx"]) == fastest
    monkeypatch.setattr(net, "winograd_available", lambda: False)
    assert net.default_backend(models["caffemodel"]) == "onnx"
    lone = tmp_path / "lone.caffemodel"
    lone.write_bytes(models["caffemodel"].read_bytes())
    assert net.default_backend(lone) == "caffe"
    with pytest.raises(ValueError, match="unknown backend"):
        net.score_map(np.zeros((16, 16)), np.zeros((16, 16)), model=lone, backend="tensorrt")


def test_onnx_backend_runs_without_caffe(models):
    """Inference on the ONNX model must not import Caffe."""
    code = (
        "import sys, numpy as np; sys.modules['caffe'] = None\n"
        "from pyfusion import net\n"
        f"s = net.score_map(np.ones((40, 41)) * 0.5, np.zeros((40, 41)), model={str(models['onnx'])!r})\n"
        "assert s.shape == (13, 14), s.shape\n"
        "assert 'caffe' not in [m for m in sys.modules if sys.modules[m] is not None]\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert r.returncode == 0, r.stderr


def test_export_cli(models, tmp_path):
    out = tmp_path / "cli.onnx"
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--onnx", "--model",
                        str(models["caffemodel"]), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "GLOG_minloglevel": "2"})
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == models["onnx"].read_bytes()
    assert json.loads(Path(str(out) + ".json").read_text())["sha256"] == models["meta"]["sha256"]
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "export.py"), "--onnx", "--model",
                        str(tmp_path / "missing.caffemodel")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "not found" in r.stderr
