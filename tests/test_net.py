"""pyfusion.net: tiles identical to whole-image inference (both backends), memory-bounded tiling, backends agree."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pyfusion import net

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(41, 37), (77, 101)]                      # odd and even, not multiples of any tile
TILES = [(3, 5), (10, 7), (40, 2), (6, 100)]       # smaller than the score map in both / one direction


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    """A random-weight ONNX model (built without Caffe)."""
    pytest.importorskip("onnxruntime")
    from pyfusion.onnx_export import build_onnx, random_params

    path = tmp_path_factory.mktemp("net") / "rand.onnx"
    path.write_bytes(build_onnx(random_params(seed=3)).SerializeToString())
    return path


@pytest.fixture(scope="module")
def caffe_model(caffe, tmp_path_factory):
    """The same random weights as a deploy caffemodel, with its ONNX export beside it."""
    from pyfusion.onnx_export import export_onnx, random_params, set_deploy_params

    path = tmp_path_factory.mktemp("net") / "rand.caffemodel"
    deploy = caffe.Net(str(net.DEPLOY_PROTOTXT), caffe.TEST)
    set_deploy_params(deploy, random_params(seed=3, fc2_scale=1.0))
    deploy.save(str(path))
    export_onnx(path, path.with_suffix(".onnx"))
    return path


def _pair(h, w, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.random((h, w), dtype=np.float32)
    b = np.clip(a + rng.normal(0, 0.2, (h, w)).astype(np.float32), 0, 1)
    return a, b


@pytest.mark.parametrize("h,w", SIZES + [(16, 16), (17, 200), (300, 19)])
@pytest.mark.parametrize("tile", [(1, 1)] + TILES)
@pytest.mark.parametrize("backend", ["onnx", "winograd"])
def test_tile_plan_covers_every_score_once(h, w, tile, backend):
    sh, sw = net.score_shape(h, w)
    hits = np.zeros((sh, sw), int)
    grid = net.GRID.get(backend, 2)
    for rows, cols, rin, cin in net.tile_plan(h, w, tile, backend=backend):
        hits[rows, cols] += 1
        assert rin.start % grid == 0 and cin.start % grid == 0    # pool windows (and Winograd tiles) on the grid
        assert rin.stop - rin.start <= net.input_extent(tile[0], h, backend=backend)  # the memory model's bound
        assert cin.stop - cin.start <= net.input_extent(tile[1], w, backend=backend)
        assert 0 <= rin.start < rin.stop <= h and 0 <= cin.start < cin.stop <= w
        th, tw = net.score_shape(rin.stop - rin.start, cin.stop - cin.start)
        assert rows.stop - rin.start // 2 <= th and cols.stop - cin.start // 2 <= tw
        # the receptive field [2i - 4, 2i + 19] of every kept score lies in the tile (or meets the image edge)
        assert rin.start == 0 or 2 * rows.start - 4 >= rin.start
        assert rin.stop == h or 2 * (rows.stop - 1) + 19 < rin.stop
        assert cin.start == 0 or 2 * cols.start - 4 >= cin.start
        assert cin.stop == w or 2 * (cols.stop - 1) + 19 < cin.stop
    assert (hits == 1).all()


@pytest.mark.parametrize("h,w", SIZES)
def test_onnx_tiles_equal_whole_image(onnx_model, h, w):
    a, b = _pair(h, w)
    whole = net.score_map(a, b, model=onnx_model, backend="onnx", tile=(10**6, 10**6))
    assert whole.shape == net.score_shape(h, w) and whole.std() > 0.01
    for tile in ([(1, 1)] if h * w < 2000 else []) + TILES:
        tiled = net.score_map(a, b, model=onnx_model, backend="onnx", tile=tile)
        assert np.abs(tiled - whole).max() <= 1e-6, tile


@pytest.mark.parametrize("h,w", SIZES)
def test_caffe_tiles_equal_whole_image(caffe_model, h, w):
    """Caffe tiled == Caffe whole-image. Caffe's BLAS rounds a GEMM differently for different sizes, so the two
    agree to float rounding (~1e-7 here), not bit for bit as ONNX Runtime does."""
    a, b = _pair(h, w, seed=1)
    whole = net.score_map(a, b, model=caffe_model, backend="caffe", tile=(10**6, 10**6))
    for tile in TILES:
        tiled = net.score_map(a, b, model=caffe_model, backend="caffe", tile=tile)
        assert np.abs(tiled - whole).max() <= 1e-6, tile
    onnx = net.score_map(a, b, model=caffe_model, backend="onnx", tile=(5, 9))
    assert np.abs(onnx - whole).max() <= 1e-5


def test_choose_tile_fits_the_budget():
    for backend, est in net.BYTES.items():
        assert net.choose_tile(100, 80, backend=backend, max_memory=1 << 40) == net.score_shape(100, 80)
        last = None
        for mb in (1, 16, 64, 256, 1024):
            th, tw = net.choose_tile(4000, 3000, backend=backend, max_memory=mb << 20)
            assert th >= 1 and tw >= 1
            if th > 1 and tw > 1:
                assert est(net.input_extent(th, 4000, backend=backend), net.input_extent(tw, 3000, backend=backend)) <= mb << 20
            if last is not None:
                assert th * tw >= last[0] * last[1]
            last = th, tw
        # a narrow image gets full-width strips
        th, tw = net.choose_tile(5000, 40, backend=backend, max_memory=est(5000, 40) // 2)
        assert tw == net.score_shape(5000, 40)[1] and th < net.score_shape(5000, 40)[0]


def test_max_memory_tiles_and_keeps_scores(onnx_model):
    a, b = _pair(300, 260, seed=2)
    whole = net.score_map(a, b, model=onnx_model, backend="onnx", max_memory=1 << 40)
    small = net.onnx_bytes(120, 120)
    assert net.choose_tile(300, 260, backend="onnx", max_memory=small) < net.score_shape(300, 260)
    assert np.abs(net.score_map(a, b, model=onnx_model, backend="onnx", max_memory=small) - whole).max() <= 1e-6


@pytest.mark.parametrize("backend", ["onnx", "winograd"])
def test_peak_memory_follows_max_memory(onnx_model, backend, request):
    """A 800 x 600 pair within a 32 MiB budget: the peak RSS grows by about the budget, not the image."""
    if backend == "winograd":
        request.getfixturevalue("winograd")  # skips (fails under CI) when the C kernels are not built
    code = f"""
import numpy as np
from pyfusion import net
def hwm():
    return next(int(l.split()[1]) << 10 for l in open('/proc/self/status') if l.startswith('VmHWM'))
a = np.random.default_rng(0).random((800, 600), dtype=np.float32); b = a[::-1].copy()
net.score_map(a[:64, :64], b[:64, :64], model={str(onnx_model)!r}, backend={backend!r})
before = hwm()
s = net.score_map(a, b, model={str(onnx_model)!r}, backend={backend!r}, max_memory=32 << 20)
print((hwm() - before) >> 20, s.shape)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stderr
    grew = int(r.stdout.split()[0])
    whole = net.BYTES[backend](800, 600) >> 20                      # without tiling: ~0.7 GiB onnx, ~0.1 winograd
    assert net.choose_tile(800, 600, backend=backend, max_memory=32 << 20) < net.score_shape(800, 600)
    assert grew <= 32 + 16, f"peak RSS grew by {grew} MiB for a 32 MiB budget (whole image: {whole} MiB)"


def test_fuse_passes_max_memory(onnx_model):
    import pyfusion

    a, b = _pair(90, 70, seed=4)
    r1 = pyfusion.fuse([a, b], model=onnx_model, backend="onnx")
    r2 = pyfusion.fuse([a, b], model=onnx_model, backend="onnx", max_memory=net.onnx_bytes(40, 40))
    assert np.abs(r1.score_map - r2.score_map).max() <= 1e-6
    assert np.array_equal(r1.fused, r2.fused)
    with pytest.raises(ValueError, match="not both"):
        pyfusion.fuse([a, b], score_fn=lambda x, y: None, max_memory=1 << 30)


def _lytro_gray(shared_data, k):
    from pyfusion.fusion import to_gray
    from pyfusion.io import read_image, to_unit

    d = shared_data / "mfif" / "sources" / "color"
    paths = d / f"c_{k:02d}_1.tif", d / f"c_{k:02d}_2.tif"
    if not all(p.is_file() for p in paths):
        pytest.skip(f"Lytro pair {k} not in {d}")
    return [to_gray(to_unit(read_image(p))).astype(np.float32) for p in paths]


@pytest.mark.parametrize("k", [1, 2])
def test_backends_agree_on_lytro_pairs(shared_data, caffe_model, k):
    """ONNX Runtime (folded head) and the Caffe twin: one score map within 1e-4 on real images (200 x 200 crop)."""
    a, b = _lytro_gray(shared_data, k)
    a, b = a[150:350, 160:360], b[150:350, 160:360]
    ref = net.score_map(a, b, model=caffe_model, backend="caffe")
    fast = net.score_map(a, b, model=caffe_model, backend="onnx")
    assert ref.std() > 0.01
    assert np.abs(fast - ref).max() <= 1e-4


def test_shipped_model_backends_agree(shared_data, caffe):
    """The shipped model and its ONNX export agree within 1e-4 on a Lytro crop (skips until both are shipped)."""
    onnx_path = net.MODEL_DEFAULT.with_suffix(".onnx")
    if not (net.MODEL_DEFAULT.is_file() and onnx_path.is_file()):
        pytest.skip("shipped models/cnn_fusion.caffemodel and .onnx not present")
    a, b = _lytro_gray(shared_data, 1)
    a, b = a[100:300, 100:300], b[100:300, 100:300]
    ref = net.score_map(a, b, backend="caffe")
    assert np.abs(net.score_map(a, b, backend="onnx") - ref).max() <= 1e-4
