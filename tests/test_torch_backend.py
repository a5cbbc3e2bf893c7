"""The torch backend (pyfusion.backends.torch): scores of every branch layout and a 4x4 head against ONNX Runtime,
the winograd backend and a float64 reference, exact tiling, per-frame scores, thread-count independence,
determinism, the device and precision errors, the model checks, the default-backend rule.

PyTorch is an optional dependency (``pip install .[torch]``): the tests that run it skip with the reason where
torch does not import, also under CI=true. CI does not install it (the Linux torch wheel on PyPI brings several GB
of CUDA libraries), so unlike Caffe's or ONNX Runtime's tests these never fail for its absence. On a machine
without CUDA they run on the CPU; the GPU paths (``gpu=N``, ``tf32``, ``fp16``) run only where torch sees a GPU
(and must, under ``PYFUSION_REQUIRE_GPU=1``: scripts/gpu_check.sh).
"""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import need_gpu, pair, reference_scores, toy_onnx_models

from pyfusion import backends, models, net

ROOT = Path(__file__).resolve().parents[1]
CNN = models.get("cnn")
#: Toy nets (random_params options): the paper's siamese layout, pseudo-siamese, 2-channel, an 8x8-patch net (4x4
#: head), fc biases (the folded head's scalar bias), 3 input channels.
TOYS = {"siamese": dict(seed=5), "pseudo": dict(seed=3, branches="pseudo"), "2ch": dict(seed=4, branches="2ch"),
        "k4": dict(seed=9, head=4), "bias": dict(seed=10, fc_bias=True), "rgb": dict(seed=7, in_channels=3)}
SIAMESE = ("siamese", "k4", "bias", "rgb")
TILES = [(10, 7), (40, 9), (6, 100)]              # 28, 5 and 6 tiles of a 77 x 101 pair


@pytest.fixture(scope="module")
def torch():
    """The torch module; skips (also under CI=true) where it is not installed: it is optional."""
    return pytest.importorskip("torch", reason="PyTorch is optional (pip install .[torch]) and not installed here; "
                                               "CI does not install it")


@pytest.fixture(scope="module")
def tb(torch):
    from pyfusion.backends import torch as _tb

    return _tb


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    """``{name: (params, onnx path)}`` of the :data:`TOYS` nets (built without Caffe)."""
    return toy_onnx_models(tmp_path_factory.mktemp("torch_toys"), TOYS)


def _net(tb, toys, name, **kw):
    from pyfusion.backends.winograd import load_params

    return tb.Net(load_params(toys[name][1]), **kw)


def _pair_of(name, h, w, seed=0):
    c = TOYS[name].get("in_channels", 1)
    return pair(h, w, seed=seed, c=c if c > 1 else None)


def _ort_scores(ort, path, a, b):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.stack([a, b])
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)           # (2, C0, H, W)
    return sess.run(None, {"pair": np.ascontiguousarray(x, np.float32)})[0][0, 0]


@pytest.fixture
def toy_model(toys, tmp_path, monkeypatch):
    """``register(name)``: the toy net ``name`` registered as "toy" (its ONNX file only: the torch backend needs no
    caffemodel)."""
    def register(name):
        kw = TOYS[name]
        head = kw.get("head", 8)
        m = models.Model("toy", "toy", "a test net", in_channels=kw.get("in_channels", 1),
                         branches=kw.get("branches", "siamese"), patch=2 * head, root=tmp_path)
        monkeypatch.setitem(models.MODELS, "toy", m)
        m.onnx.parent.mkdir(parents=True, exist_ok=True)
        m.onnx.write_bytes(toys[name][1].read_bytes())
        return m

    return register


@pytest.mark.parametrize("name", list(TOYS))
def test_matches_onnx_runtime_winograd_and_reference(tb, winograd, onnxruntime, toys, name):
    """Every branch layout, a 4x4 head, a head bias, 3 channels: within 1e-5 of ONNX Runtime, of the winograd
    backend and (siamese nets) of the unfolded float64 reference."""
    params, path = toys[name]
    torch_net = _net(tb, toys, name, threads=2)
    for h, w in ((41, 37), (33, 70)):
        a, b = _pair_of(name, h, w, seed=h)
        got = torch_net(a, b)
        k = TOYS[name].get("head", 8)
        assert got.dtype == np.float32 and got.shape == ((h + 1) // 2 - k + 1, (w + 1) // 2 - k + 1)
        assert got.std() > 0.01
        assert np.abs(got - _ort_scores(onnxruntime, path, a, b)).max() <= 1e-5, (h, w)
        assert np.abs(got - winograd.Net(winograd.load_params(path))(a, b)).max() <= 1e-5, (h, w)
        if name in SIAMESE:      # the float64 reference runs both sources through one trunk
            assert np.abs(got - reference_scores(params, a, b)).max() <= 1e-5, (h, w)
    assert (torch_net.branches, torch_net.k) == (TOYS[name].get("branches", "siamese"), TOYS[name].get("head", 8))


@pytest.mark.parametrize("name", ["siamese", "pseudo", "2ch", "k4"])
def test_tiles_equal_whole_image(tb, toys, toy_model, name):
    """score_map tiled == whole within 1e-5 (torch's convolutions block their sums by the input size, as ONNX
    Runtime's: tiles agree to float rounding, not bit for bit); the whole image is the Net's own score map."""
    toy_model(name)
    a, b = _pair_of(name, 77, 101, seed=3)
    whole = net.score_map(a, b, model="toy", backend="torch", threads=1, tile=(10**6, 10**6))
    assert np.array_equal(whole, _net(tb, toys, name)(a, b))
    for tile in TILES:
        tiled = net.score_map(a, b, model="toy", backend="torch", threads=1, tile=tile)
        assert np.abs(tiled - whole).max() <= 1e-5, tile


@pytest.mark.parametrize("name", SIAMESE)
def test_frame_scores_match_winograd(tb, winograd, toys, name):
    """Per-frame scores (antisymmetric head, pre-sigmoid) within float32 rounding of the winograd backend's (1e-5
    of their scale: they are logits, |s| up to ~17 here)."""
    torch_net = _net(tb, toys, name)
    wino = winograd.Net(winograd.load_params(toys[name][1]))
    for h, w in ((41, 37), (77, 101)):
        a, _ = _pair_of(name, h, w, seed=h)
        got, want = torch_net.frame_scores(a), wino.frame_scores(a)
        assert got.shape == want.shape and got.dtype == np.float32
        assert np.abs(got - want).max() <= 1e-5 * max(1.0, np.abs(want).max()), (h, w)


def test_frame_scores_through_net(tb, toys, toy_model):
    """net.frame_scores(backend="torch"): tiled == whole; pseudo-siamese and 2-channel nets have no per-frame
    scores."""
    assert "torch" in net.frame_backends()
    toy_model("siamese")
    img, _ = pair(77, 101, seed=8)
    whole = net.frame_scores(img, model="toy", backend="torch", threads=1, tile=(10**6, 10**6))
    assert np.array_equal(whole, _net(tb, toys, "siamese").frame_scores(img))
    tiled = net.frame_scores(img, model="toy", backend="torch", threads=1, tile=(10, 20))
    assert np.abs(tiled - whole).max() <= 1e-5 * max(1.0, np.abs(whole).max())
    for name in ("pseudo", "2ch"):
        with pytest.raises(NotImplementedError, match="siamese"):
            _net(tb, toys, name).frame_scores(img)


def test_thread_count_does_not_change_scores(tb, toys):
    """threads 1, 2, 3: bit-identical scores and frame scores (torch's NCHW CPU convolutions; its channels-last
    ones are not), and the same call twice gives the same bytes."""
    for name in ("siamese", "pseudo", "2ch"):
        a, b = _pair_of(name, 97, 61, seed=1)
        nets = [_net(tb, toys, name, threads=n) for n in (1, 2, 3)]
        ref = nets[0](a, b)
        for n in nets[1:]:
            assert np.array_equal(n(a, b), ref), name
        assert np.array_equal(nets[1](a, b), nets[1](a, b))
    a, _ = pair(97, 61, seed=2)
    frames = [_net(tb, toys, "siamese", threads=n).frame_scores(a) for n in (1, 2)]
    assert np.array_equal(frames[0], frames[1])


def test_thread_setting_is_restored(tb, torch, toys):
    before = torch.get_num_threads()
    a, b = pair(33, 33)
    _net(tb, toys, "siamese", threads=before + 1)(a, b)
    assert torch.get_num_threads() == before


def test_gpu_errors_are_clear(tb, torch, toys):
    """gpu=N without CUDA (a CPU build of torch, or no device): a RuntimeError that says so, through score_map too;
    a device index torch does not see, or not an index: errors naming it."""
    path = toys["siamese"][1]
    a, b = pair(40, 40)
    if not torch.cuda.is_available():
        why = "has no CUDA" if torch.version.cuda is None else "sees no CUDA device"
        with pytest.raises(RuntimeError, match=why):
            tb.runner(CNN, None, path, threads=1, gpu=0)
        with pytest.raises(RuntimeError, match=why):
            net.score_map(a, b, model=path, backend="torch", gpu=0)
    else:
        n = torch.cuda.device_count()
        with pytest.raises(RuntimeError, match=f"sees {n} CUDA device"):
            tb.runner(CNN, None, path, threads=1, gpu=n)
    for bad in (-1, "0", 1.5, True):
        with pytest.raises(ValueError, match="gpu must be"):
            tb.runner(CNN, None, path, threads=1, gpu=bad)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "tf32", "fp16"])
def test_on_the_gpu(tb, torch, toys, precision):
    """Where torch sees a GPU: fp32 within 1e-5 of the CPU, tf32 and fp16 within 1e-2, deterministic."""
    need_gpu(torch.cuda.is_available(), "torch sees no CUDA device here")
    a, b = pair(77, 101, seed=4)
    cpu = tb.runner(CNN, None, toys["siamese"][1], threads=2)(a, b)
    run = tb.runner(CNN, None, toys["siamese"][1], threads=2, gpu=0, precision=precision)
    got = run(a, b)
    assert np.abs(got - cpu).max() <= (1e-5 if precision == "fp32" else 1e-2)
    assert np.array_equal(run(a, b), got)


def test_precision(tb, toys, monkeypatch):
    """precision= or $PYFUSION_TORCH_PRECISION (default fp32); tf32 and fp16 are for CUDA GPUs, refused on the
    CPU; an unknown name is an error. Net's fp16 trunk (float32 head) within 1e-2 of fp32 (run here on the CPU,
    where torch has float16 convolutions, to check the path)."""
    monkeypatch.delenv(tb.PRECISION_ENV, raising=False)
    assert tb.resolve_precision() == "fp32" and tb.resolve_precision("FP16") == "fp16"
    monkeypatch.setenv(tb.PRECISION_ENV, "tf32")
    assert tb.resolve_precision() == "tf32" and tb.resolve_precision("fp32") == "fp32"
    path = toys["siamese"][1]
    with pytest.raises(ValueError, match="for CUDA GPUs"):
        tb.runner(CNN, None, path, threads=1)
    monkeypatch.delenv(tb.PRECISION_ENV)
    with pytest.raises(ValueError, match="for CUDA GPUs"):
        tb.runner(CNN, None, path, threads=1, precision="fp16")
    with pytest.raises(ValueError, match="choose from fp32, tf32, fp16"):
        tb.runner(CNN, None, path, threads=1, precision="bf16")
    a, b = pair(41, 37, seed=5)
    fp32 = tb.runner(CNN, None, path, threads=1)(a, b)
    half = _net(tb, toys, "siamese", precision="fp16")
    assert half.trunks[0][0][0].dtype != half.head[0].dtype                    # float16 trunk, float32 head
    got = half(a, b)
    assert got.dtype == np.float32 and 0 < np.abs(got - fp32).max() <= 1e-2


def test_runner_checks_the_model(tb, toys, tmp_path):
    """The registered model's channels, head and branches must be the ONNX file's; the file its side-car's."""
    path = toys["siamese"][1]
    run = tb.runner(CNN, None, path, threads=1)
    a, b = pair(33, 35, seed=4)
    assert np.array_equal(run(a[..., None], b[..., None]), run(a, b))
    with pytest.raises(models.ModelError, match="conv1 takes 1"):
        tb.runner(models.get("wavelet_high"), None, path, threads=1)
    with pytest.raises(models.ModelError, match="head is 4x4"):
        tb.runner(CNN, None, toys["k4"][1], threads=1)
    with pytest.raises(models.ModelError, match="branches pseudo"):
        tb.runner(CNN, None, toys["pseudo"][1], threads=1)
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(path.read_bytes())
    Path(str(bad) + ".json").write_text(json.dumps({"sha256": "0" * 64}))
    with pytest.raises(models.ModelError, match="sha256"):
        tb.runner(CNN, None, bad, threads=1)
    with pytest.raises(ValueError, match="channel"):
        run(a[..., None].repeat(3, axis=2), b[..., None].repeat(3, axis=2))
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        run(a[:14, :14], b[:14, :14])


def test_shipped_model_matches_winograd(tb, winograd):
    """The shipped cnn model (pyfusion/weights/cnn_fusion.onnx) on a 64 x 72 pair with complementary blur: within 1e-5 of
    winograd."""
    import cv2

    x = cv2.GaussianBlur(np.random.default_rng(0).random((64, 72)).astype(np.float32), (0, 0), 1.0)
    blurred = cv2.GaussianBlur(x, (0, 0), 2.0)
    a, b = x.copy(), blurred.copy()
    a[:, 36:], b[:, 36:] = blurred[:, 36:], x[:, 36:]
    got = net.score_map(a, b, backend="torch")
    assert got.std() > 0.01
    assert np.abs(got - net.score_map(a, b, backend="winograd")).max() <= 1e-5


def test_memory_model(tb):
    """peak_bytes: the grayscale constants, 16 bytes per pixel more for each further source channel."""
    assert tb.peak_bytes(CNN, 300, 200) == tb.BASE_BYTES + tb.BYTES_PER_PIXEL * 300 * 200
    assert tb.peak_bytes(models.get("wavelet_high"), 300, 200) - tb.peak_bytes(CNN, 300, 200) == 32 * 300 * 200


def test_default_backend_rule(tb, toys, monkeypatch):
    """Never torch without gpu=; with gpu=N torch where it has CUDA, else caffe."""
    path = toys["siamese"][1]
    monkeypatch.setattr(tb, "has_cuda", lambda: True)
    assert backends.default_backend(path) != "torch"
    assert backends.default_backend(path, gpu=0) == "torch"
    monkeypatch.setattr(tb, "has_cuda", lambda: False)
    assert backends.default_backend(path, gpu=0) == "caffe"


def test_without_torch():
    """Where torch does not import (CI): the backend is listed, importing it imports no torch, available() is
    False with the install hint, the default backend is never torch (gpu= too), and running it says why. Runs
    without torch installed."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import numpy as np\n"
        "from pyfusion import backends, net\n"
        "assert 'torch' in backends.BACKENDS\n"
        "tb = backends.get('torch')\n"
        "assert not tb.available() and not tb.has_cuda() and 'pip install .[torch]' in tb.why_unavailable()\n"
        "assert backends.default_backend('cnn') != 'torch' and backends.default_backend('cnn', gpu=0) == 'caffe'\n"
        "tb.release()\n"
        "try:\n"
        "    net.score_map(np.zeros((40, 40), np.float32), np.zeros((40, 40), np.float32), backend='torch')\n"
        "except RuntimeError as e:\n"
        "    assert 'pip install .[torch]' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('ran without torch')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    # and where torch is installed, listing and importing the backends does not import it
    code = ("import sys\nfrom pyfusion import backends, net\nbackends.get('torch'); net.frame_backends()\n"
            "assert 'torch' not in sys.modules\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("tf32", [False, True])
def test_cuda_flags_are_set_and_restored(tb, torch, tf32):
    """The GPU settings of a call (cuDNN deterministic, no benchmark, TF32 off for fp32 / on for tf32: torch >= 2.9's
    fp32_precision, else the legacy allow_tf32 flags), restored after; settable and checked without a GPU."""
    cudnn, matmul = torch.backends.cudnn, torch.backends.cuda.matmul
    new_api = hasattr(cudnn, "conv") and hasattr(matmul, "fp32_precision")
    mode = (lambda: (cudnn.conv.fp32_precision, matmul.fp32_precision)) if new_api else \
        (lambda: (cudnn.allow_tf32, matmul.allow_tf32))
    before = (mode(), cudnn.deterministic, cudnn.benchmark)
    with tb._cuda_flags(torch, tf32=tf32):
        want = (("tf32",) * 2 if tf32 else ("ieee",) * 2) if new_api else (tf32, tf32)
        assert (mode(), cudnn.deterministic, cudnn.benchmark) == (want, True, False)
    assert (mode(), cudnn.deterministic, cudnn.benchmark) == before
