"""The ONNX export (fusionlab.onnx_export): folded head identity (with and without fc biases), any conv1 input
channels and head size, agreement with a float64 reference and the Caffe twin, side-cars, CLI."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import pair, random_params, reference_scores

from pyfusion import backends, models, net
from fusionlab.onnx_export import (build_onnx, fold_head, fold_head_bias, head_kernel, params_from_layers,
                                  set_deploy_params)

ROOT = Path(__file__).resolve().parents[1]
CNN = models.get("cnn")


def _softmax1(logits):
    e = np.exp(logits - logits.max(axis=0))
    return e[1] / e.sum(axis=0)


def _ort_scores(ort, model_bytes, a, b):
    sess = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    x = np.stack([a, b])
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)           # (2, C0, H, W)
    return sess.run(None, {"pair": np.ascontiguousarray(x, np.float32)})[0][0, 0]


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
    assert fold_head_bias(w2) == 0


def test_folded_head_with_fc_biases():
    """softmax(W2 (W1 x + b1) + b2)[1] == sigmoid(<w, x> + beta), beta = (W2[1]-W2[0]) . b1 + b2[1] - b2[0]; any K."""
    rng = np.random.default_rng(1)
    c, hidden, k = 5, 24, 4
    w1 = rng.normal(0, 0.05, (hidden, c * k * k)).astype(np.float32)
    w2 = rng.normal(0, 0.5, (2, hidden)).astype(np.float32)
    b1, b2 = rng.normal(0, 1, hidden).astype(np.float32), rng.normal(0, 1, 2).astype(np.float32)
    x = rng.normal(0, 1, (c * k * k, 300)).astype(np.float32)
    ref = _softmax1(w2.astype(np.float64) @ (w1.astype(np.float64) @ x + b1[:, None]) + b2[:, None])
    head, beta = fold_head(w1, w2, kernel=k), fold_head_bias(w2, b1, b2)
    assert head.shape == (1, c, k, k) and beta.dtype == np.float32
    folded = 1 / (1 + np.exp(-(head.reshape(-1).astype(np.float64) @ x + float(beta))))
    assert np.abs(folded - ref).max() < 1e-6
    assert abs(float(beta)) > 0.1                  # the biases matter in this test
    assert np.array_equal(fold_head(w1.reshape(hidden, c, k, k), w2), head)   # K from the fc1-conv shape
    # one bias alone
    ref1 = _softmax1(w2.astype(np.float64) @ (w1.astype(np.float64) @ x) + b2[:, None])
    assert np.abs(1 / (1 + np.exp(-(head.reshape(-1).astype(np.float64) @ x + float(fold_head_bias(w2, b2=b2)))))
                  - ref1).max() < 1e-6


def _layers(params, *, fc_bias=True):
    """``params`` as the blob lists of a deploy caffemodel (fc1-conv/fc2-conv)."""
    c3, k = params["conv3"][0].shape[0], head_kernel(params)
    fc1 = [params["fc1"].reshape(-1, 2 * c3, k, k)] + ([params["fc1_b"]] if fc_bias and "fc1_b" in params else [])
    fc2 = [params["fc2"].reshape(2, -1, 1, 1)] + ([params["fc2_b"]] if fc_bias and "fc2_b" in params else [])
    return {**{n: list(params[n]) for n in ("conv1", "conv2", "conv3")}, "fc1-conv": fc1, "fc2-conv": fc2,
            "prob": []}


def test_params_from_layers_keeps_fc_biases_and_checks_sizes():
    p = random_params(seed=2, in_channels=3, head=4, fc_bias=True)
    got = params_from_layers(_layers(p))
    assert got.keys() == p.keys() and head_kernel(got) == 4 and got["conv1"][0].shape == (64, 3, 3, 3)
    assert all(np.array_equal(got[k], p[k]) for k in ("fc1", "fc2", "fc1_b", "fc2_b"))
    plain = params_from_layers(_layers(p, fc_bias=False))
    assert "fc1_b" not in plain and "fc2_b" not in plain
    bad = _layers(p)
    bad["fc2-conv"] = bad["fc2-conv"] + [np.zeros(2, np.float32)]
    with pytest.raises(ValueError, match="3 blobs"):
        params_from_layers(bad)
    bad = _layers(p)
    bad["fc1-conv"][1] = np.zeros(255, np.float32)
    with pytest.raises(ValueError, match="fc1 bias"):
        params_from_layers(bad)
    for width in (512 * 8, 512 * 16 - 8):                             # not 2 * 256 * K * K for any K
        bad = _layers(p)
        bad["fc1-conv"][0] = np.zeros((256, width), np.float32)
        with pytest.raises(ValueError, match="do not fit conv3"):
            params_from_layers(bad)
    bad = _layers(p)
    del bad["conv2"]
    with pytest.raises(ValueError, match="conv2"):
        params_from_layers(bad, source="x.caffemodel")


class _Blob:
    def __init__(self, shape):
        self.data = np.zeros(shape, np.float32)


def test_set_deploy_params_refuses_to_drop_fc_biases():
    """A deploy twin without fc bias blobs (bias_term: false) cannot take nonzero fc biases: an error, not a loss."""
    p = random_params(seed=3, fc_bias=True)
    deploy = {f"{n}{s}": [_Blob(p[n][0].shape), _Blob(p[n][1].shape)] for n in ("conv1", "conv2", "conv3")
              for s in ("", "_p")}
    deploy.update({"fc1-conv": [_Blob((256, 512, 8, 8))], "fc2-conv": [_Blob((2, 256, 1, 1))]})
    fake = type("Net", (), {"params": deploy})()
    with pytest.raises(ValueError, match="no bias blob"):
        set_deploy_params(fake, p)
    zero = {**p, "fc1_b": np.zeros(256, np.float32), "fc2_b": np.zeros(2, np.float32)}
    set_deploy_params(fake, zero)                                      # zero biases are no loss
    assert np.array_equal(deploy["fc1-conv"][0].data.reshape(256, -1), p["fc1"])
    deploy["fc1-conv"].append(_Blob((256,)))                           # a twin with bias blobs takes them
    deploy["fc2-conv"].append(_Blob((2,)))
    set_deploy_params(fake, p)
    assert np.array_equal(deploy["fc1-conv"][1].data, p["fc1_b"]) and np.array_equal(deploy["fc2-conv"][1].data,
                                                                                     p["fc2_b"])


@pytest.mark.parametrize("kw,hw", [({}, (23, 29)), ({"in_channels": 3}, (23, 29)), ({"in_channels": 3}, (37, 41)),
                                   ({"in_channels": 2}, (19, 33)), ({"head": 4}, (21, 27)),
                                   ({"fc_bias": True}, (25, 31)), ({"in_channels": 3, "head": 4, "fc_bias": True},
                                                                   (17, 23))])
def test_onnx_model_matches_float64_reference(onnxruntime, kw, hw):
    """The folded ONNX graph (any conv1 input channels, head K, fc biases) gives the scores of an independent
    float64 computation (unfolded fc1/fc2, softmax) within 1e-5 on odd sizes."""
    p = random_params(seed=11, **kw)
    c0, k = p["conv1"][0].shape[1], kw.get("head", 8)
    model = build_onnx(p)
    dims = [d.dim_value or d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims == [2, c0, "H", "W"]
    assert ("head_bias" in {t.name for t in model.graph.initializer}) == kw.get("fc_bias", False)
    a, b = pair(*hw, seed=sum(hw), c=None if c0 == 1 else c0)
    got = _ort_scores(onnxruntime, model.SerializeToString(), a, b)
    ref = reference_scores(p, a, b)
    assert got.shape == ref.shape == ((hw[0] + 1) // 2 - k + 1, (hw[1] + 1) // 2 - k + 1)
    assert ref.std() > 0.01
    assert np.abs(got - ref).max() <= 1e-5


def test_export_side_car_names_channels_head_bias_and_net(tmp_path, monkeypatch):
    """export_onnx without Caffe (read_caffemodel stubbed): the side-car describes the graph and carries the net."""
    from fusionlab import onnx_export
    from pyfusion.util import sha256_file

    p = random_params(seed=4, in_channels=3, fc_bias=True)
    monkeypatch.setattr(onnx_export, "read_caffemodel", lambda path: p)
    cm = tmp_path / "high.caffemodel"
    cm.write_bytes(b"weights")
    Path(str(cm) + ".json").write_text(json.dumps({"net": "wavelet_high", "sha256": sha256_file(cm)}))
    meta = onnx_export.export_onnx(cm, tmp_path / "high.onnx")
    assert meta["input"] == "pair: (2, 3, H, W) float32, sources A and B (3 channels each)"
    assert meta["output"] == "score: (1, 1, ceil(H/2) - 7, ceil(W/2) - 7), P(source A in focus)"
    assert meta["head"] == "fc2 . fc1 folded into one 1x512x8x8 convolution + bias + sigmoid"
    assert meta["net"] == "wavelet_high" and meta["source_sha256"] == sha256_file(cm)
    assert json.loads(Path(str(tmp_path / "high.onnx") + ".json").read_text()) == meta
    assert models.resolve(tmp_path / "high.onnx")[0].name == "wavelet_high"
    # the grayscale net without biases keeps the side-car text of the shipped model
    monkeypatch.setattr(onnx_export, "read_caffemodel", lambda path: random_params(seed=4))
    Path(str(cm) + ".json").unlink()
    meta = onnx_export.export_onnx(cm, tmp_path / "gray.onnx")
    shipped = json.loads(Path(str(CNN.onnx) + ".json").read_text()) if Path(str(CNN.onnx) + ".json").is_file() else {}
    for key in ("format", "input", "output", "head"):
        assert meta[key] == shipped.get(key, meta[key])
    assert meta["head"] == "fc2 . fc1 folded into one 1x512x8x8 convolution + sigmoid" and "net" not in meta


@pytest.fixture(scope="module")
def caffe_models(caffe, tmp_path_factory):
    """A random-weight deploy caffemodel (+ side-car) and its ONNX export, in a temporary folder."""
    from fusionlab.onnx_export import export_onnx
    from pyfusion.util import sha256_file

    root = tmp_path_factory.mktemp("onnx")
    deploy = caffe.Net(str(CNN.deploy), caffe.TEST)
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
def test_onnx_matches_caffe_twin(caffe_models, onnxruntime, hw):
    rng = np.random.default_rng(hw[0] * 100 + hw[1])
    a, b = rng.random(hw, dtype=np.float32), rng.random(hw, dtype=np.float32)
    ref = _caffe_prob(caffe_models["net"], a, b)
    got = _ort_scores(onnxruntime, caffe_models["onnx"].read_bytes(), a, b)
    assert got.shape == ref.shape == CNN.score_shape(*hw)
    assert np.abs(got - ref).max() < 1e-5
    assert ref.size == 1 or ref.std() > 0.05      # weights that give varied scores
    via_net = net.score_map(a, b, model=caffe_models["caffemodel"], backend="onnx")
    assert np.array_equal(via_net, got)


def test_export_reads_train_snapshot_and_deploy_alike(caffe, tmp_path):
    """The train_val snapshot (fc1/fc2 layers) and its deploy export (fc1-conv/fc2-conv) give one ONNX model."""
    from fusionlab.export import export_deploy, train_input_net
    from fusionlab.onnx_export import read_caffemodel

    train = train_input_net("cnn")
    rng = np.random.default_rng(2)
    for params in train.params.values():
        for p in params:
            p.data[...] = rng.normal(0, 0.02, p.data.shape)
    snap = tmp_path / "snap_iter_1.caffemodel"
    train.save(str(snap))
    export_deploy(snap, tmp_path / "deploy.caffemodel")
    p1, p2 = read_caffemodel(snap), read_caffemodel(tmp_path / "deploy.caffemodel")
    assert p1.keys() == p2.keys() and "fc1_b" not in p1           # the nets' fc layers have no bias
    for key in p1:
        xs, ys = (p1[key], p2[key]) if isinstance(p1[key], tuple) else ((p1[key],), (p2[key],))
        assert all(np.array_equal(x, y) for x, y in zip(xs, ys))
    assert build_onnx(p1).SerializeToString() == build_onnx(p2).SerializeToString()


def test_side_car_and_checks(caffe_models, tmp_path):
    from pyfusion.util import sha256_file

    meta = json.loads(Path(str(caffe_models["onnx"]) + ".json").read_text())
    assert meta == caffe_models["meta"]
    assert meta["sha256"] == sha256_file(caffe_models["onnx"])
    assert meta["source_sha256"] == sha256_file(caffe_models["caffemodel"])
    assert meta["source_caffemodel"] == "rand.caffemodel"
    assert models.check_file(caffe_models["onnx"]) == caffe_models["onnx"]
    # corrupt copy: sha256 mismatch
    bad = tmp_path / "bad.onnx"
    data = bytearray(caffe_models["onnx"].read_bytes())
    data[-10] ^= 0xFF
    bad.write_bytes(bytes(data))
    Path(str(bad) + ".json").write_text(json.dumps(meta))
    with pytest.raises(models.ModelError, match="sha256"):
        models.check_file(bad)
    # stale: an ONNX model exported from another caffemodel than the one beside it
    stale = tmp_path / "rand.onnx"
    stale.write_bytes(caffe_models["onnx"].read_bytes())
    Path(str(stale) + ".json").write_text(json.dumps({**meta, "source_sha256": "0" * 64}))
    (tmp_path / "rand.caffemodel").write_bytes(caffe_models["caffemodel"].read_bytes())
    a = np.zeros((32, 32), np.float32)
    with pytest.raises(models.ModelError, match="another caffemodel"):
        net.score_map(a, a, model=tmp_path / "rand.caffemodel", backend="onnx")


def test_default_backend(tmp_path, monkeypatch):
    """winograd when built (unless ONNX Runtime has CUDA: onnx), else onnx, else caffe; needs the ONNX twin."""
    wino, ort = backends.get("winograd"), backends.get("onnx")
    cm = tmp_path / "rand.caffemodel"
    cm.write_bytes(b"not read")
    (tmp_path / "rand.onnx").write_bytes(build_onnx(random_params(seed=1)).SerializeToString())
    monkeypatch.setattr(ort, "has_cuda", lambda: False)
    monkeypatch.setattr(ort, "available", lambda: True)
    monkeypatch.setattr(wino, "available", lambda: True)
    assert backends.default_backend(cm) == backends.default_backend(tmp_path / "rand.onnx") == "winograd"
    monkeypatch.setattr(ort, "has_cuda", lambda: True)
    assert backends.default_backend(cm) == "onnx"
    monkeypatch.setattr(ort, "has_cuda", lambda: False)
    monkeypatch.setattr(wino, "available", lambda: False)
    assert backends.default_backend(cm) == "onnx"
    monkeypatch.setattr(ort, "available", lambda: False)
    assert backends.default_backend(cm) == "caffe"
    lone = tmp_path / "lone.caffemodel"
    lone.write_bytes(b"not read")
    monkeypatch.setattr(wino, "available", lambda: True)
    monkeypatch.setattr(ort, "available", lambda: True)
    assert backends.default_backend(lone) == "caffe"
    with pytest.raises(ValueError, match="unknown backend"):
        net.score_map(np.zeros((16, 16)), np.zeros((16, 16)), model=lone, backend="tensorrt")


def test_onnx_backend_runs_without_caffe(onnxruntime, tmp_path):
    """The onnx backend in a process where `import caffe` fails: real scores, equal to a float64 reference."""
    p = random_params(seed=6)
    model = tmp_path / "rand.onnx"
    model.write_bytes(build_onnx(p).SerializeToString())
    a, b = pair(40, 41, seed=6)
    np.save(tmp_path / "a.npy", a)
    np.save(tmp_path / "b.npy", b)
    code = (
        "import sys, numpy as np; sys.modules['caffe'] = None\n"
        "from pyfusion import net\n"
        "d = sys.argv[1]\n"
        "s = net.score_map(np.load(d + '/a.npy'), np.load(d + '/b.npy'), model=d + '/rand.onnx', backend='onnx')\n"
        "np.save(d + '/s.npy', s)\n"
        "assert not [m for m in sys.modules if m.split('.')[0] == 'caffe' and sys.modules[m] is not None]\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, cwd=ROOT,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    got, ref = np.load(tmp_path / "s.npy"), reference_scores(p, a, b)
    assert got.shape == ref.shape == (13, 14) and ref.std() > 0.05
    assert np.abs(got - ref).max() <= 1e-5


def test_export_cli(caffe_models, tmp_path):
    out = tmp_path / "cli.onnx"
    r = subprocess.run([sys.executable, "-m", "fusionlab", "export", "--onnx", "--model",
                        str(caffe_models["caffemodel"]), "--out", str(out)],
                       capture_output=True, text=True, cwd=ROOT, timeout=300,
                       env={**os.environ, "GLOG_minloglevel": "2"})
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == caffe_models["onnx"].read_bytes()
    assert json.loads(Path(str(out) + ".json").read_text())["sha256"] == caffe_models["meta"]["sha256"]
    r = subprocess.run([sys.executable, "-m", "fusionlab", "export", "--onnx", "--model",
                        str(tmp_path / "missing.caffemodel")], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert r.returncode == 2 and "not found" in r.stderr
