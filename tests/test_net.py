"""pyfusion.net / tiling / backends: exact tiles, memory-bounded tiling, backends agree, a toy model registered
with no code change outside the registry."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import pair as _pair
from helpers import random_params

from pyfusion import backends, models, net, tiling

from pyfusion import netspec
from pyfusion.util import sha256_file

ROOT = Path(__file__).resolve().parents[1]
SIZES = [(41, 37), (77, 101)]                      # odd and even, not multiples of any tile
TILES = [(3, 5), (10, 7), (40, 2), (6, 100)]       # smaller than the score map in both / one direction
CNN = models.get("cnn")


@pytest.fixture(scope="module")
def onnx_model(onnxruntime, tmp_path_factory):
    """A random-weight ONNX model of the cnn net (built without Caffe)."""
    from fusionlab.onnx_export import build_onnx

    path = tmp_path_factory.mktemp("net") / "rand.onnx"
    path.write_bytes(build_onnx(random_params(seed=3)).SerializeToString())
    return path


@pytest.fixture(scope="module")
def caffe_model(caffe, tmp_path_factory):
    """The same random weights as a deploy caffemodel, with its ONNX export beside it."""
    from fusionlab.onnx_export import export_onnx, set_deploy_params

    path = tmp_path_factory.mktemp("net") / "rand.caffemodel"
    deploy = caffe.Net(str(CNN.deploy), caffe.TEST)
    set_deploy_params(deploy, random_params(seed=3, fc2_scale=1.0))
    deploy.save(str(path))
    export_onnx(path, path.with_suffix(".onnx"))
    return path


@pytest.mark.parametrize("h,w", SIZES + [(16, 16), (17, 200), (300, 19)])
@pytest.mark.parametrize("tile", [(1, 1)] + TILES)
@pytest.mark.parametrize("name", ["onnx", "winograd"])
def test_tile_plan_covers_every_score_once(h, w, tile, name):
    be = backends.get(name)
    sh, sw = CNN.score_shape(h, w)
    hits = np.zeros((sh, sw), int)
    grid = getattr(be, "GRID", 2)
    for rows, cols, rin, cin in tiling.tile_plan(h, w, tile, model=CNN, backend=be):
        hits[rows, cols] += 1
        assert rin.start % grid == 0 and cin.start % grid == 0    # pool windows (and Winograd tiles) on the grid
        assert rin.stop - rin.start <= tiling.input_extent(tile[0], h, model=CNN, backend=be)  # memory model bound
        assert cin.stop - cin.start <= tiling.input_extent(tile[1], w, model=CNN, backend=be)
        assert 0 <= rin.start < rin.stop <= h and 0 <= cin.start < cin.stop <= w
        th, tw = CNN.score_shape(rin.stop - rin.start, cin.stop - cin.start)
        assert rows.stop - rin.start // 2 <= th and cols.stop - cin.start // 2 <= tw
        # the receptive field [2i - 4, 2i + 19] of every kept score lies in the tile (or meets the image edge)
        assert rin.start == 0 or 2 * rows.start - 4 >= rin.start
        assert rin.stop == h or 2 * (rows.stop - 1) + 19 < rin.stop
        assert cin.start == 0 or 2 * cols.start - 4 >= cin.start
        assert cin.stop == w or 2 * (cols.stop - 1) + 19 < cin.stop
    assert (hits == 1).all()


@pytest.mark.parametrize("h,w", SIZES)
def test_onnx_tiles_equal_whole_image(onnx_model, h, w):
    """ONNX Runtime tiles agree with the whole image to float rounding: its convolution kernels block the work by
    the input size, so tiles are not bit-identical in general (the winograd backend's are: test_winograd.py)."""
    a, b = _pair(h, w)
    whole = net.score_map(a, b, model=onnx_model, backend="onnx", tile=(10**6, 10**6))
    assert whole.shape == CNN.score_shape(h, w) and whole.std() > 0.01
    for tile in ([(1, 1)] if h * w < 2000 else []) + TILES:
        tiled = net.score_map(a, b, model=onnx_model, backend="onnx", tile=tile)
        assert np.abs(tiled - whole).max() <= 1e-6, tile


@pytest.mark.parametrize("h,w", SIZES)
def test_caffe_tiles_equal_whole_image(caffe_model, h, w):
    """Caffe tiled == Caffe whole-image. Caffe's BLAS blocks a GEMM by its sizes, so the two agree to float32
    rounding, not bit for bit: the fc1 convolution sums 512 * 8 * 8 = 32768 products, whose rounding error grows
    like sqrt(32768) * 6e-8 ~ 1e-5 of the logit's scale (measured up to 1.0e-6 on these pairs); a wrong tile (a
    halo short by one pixel) moves scores by ~1e-2."""
    a, b = _pair(h, w, seed=1)
    whole = net.score_map(a, b, model=caffe_model, backend="caffe", tile=(10**6, 10**6))
    for tile in TILES:
        tiled = net.score_map(a, b, model=caffe_model, backend="caffe", tile=tile)
        assert np.abs(tiled - whole).max() <= 1e-5, tile
    onnx = net.score_map(a, b, model=caffe_model, backend="onnx", tile=(5, 9))
    assert np.abs(onnx - whole).max() <= 1e-5


@pytest.mark.parametrize("name", backends.BACKENDS)
@pytest.mark.parametrize("model", sorted(models.MODELS))
def test_choose_tile_fits_the_budget(name, model):
    be, m = backends.get(name), models.get(model)

    def est(th, tw, h, w):
        return be.peak_bytes(m, tiling.input_extent(th, h, model=m, backend=be),
                             tiling.input_extent(tw, w, model=m, backend=be))

    assert tiling.choose_tile(100, 80, model=m, backend=be, max_bytes=1 << 40) == m.score_shape(100, 80)
    last = None
    for mb in (1, 16, 64, 256, 1024):
        th, tw = tiling.choose_tile(4000, 3000, model=m, backend=be, max_bytes=mb << 20)
        assert th >= 1 and tw >= 1
        if th > 1 and tw > 1:
            assert est(th, tw, 4000, 3000) <= mb << 20
        if last is not None:
            assert th * tw >= last[0] * last[1]
        last = th, tw
    # a narrow image gets full-width strips
    th, tw = tiling.choose_tile(5000, 40, model=m, backend=be, max_bytes=be.peak_bytes(m, 5000, 40) // 2)
    assert tw == m.score_shape(5000, 40)[1] and th < m.score_shape(5000, 40)[0]


def test_caffe_tiles_stay_under_int_max():
    """Caffe refuses a blob over INT_MAX elements (the fc1-as-conv im2col buffer at about 1024^2): the memory
    model counts such a tile as not fitting, whatever the budget."""
    be = backends.get("caffe")
    assert be.peak_bytes(CNN, 1100, 1100) > 1 << 60
    th, tw = tiling.choose_tile(4000, 3000, model=CNN, backend=be, max_bytes=1 << 50)
    sh, sw = CNN.score_shape(tiling.input_extent(th, 4000, model=CNN, backend=be),
                             tiling.input_extent(tw, 3000, model=CNN, backend=be))
    assert 512 * 64 * sh * sw <= be.INT_MAX


@pytest.mark.parametrize("model", sorted(m.name for m in models.MODELS.values() if m.caffemodel.is_file()))
def test_caffe_folded_head_equals_the_twin(caffe, model, monkeypatch):
    """$PYFUSION_CAFFE_HEAD=folded: fc2 . fc1 as one convolution to the logit difference, the twin's scores to
    float rounding (<= 1e-4) for every model with weights here; an unknown head is refused by name."""
    from pyfusion.backends import caffe as caffe_backend

    m = models.get(model)
    a, b = _pair(70, 90, seed=3, c=m.in_channels if m.in_channels > 1 else None)
    twin = net.score_map(a, b, model=model, backend="caffe")
    monkeypatch.setenv(caffe_backend.HEAD_ENV, "folded")
    folded = net.score_map(a, b, model=model, backend="caffe")
    assert folded.shape == twin.shape and twin.std() > 1e-3
    assert np.abs(folded - twin).max() <= 1e-4
    monkeypatch.setenv(caffe_backend.HEAD_ENV, "fast")
    with pytest.raises(ValueError, match="choose from twin, folded"):
        net.score_map(a, b, model=model, backend="caffe")


def test_max_memory_tiles_and_keeps_scores(onnx_model):
    a, b = _pair(300, 260, seed=2)
    whole = net.score_map(a, b, model=onnx_model, backend="onnx", max_bytes=1 << 40)
    be = backends.get("onnx")
    small = be.peak_bytes(CNN, 120, 120)
    assert tiling.choose_tile(300, 260, model=CNN, backend=be, max_bytes=small) < CNN.score_shape(300, 260)
    assert np.abs(net.score_map(a, b, model=onnx_model, backend="onnx", max_bytes=small) - whole).max() <= 1e-6


# measured base of the peak-RSS check: the first score map loads the model and warms the allocator; what a second
# call adds on top beyond the budget is numpy's output arrays and the tile copies (~2 MiB at 800 x 600), so 16 MiB
# is a margin of several times that, far below the ~700 MiB (onnx) an untiled pass would add
RSS_SLACK_MIB = 16


@pytest.mark.slow
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
s = net.score_map(a, b, model={str(onnx_model)!r}, backend={backend!r}, max_bytes=32 << 20)
print((hwm() - before) >> 20, s.shape)
"""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=1200)
    assert r.returncode == 0, r.stderr
    grew = int(r.stdout.split()[0])
    be = backends.get(backend)
    whole = be.peak_bytes(CNN, 800, 600) >> 20
    assert tiling.choose_tile(800, 600, model=CNN, backend=be, max_bytes=32 << 20) < CNN.score_shape(800, 600)
    assert grew <= 32 + RSS_SLACK_MIB, f"peak RSS grew by {grew} MiB for a 32 MiB budget (whole image: {whole} MiB)"


def test_fuse_passes_max_memory(onnx_model):
    import pyfusion

    a, b = _pair(90, 70, seed=4)
    r1 = pyfusion.fuse([a, b], model=onnx_model, backend="onnx")
    r2 = pyfusion.fuse([a, b], model=onnx_model, backend="onnx",
                       max_memory=backends.get("onnx").peak_bytes(CNN, 40, 40) / 2**30)   # GB
    assert np.abs(r1.score_map - r2.score_map).max() <= 1e-6
    with pytest.raises(ValueError, match="not both"):
        pyfusion.fuse([a, b], score_fn=lambda x, y: None, max_memory=1.0)


def test_unknown_model_and_wrong_channels_are_refused(onnx_model):
    a, b = _pair(40, 40)
    with pytest.raises(models.ModelError, match="unknown model"):
        net.score_map(a, b, model="no_such_net")
    with pytest.raises(ValueError, match="3 channel"):
        net.score_map(a, b, model="wavelet_high", backend="onnx")
    with pytest.raises(ValueError, match="unknown backend"):
        net.score_map(a, b, model=onnx_model, backend="tpu")


def _lytro_gray(shared_data, k):
    from pyfusion.io import read_image, to_gray, to_unit

    d = shared_data / "mfif" / "sources" / "color"
    paths = d / f"c_{k:02d}_1.tif", d / f"c_{k:02d}_2.tif"
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


def test_shipped_model_backends_agree(shared_data, caffe, winograd):
    """The shipped cnn model: caffe, onnx and winograd within 1e-4 on a Lytro crop."""
    a, b = _lytro_gray(shared_data, 1)
    a, b = a[100:300, 100:300], b[100:300, 100:300]
    ref = net.score_map(a, b, backend="caffe")
    assert ref.std() > 0.01
    for name in ("onnx", "winograd"):
        assert np.abs(net.score_map(a, b, backend=name) - ref).max() <= 1e-4, name


@pytest.fixture(params=[("siamese", 8), ("pseudo", 8), ("2ch", 8), ("siamese", 4)])
def toy_model(caffe, tmp_path, monkeypatch, request):
    """A 3-channel net registered as "toy" (every branch layout; 16x16 and 8x8 patches): its prototxt from the
    registry, random weights, side-cars. Nothing outside the registry entry is told about it."""
    from fusionlab.onnx_export import export_onnx, set_deploy_params

    branches, head = request.param
    m = models.Model("toy", "toy", "a test net: 3 channels, random weights", in_channels=3, root=tmp_path,
                     branches=branches, patch=2 * head)
    monkeypatch.setitem(models.MODELS, "toy", m)
    (tmp_path / "prototxt").mkdir()
    (tmp_path / "models").mkdir()
    m.deploy.write_text(netspec.deploy(m))
    deploy = caffe.Net(str(m.deploy), caffe.TEST)
    set_deploy_params(deploy, random_params(seed=5, in_channels=3, fc2_scale=1.0, branches=branches, head=head))
    deploy.save(str(m.caffemodel))
    Path(str(m.caffemodel) + ".json").write_text(json.dumps({"net": "toy", "sha256": sha256_file(m.caffemodel)}))
    export_onnx(m.caffemodel, m.onnx)
    return m


def test_registered_toy_model_runs_on_every_backend(toy_model, winograd, onnxruntime):
    """One registry entry: winograd, onnx and caffe give the same scores (1e-5), tiled and whole, whatever the
    branch layout (the ablation nets) and patch size."""
    a, b = _pair(45, 61, seed=6, c=3)
    ref = net.score_map(a, b, model="toy", backend="caffe", tile=(10**6, 10**6))
    assert ref.shape == toy_model.score_shape(45, 61) and ref.std() > 0.01
    for name in (n for n in backends.BACKENDS if n != "torch" or backends.get(n).available()):   # torch: optional
        for tile in ((10**6, 10**6), (5, 7), (11, 3)):
            got = net.score_map(a, b, model="toy", backend=name, tile=tile)
            assert np.abs(got - ref).max() <= 1e-5, (name, tile)
    # a weights file of the toy model resolves to its net through the side-car
    assert models.resolve(toy_model.caffemodel)[0] is toy_model


def test_gpu_without_cuda_is_a_one_line_error(caffe, tmp_path):
    """--gpu on a CPU-only pycaffe (and no CUDA build of torch): the message, not glog's abort of the process."""
    import cv2

    from pyfusion.backends import caffe as caffe_backend

    if caffe_backend.has_cuda():
        pytest.skip("this pycaffe was built with CUDA")
    a, b = _pair(40, 44, seed=2)
    paths = []
    for i, img in enumerate((a, b)):
        paths.append(str(tmp_path / f"s{i}.png"))
        cv2.imwrite(paths[-1], (img * 255).astype(np.uint8))
    r = subprocess.run([sys.executable, "-m", "pyfusion", "fuse", *paths, "-o", str(tmp_path / "f.png"),
                        "--gpu", "0", "--backend", "caffe"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 1 and "built without CUDA" in r.stderr, r.stderr
    assert r.stderr.count("\n") == 1 and not (tmp_path / "f.png").exists()
