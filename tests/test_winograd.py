"""The winograd backend (pyfusion.backends.winograd, C kernels in pyfusion/backends/_winograd.c): the transform identity, agreement
with ONNX Runtime and the Caffe twin, thread-count independence, exact tiling."""
import numpy as np
import pytest

from pyfusion import net

# odd, even, tiny (one patch), not multiples of the 4x4 Winograd tile, and wider than one 18-tile block
SIZES = [(16, 16), (17, 23), (31, 32), (41, 37), (97, 61), (33, 300)]


@pytest.fixture(scope="module")
def rand_onnx(tmp_path_factory):
    """Random weights as an ONNX model (built without Caffe)."""
    from pyfusion.onnx_export import build_onnx, random_params

    path = tmp_path_factory.mktemp("wino") / "rand.onnx"
    path.write_bytes(build_onnx(random_params(seed=5)).SerializeToString())
    return path


@pytest.fixture(scope="module")
def rand_net(winograd, rand_onnx):
    return winograd.Net(winograd.load_params(rand_onnx), threads=2)


def _pair(h, w, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((h, w), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.2, (h, w)).astype(np.float32), 0, 1)
    return a, b


def _conv3x3(x, w):
    """Direct cross-correlation, pad 1, float64: x (Cin, H, W), w (Cout, Cin, 3, 3) -> (Cout, H, W)."""
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    h, wd = x.shape[1:]
    return sum(np.einsum("oc,chw->ohw", w[:, :, i, j], xp[:, i:i + h, j:j + wd]) for i in range(3) for j in range(3))


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
    ref = _conv3x3(d, g)[:, 1:5, 1:5]                 # the valid 4x4 part of the padded convolution
    assert np.abs(y - ref).max() < 1e-5              # U is stored as float32


def test_pack_panels():
    from pyfusion.backends.winograd import pack_panels

    b = np.arange(3 * 5 * 32, dtype=np.float32).reshape(3, 5, 32)
    p = pack_panels(b)
    assert p.shape == (3, 2, 5, 16)
    assert np.array_equal(p[1, 1, 4], b[1, 4, 16:])
    with pytest.raises(ValueError, match="multiple of 16"):
        pack_panels(np.zeros((4, 10), np.float32))


def test_features_match_direct_convolution(winograd, rand_net):
    """conv1..conv3 of one source against a float64 direct computation (ReLU, ceil-mode pool), odd size."""
    from pyfusion.onnx_export import random_params

    p = random_params(seed=5)
    img = np.random.default_rng(1).random((23, 29), dtype=np.float32)
    x = np.maximum(_conv3x3(img[None].astype(np.float64), p["conv1"][0]) + p["conv1"][1][:, None, None], 0)
    x = np.maximum(_conv3x3(x, p["conv2"][0]) + p["conv2"][1][:, None, None], 0)
    x = np.pad(x, ((0, 0), (0, 1), (0, 1)))           # ceil mode: the last window is clipped (values >= 0)
    x = x.reshape(x.shape[0], 12, 2, 15, 2).max(axis=(2, 4))
    x = np.maximum(_conv3x3(x, p["conv3"][0]) + p["conv3"][1][:, None, None], 0)
    got = rand_net.features(img)
    assert got.shape == (12, 15, 256)
    assert np.abs(got.transpose(2, 0, 1) - x).max() <= 1e-5 * max(1.0, np.abs(x).max())


@pytest.mark.parametrize("h,w", SIZES)
def test_matches_onnx_runtime(rand_onnx, rand_net, h, w):
    ort = pytest.importorskip("onnxruntime")
    a, b = _pair(h, w, seed=h + w)
    sess = ort.InferenceSession(str(rand_onnx), providers=["CPUExecutionProvider"])
    ref = sess.run(None, {"pair": np.stack([a, b])[:, None]})[0][0, 0]
    got = rand_net(a, b)
    assert got.shape == net.score_shape(h, w) == ref.shape
    assert ref.size < 4 or ref.std() > 0.01          # the random net gives spread scores, not all 0 or 1
    assert np.abs(got - ref).max() <= 1e-5


@pytest.mark.parametrize("h,w", SIZES)
def test_fused_equals_layer_by_layer(rand_net, h, w):
    """conv1 inside conv2's blocks and conv3 into the head products: the same arithmetic as layer by layer."""
    a, b = _pair(h, w, seed=2 * h + w)
    assert np.array_equal(rand_net(a, b), rand_net.scores_unfused(a, b))


def test_thread_count_does_not_change_scores(winograd, rand_onnx, rand_net):
    a, b = _pair(97, 130, seed=7)
    one = winograd.Net(winograd.load_params(rand_onnx), threads=1)(a, b)
    assert np.array_equal(one, rand_net(a, b))
    assert np.array_equal(rand_net(a, b), rand_net(a, b))


def test_same_source_twice(rand_net):
    """a is b: the second source's products accumulate onto the first's (no uninitialised memory)."""
    a, _ = _pair(40, 40, seed=9)
    s1, s2 = rand_net(a, a), rand_net(a, a.copy())
    assert np.array_equal(s1, s2) and np.isfinite(s1).all()


@pytest.mark.parametrize("h,w", [(41, 37), (77, 101)])
def test_tiles_equal_whole_image(winograd, rand_onnx, h, w):
    a, b = _pair(h, w, seed=3)
    whole = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=(10**6, 10**6))
    for tile in [(3, 5), (10, 7), (40, 2), (6, 100)]:
        tiled = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=tile)
        assert np.array_equal(tiled, whole), tile


def test_default_backend_is_winograd_when_built(winograd, rand_onnx):
    try:
        import onnxruntime as ort
        providers = ort.get_available_providers()
    except ImportError:
        providers = []
    if "CUDAExecutionProvider" in providers:
        pytest.skip("a CUDA execution provider exists: the default is ONNX Runtime on the GPU")
    assert net.default_backend(rand_onnx) == "winograd"


def test_runs_without_caffe_or_onnxruntime(winograd, rand_onnx):
    import subprocess
    import sys

    code = (
        "import sys, numpy as np; sys.modules['caffe'] = None; sys.modules['onnxruntime'] = None\n"
        "from pyfusion import net\n"
        "assert net.default_backend(sys.argv[1]) == 'winograd'\n"
        "s = net.score_map(np.ones((40, 41), np.float32) * 0.5, np.zeros((40, 41), np.float32), model=sys.argv[1])\n"
        "assert s.shape == (13, 14), s.shape\n"
    )
    r = subprocess.run([sys.executable, "-c", code, str(rand_onnx)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("k", [1, 2])
def test_shipped_model_matches_caffe_on_lytro(shared_data, caffe, winograd, k):
    """The shipped model: winograd vs the Caffe twin within 1e-4 on a real pair (Lytro c_0k, 200 x 200 crop)."""
    from pyfusion.fusion import to_gray
    from pyfusion.io import read_image, to_unit

    if not (net.MODEL_DEFAULT.is_file() and net.MODEL_DEFAULT.with_suffix(".onnx").is_file()):
        pytest.skip("shipped models/cnn_fusion.caffemodel and .onnx not present")
    d = shared_data / "mfif" / "sources" / "color"
    a, b = [to_gray(to_unit(read_image(d / f"c_{k:02d}_{i}.tif"))).astype(np.float32)[150:350, 160:360]
            for i in (1, 2)]
    ref = net.score_map(a, b, backend="caffe")
    got = net.score_map(a, b, backend="winograd")
    assert ref.std() > 0.01
    assert np.abs(got - ref).max() <= 1e-4


def test_progress_bar_over_tiles(winograd, rand_onnx, capsys):
    a, b = _pair(77, 101, seed=4)
    quiet = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=(10, 7))
    shown = net.score_map(a, b, model=rand_onnx, backend="winograd", tile=(10, 7), progress=True)
    assert np.array_equal(quiet, shown)
    assert "score map (winograd)" in capsys.readouterr().err
