"""The winograd backend (pyfusion.backends.winograd, C kernels in pyfusion/backends/_winograd.c): the transform
identity, agreement with a float64 reference, ONNX Runtime and the Caffe twin, any conv1 input channels, a 4x4
head, the folded head bias, thread-count independence, exact tiling, the portable build's two kernel variants."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import conv3x3, need, pair, random_params, reference_features, reference_scores, toy_onnx_models

from pyfusion import backends, models, net

CNN = models.get("cnn")
# odd, even, tiny (one patch), not multiples of the 4x4 Winograd tile, and wider than one 18-tile block
SIZES = [(16, 16), (17, 23), (31, 32), (41, 37), (97, 61), (33, 300)]
#: Toy nets beside the grayscale one (seed, random_params options): 3 input channels (the wavelet high bands),
#: 2 channels, an 8x8-patch net (4x4 head: 16 taps), fc biases (the folded head's scalar bias).
TOYS = {"rgb": dict(seed=7, in_channels=3), "two": dict(seed=8, in_channels=2), "k4": dict(seed=9, head=4),
        "bias": dict(seed=10, fc_bias=True)}


@pytest.fixture(scope="module")
def rand_onnx(tmp_path_factory):
    """Random weights as an ONNX model (built without Caffe)."""
    from fusionlab.onnx_export import build_onnx

    path = tmp_path_factory.mktemp("wino") / "rand.onnx"
    path.write_bytes(build_onnx(random_params(seed=5)).SerializeToString())
    return path


@pytest.fixture(scope="module")
def rand_net(winograd, rand_onnx):
    return winograd.Net(winograd.load_params(rand_onnx), threads=2)


@pytest.fixture(scope="module")
def toys(tmp_path_factory):
    """``{name: (params, onnx path)}`` of the :data:`TOYS` nets."""
    return toy_onnx_models(tmp_path_factory.mktemp("toys"), TOYS)


def _toy_net(winograd, toys, name, threads=2):
    return winograd.Net(winograd.load_params(toys[name][1]), threads=threads)


def _ort_scores(ort, path, a, b):
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = np.stack([a, b])
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)           # (2, C0, H, W)
    return sess.run(None, {"pair": np.ascontiguousarray(x, np.float32)})[0][0, 0]


def test_filter_transform_computes_the_convolution(winograd):
    """One 4x4 tile by F(4x4, 3x3) in float64 (A^T [U . (B^T d B)] A) equals the direct convolution."""
    bt = np.array([[4, 0, -5, 0, 1, 0], [0, -4, -4, 1, 1, 0], [0, 4, -4, -1, 1, 0],
                   [0, -2, -1, 2, 1, 0], [0, 2, -1, -2, 1, 0], [0, 4, 0, -5, 0, 1]], float)
    at = np.array([[1, 1, 1, 1, 1, 0], [0, 1, -1, 2, -2, 0], [0, 1, 1, 4, 4, 0], [0, 1, -1, 8, -8, 1]], float)
    rng = np.random.default_rng(0)
    d = rng.normal(size=(5, 6, 6))                    # Cin = 5, one 6x6 input tile
    g = rng.normal(size=(3, 5, 3, 3))                 # Cout = 3
    u = winograd.transform_filter(g).astype(np.float64).reshape(6, 6, 5, 3)
    v = np.einsum("ia,cab,jb->ijc", bt, d, bt)
    y = np.einsum("ri,ijo,sj->ors", at, np.einsum("ijc,ijco->ijo", v, u), at)
    ref = conv3x3(d, g)[:, 1:5, 1:5]                  # the valid 4x4 part of the padded convolution
    assert np.abs(y - ref).max() < 1e-5              # U is stored as float32


def test_pack_panels():
    from pyfusion.backends.winograd import pack_panels

    b = np.arange(3 * 5 * 32, dtype=np.float32).reshape(3, 5, 32)
    p = pack_panels(b)
    assert p.shape == (3, 2, 5, 16)
    assert np.array_equal(p[1, 1, 4], b[1, 4, 16:])
    with pytest.raises(ValueError, match="multiple of 16"):
        pack_panels(np.zeros((4, 10), np.float32))


@pytest.mark.parametrize("toy,shape", [(None, (23, 29)), ("rgb", (23, 29, 3)), ("two", (21, 18, 2))])
def test_features_match_direct_convolution(winograd, rand_net, toys, toy, shape):
    """conv1..conv3 of one source against a float64 direct computation (ReLU, ceil-mode pool), odd sizes."""
    params, wnet = (random_params(seed=5), rand_net) if toy is None else (toys[toy][0], _toy_net(winograd, toys, toy))
    img = np.random.default_rng(1).random(shape, dtype=np.float32)
    ref = reference_features(params, img)
    got = wnet.features(img)
    assert got.shape == ((shape[0] + 1) // 2, (shape[1] + 1) // 2, 256)
    assert np.abs(got.transpose(2, 0, 1) - ref).max() <= 1e-5 * max(1.0, np.abs(ref).max())


@pytest.mark.parametrize("h,w", SIZES)
def test_matches_onnx_runtime(onnxruntime, rand_onnx, rand_net, h, w):
    a, b = pair(h, w, seed=h + w)
    ref = _ort_scores(onnxruntime, rand_onnx, a, b)
    got = rand_net(a, b)
    assert got.shape == CNN.score_shape(h, w) == ref.shape
    assert ref.size < 4 or ref.std() > 0.01          # the random net gives spread scores, not all 0 or 1
    assert np.abs(got - ref).max() <= 1e-5


@pytest.mark.parametrize("toy,h,w", [("rgb", 23, 29), ("rgb", 37, 41), ("two", 19, 33), ("k4", 21, 27),
                                     ("k4", 17, 9 * 2), ("bias", 25, 31)])
def test_toy_nets_match_float64_reference(winograd, toys, toy, h, w):
    """3- and 2-channel conv1, a 4x4 head, fc biases: the scores of an independent float64 computation (unfolded
    fc1 and fc2, softmax) within 1e-5, odd sizes."""
    params, _ = toys[toy]
    c = params["conv1"][0].shape[1]
    a, b = pair(h, w, seed=h * w, c=None if c == 1 else c)
    ref = reference_scores(params, a, b)
    got = _toy_net(winograd, toys, toy)(a, b)
    k = 4 if toy == "k4" else 8
    assert got.shape == ref.shape == ((h + 1) // 2 - k + 1, (w + 1) // 2 - k + 1)
    assert ref.size < 4 or ref.std() > 0.01
    assert np.abs(got - ref).max() <= 1e-5


@pytest.mark.parametrize("toy,h,w", [("rgb", 23, 29), ("rgb", 33, 300), ("two", 41, 37), ("k4", 21, 27),
                                     ("k4", 97, 61), ("bias", 31, 45)])
def test_toy_nets_match_onnx_runtime(winograd, onnxruntime, toys, toy, h, w):
    params, path = toys[toy]
    c = params["conv1"][0].shape[1]
    a, b = pair(h, w, seed=h + 3 * w, c=None if c == 1 else c)
    ref = _ort_scores(onnxruntime, path, a, b)
    got = _toy_net(winograd, toys, toy)(a, b)
    assert got.shape == ref.shape
    assert np.abs(got - ref).max() <= 1e-5


def test_head_bias_is_used(winograd, toys):
    """The bias model's scores are its bias-free twin's shifted inside the sigmoid (same trunk, same head)."""
    from fusionlab.onnx_export import fold_head_bias

    params, path = toys["bias"]
    wp = winograd.load_params(path)
    assert wp["head_bias"].shape == () and wp["head_bias"] == fold_head_bias(params["fc2"], params["fc1_b"],
                                                                             params["fc2_b"])
    a, b = pair(40, 44, seed=3)
    with_bias = winograd.Net(wp, threads=2)(a, b)
    without = winograd.Net({k: v for k, v in wp.items() if k != "head_bias"}, threads=2)(a, b)
    logit = lambda s: np.log(s.astype(np.float64) / (1 - s))  # noqa: E731
    ok = (without > 1e-4) & (without < 1 - 1e-4) & (with_bias > 1e-4) & (with_bias < 1 - 1e-4)
    assert ok.mean() > 0.5
    assert np.abs(logit(with_bias[ok]) - logit(without[ok]) - float(wp["head_bias"])).max() < 1e-3
    assert abs(float(wp["head_bias"])) > 0.1


@pytest.mark.parametrize("toy,shape", [(None, (17, 23)), (None, (41, 37)), (None, (33, 300)), ("rgb", (41, 37)),
                                       ("k4", (31, 32)), ("bias", (17, 23))])
def test_fused_equals_layer_by_layer(winograd, rand_net, toys, toy, shape):
    """conv1 inside conv2's blocks and conv3 into the head products: the same arithmetic as layer by layer."""
    wnet = rand_net if toy is None else _toy_net(winograd, toys, toy)
    c = wnet.in_channels
    a, b = pair(*shape, seed=2 * shape[0] + shape[1], c=None if c == 1 else c)
    assert np.array_equal(wnet(a, b), wnet.scores_unfused(a, b))


def test_thread_count_does_not_change_scores(winograd, rand_onnx, rand_net, toys):
    a, b = pair(97, 130, seed=7)
    one = winograd.Net(winograd.load_params(rand_onnx), threads=1)(a, b)
    assert np.array_equal(one, rand_net(a, b))
    assert np.array_equal(rand_net(a, b), rand_net(a, b))
    a, b = pair(45, 70, seed=8, c=3)
    assert np.array_equal(_toy_net(winograd, toys, "rgb", 1)(a, b), _toy_net(winograd, toys, "rgb", 3)(a, b))


def test_same_source_twice(rand_net):
    """a is b: the second source's products accumulate onto the first's (no uninitialised memory)."""
    a, _ = pair(40, 40, seed=9)
    s1, s2 = rand_net(a, a), rand_net(a, a.copy())
    assert np.array_equal(s1, s2) and np.isfinite(s1).all()


def test_channels_are_checked(winograd, rand_net, toys):
    """(H, W) is one channel, (H, W, C0) C0 channels; a mismatch with conv1 is a ValueError, not a wrong read."""
    a, b = pair(31, 33, seed=1)
    assert rand_net.in_channels == 1 and rand_net.k == 8
    assert np.array_equal(rand_net(a[..., None], b[..., None]), rand_net(a, b))
    assert np.array_equal(rand_net.features(a[..., None]), rand_net.features(a))
    rgb = _toy_net(winograd, toys, "rgb")
    assert rgb.in_channels == 3
    with pytest.raises(ValueError, match="1 channel.*conv1 takes 3"):
        rgb(a, b)
    with pytest.raises(ValueError, match="conv1 takes 3"):
        rgb.features(np.zeros((31, 33, 2), np.float32))
    with pytest.raises(ValueError, match="3 channels.*conv1 takes 1"):
        rand_net(np.stack([a] * 3, -1), np.stack([b] * 3, -1))
    with pytest.raises(ValueError, match="different shapes"):
        rand_net(a, b[:, :-1])
    with pytest.raises(ValueError, match=r"\(H, W\) or \(H, W, C\)"):
        rand_net(a[None, ..., None], b[None, ..., None])
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        rand_net(a[:13], b[:13])
    # a Fortran-order input is copied to C order, not misread
    assert np.array_equal(rgb(*[np.asfortranarray(x) for x in pair(23, 29, seed=2, c=3)]), rgb(*pair(23, 29, seed=2, c=3)))


def test_layer_sizes_are_checked(winograd, rand_onnx):
    p = winograd.load_params(rand_onnx)
    with pytest.raises(ValueError, match="taps"):
        winograd.Net({**p, "head_taps_w": p["head_taps_w"][:36]})          # 6x6 head: 36 taps, not a multiple of 16
    with pytest.raises(ValueError, match="head_bias"):
        winograd.Net({**p, "head_bias": np.zeros(2, np.float32)})


@pytest.mark.parametrize("h,w", [(41, 37), pytest.param(77, 101, marks=pytest.mark.slow)])
def test_tiles_equal_whole_image(winograd, rand_onnx, h, w):
    a, b = pair(h, w, seed=3)
    whole = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=(10**6, 10**6))
    for tile in [(3, 5), (10, 7), (40, 2), (6, 100)]:
        tiled = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=tile)
        assert np.array_equal(tiled, whole), tile


def test_memory_model(winograd):
    """bytes_needed: the grayscale constants, plus 8 bytes per pixel for each further source channel."""
    assert winograd.bytes_needed(300, 200) == winograd.BASE_BYTES + winograd.BYTES_PER_PIXEL * 300 * 200
    assert winograd.bytes_needed(300, 200, in_channels=3) - winograd.bytes_needed(300, 200) == 16 * 300 * 200
    for m in models.MODELS.values():
        assert winograd.peak_bytes(m, 64, 80) == winograd.bytes_needed(64, 80, in_channels=m.in_channels)


def test_default_backend_follows_the_documented_rule(winograd, rand_onnx, monkeypatch):
    """winograd when its kernels are built, unless ONNX Runtime has a CUDA provider: then onnx (on the GPU)."""
    onnx_be = backends.get("onnx")
    assert backends.default_backend(rand_onnx) == ("onnx" if onnx_be.has_cuda() else "winograd")
    monkeypatch.setattr(onnx_be, "has_cuda", lambda: True)
    assert backends.default_backend(rand_onnx) == "onnx"
    monkeypatch.setattr(onnx_be, "has_cuda", lambda: False)
    assert backends.default_backend(rand_onnx) == "winograd"


def test_runner_checks_the_model(winograd, rand_onnx, toys):
    """The registered model's channels and head must be the ONNX file's."""
    run = winograd.runner(CNN, rand_onnx.with_suffix(".caffemodel"), rand_onnx, threads=1)
    a, b = pair(33, 35, seed=4)
    assert np.array_equal(run(a[..., None], b[..., None]), winograd.Net(winograd.load_params(rand_onnx))(a, b))
    with pytest.raises(models.ModelError, match="conv1 takes 1"):
        winograd.runner(models.get("wavelet_high"), None, rand_onnx, threads=1)
    with pytest.raises(models.ModelError, match="head is 4x4"):
        winograd.runner(CNN, None, toys["k4"][1], threads=1)
    with pytest.raises(ValueError, match="CPU"):
        winograd.runner(CNN, None, rand_onnx, threads=1, gpu=0)


def test_runs_without_caffe_or_onnxruntime(winograd, rand_onnx):
    code = (
        "import sys, numpy as np; sys.modules['caffe'] = None; sys.modules['onnxruntime'] = None\n"
        "from pyfusion import backends, net\n"
        "assert backends.default_backend(sys.argv[1]) == 'winograd'\n"
        "s = net.score_map(np.ones((40, 41), np.float32) * 0.5, np.zeros((40, 41), np.float32), model=sys.argv[1])\n"
        "assert s.shape == (13, 14), s.shape\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(rand_onnx)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
def test_kernel_variants_of_the_portable_build(winograd, rand_onnx, toys, tmp_path):
    """The portable build chooses x86-64-v3 kernels where the CPU has AVX2 + FMA, else its plain x86-64 (SSE2)
    kernels; PYFUSION_WINOGRAD_ISA forces one. Both compute the same scores (within float rounding: no FMA)."""
    isa = winograd.isa()
    assert isa is not None and winograd.why_unavailable() is None
    # a PYFUSION_MARCH build has one variant: skip on a user's machine; CI builds the portable default, so fail there
    need(isa in ("x86-64", "x86-64-v3"), f"a single-ISA build (PYFUSION_MARCH={isa}): one kernel variant")
    code = (
        "import sys, numpy as np\n"
        "from pyfusion.backends import winograd as w\n"
        "out = {'isa': w.isa()}\n"
        "for i, path in enumerate(sys.argv[2:]):\n"
        "    n = w.Net(w.load_params(path), threads=2)\n"
        "    rng = np.random.default_rng(i)\n"
        "    shape = (45, 39) if n.in_channels == 1 else (45, 39, n.in_channels)\n"
        "    a, b = rng.random(shape, dtype=np.float32), rng.random(shape, dtype=np.float32)\n"
        "    np.save(f'{sys.argv[1]}/{i}.npy', np.stack([n(a, b), n.scores_unfused(a, b)]))\n"
        "print(out['isa'])\n"
    )
    paths = [str(rand_onnx), str(toys["rgb"][1]), str(toys["k4"][1])]
    got = {}
    for want in ("x86-64", "x86-64-v3", "auto"):
        d = tmp_path / want
        d.mkdir()
        env = {**os.environ, "PYFUSION_WINOGRAD_ISA": want}
        r = subprocess.run([sys.executable, "-c", code, str(d), *paths], capture_output=True, text=True,
                           timeout=300, env=env)
        if want == "x86-64-v3" and isa == "x86-64":   # this CPU has no AVX2/FMA: refused, with the reason
            assert r.returncode != 0 and "lacks AVX2/FMA" in r.stderr
            continue
        assert r.returncode == 0, r.stderr
        assert r.stdout.split()[-1] == (isa if want == "auto" else want)
        got[want] = [np.load(d / f"{i}.npy") for i in range(len(paths))]
    for i in range(len(paths)):
        base, best = got["x86-64"][i], got["auto"][i]
        assert np.array_equal(base[0], base[1]) and np.array_equal(best[0], best[1])  # fused == unfused, each
        assert np.abs(base[0] - best[0]).max() <= 1e-5
    r = subprocess.run([sys.executable, "-c", "from pyfusion.backends import winograd as w\n"
                        "print(w.available(), '|', w.why_unavailable())"], capture_output=True, text=True,
                       timeout=60, env={**os.environ, "PYFUSION_WINOGRAD_ISA": "sse9"})
    assert r.returncode == 0 and r.stdout.startswith("False |") and "PYFUSION_WINOGRAD_ISA" in r.stdout


@pytest.mark.parametrize("k", [1, 2])
def test_shipped_model_matches_caffe_on_lytro(shared_data, caffe, winograd, k):
    """The shipped model: winograd vs the Caffe twin within 1e-4 on a real pair (Lytro c_0k, 200 x 200 crop)."""
    from pyfusion.io import read_image, to_gray, to_unit

    need(CNN.caffemodel.is_file() and CNN.onnx.is_file(),
         f"shipped {CNN.caffemodel.name} and {CNN.onnx.name} not present in models/")
    d = shared_data / "mfif" / "sources" / "color"
    a, b = [to_gray(to_unit(read_image(d / f"c_{k:02d}_{i}.tif"))).astype(np.float32)[150:350, 160:360]
            for i in (1, 2)]
    ref = net.score_map(a, b, backend="caffe")
    got = net.score_map(a, b, backend="winograd")
    assert ref.std() > 0.01
    assert np.abs(got - ref).max() <= 1e-4


def test_progress_bar_over_tiles(winograd, rand_onnx, capsys):
    a, b = pair(77, 101, seed=4)
    quiet = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=(10, 7))
    shown = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=(10, 7), progress=True)
    assert np.array_equal(quiet, shown)
    assert "score map (winograd)" in capsys.readouterr().err


def test_three_channel_model_through_score_map(winograd, toys, tmp_path):
    """A 3-channel ONNX file whose side-car names the wavelet_high net: score_map runs it tiled, bit-identically."""
    _, path = toys["rgb"]
    onnx = tmp_path / "high.onnx"
    onnx.write_bytes(path.read_bytes())
    Path(str(onnx) + ".json").write_text(json.dumps({"net": "wavelet_high"}))
    a, b = pair(57, 66, seed=5, c=3)
    whole = net.score_map(a, b, model=onnx, backend="winograd", tile=(10**6, 10**6))
    assert np.array_equal(whole, _toy_net(winograd, toys, "rgb")(a, b))
    assert np.array_equal(net.score_map(a, b, model=onnx, backend="winograd", tile=(4, 9)), whole)


def _onnx():
    import importlib.util

    need(importlib.util.find_spec("onnx") is not None, "onnx not installed (requirements.txt)")
    import onnx

    return onnx


@pytest.mark.parametrize("name", ["cnn", "wavelet_low", "wavelet_high"])
def test_load_params_reads_the_shipped_models_as_onnx_does(name):
    """The weights are read from the protobuf without the onnx package; onnx reads the same arrays."""
    onnx = _onnx()
    from onnx import numpy_helper

    from pyfusion.backends.winograd import load_params

    path = models.get(name).onnx
    ours = load_params(path)
    theirs = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    assert ours.keys() == theirs.keys() and len(ours) > 6
    for k, v in theirs.items():
        assert ours[k].dtype == v.dtype and ours[k].shape == v.shape and np.array_equal(ours[k], v), k


def test_load_params_reads_a_model_written_by_onnx(tmp_path, toys):
    onnx = _onnx()
    from onnx import numpy_helper

    from pyfusion.backends.winograd import load_params

    path = next(iter(toys.values()))[1]
    theirs = {t.name: numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer}
    ours = load_params(path)
    assert ours.keys() == theirs.keys()
    assert all(np.array_equal(ours[k], theirs[k]) for k in theirs)
