"""N frames in one pass (pyfusion.methods.stack, pyfusion.net.frame_scores): the per-frame score algebra of the
linear head, the small-region removal on label maps, a synthetic focus stack (fake scores and the shipped net),
the series path unchanged, N = 2 forced, the depth map and the CLI's --depth files."""
import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import random_params

import pyfusion
from pyfusion import models
from pyfusion.methods import cnn, stack
from pyfusion.refine import remove_small_regions

ROOT = Path(__file__).resolve().parents[1]
CNN = models.get("cnn")


def _logit(p):
    p = np.asarray(p, np.float64)
    return np.log(p / (1 - p))


@pytest.fixture(scope="module")
def asym_onnx(tmp_path_factory):
    """Random weights whose fc1 halves are independent (not B = -A, so u != -v), small fc2 (unsaturated scores);
    one without and one with fc biases."""
    from fusionlab.onnx_export import build_onnx

    out = {}
    for bias in (False, True):
        p = random_params(seed=21, fc2_scale=0.5, fc_bias=bias)
        rng = np.random.default_rng(22)
        half = p["fc1"].shape[1] // 2
        p["fc1"] = np.concatenate([p["fc1"][:, :half],
                                   rng.normal(0, np.sqrt(2 / half), (p["fc1"].shape[0], half)).astype(np.float32)], 1)
        path = tmp_path_factory.mktemp("stack") / f"asym{int(bias)}.onnx"
        path.write_bytes(build_onnx(p).SerializeToString())
        out[bias] = path
    return out


@pytest.mark.parametrize("backend", ["winograd", "onnx"])
@pytest.mark.parametrize("bias", [False, True])
def test_frame_scores_are_the_antisymmetric_part_of_the_logit(winograd, asym_onnx, bias, backend, request):
    from pyfusion import net

    if backend == "onnx":
        request.getfixturevalue("onnxruntime")
    rng = np.random.default_rng(3)
    i = rng.random((45, 61), dtype=np.float32)
    j = np.clip(cv2.GaussianBlur(i, (0, 0), 1.5) + rng.normal(0, 0.05, i.shape).astype(np.float32), 0, 1)
    kw = dict(model=asym_onnx[bias], backend=backend)
    pij, pji = net.score_map(i, j, **kw), net.score_map(j, i, **kw)
    assert 0.01 < pij.min() and pij.max() < 0.99 and pij.std() > 0.01            # not saturated, not constant
    si, sj = net.frame_scores(i, **kw), net.frame_scores(j, **kw)
    assert si.dtype == np.float32 and si.shape == pij.shape == CNN.score_shape(45, 61)
    lhs = _logit(pij) - _logit(pji)
    assert np.abs(lhs).max() > 0.1                                                # the test has something to test
    np.testing.assert_allclose(lhs, 2 * (si.astype(np.float64) - sj), atol=1e-4, rtol=0)
    if backend != "winograd":                                                     # and the same scores
        np.testing.assert_allclose(si, net.frame_scores(i, model=asym_onnx[bias], backend="winograd"), atol=1e-4,
                                   rtol=0)


def test_frame_scores_tiles_are_exact(winograd, asym_onnx):
    from pyfusion import net

    img = np.random.default_rng(4).random((77, 101), dtype=np.float32)
    whole = net.frame_scores(img, model=asym_onnx[False], backend="winograd", tile=(10**6, 10**6))
    for tile in [(3, 5), (10, 7), (40, 2)]:
        assert np.array_equal(net.frame_scores(img, model=asym_onnx[False], backend="winograd", tile=tile), whole)


def test_pair_scores_unchanged_by_the_frame_path(winograd, asym_onnx):
    """The pair path still gives sigmoid(u(a) + v(b) + bias): the frame head is an addition beside it."""
    from pyfusion.backends import winograd as wb

    netw = wb.Net(wb.load_params(asym_onnx[True]), threads=2)
    a, b = np.random.default_rng(5).random((2, 40, 48), dtype=np.float32)
    assert np.array_equal(netw(a, b), netw.scores_unfused(a, b))


def test_every_backend_has_a_frame_path():
    from pyfusion import backends, net

    assert net.frame_backends() == backends.BACKENDS


def test_default_backend_without_a_frame_path_falls_back_to_winograd(winograd, asym_onnx, monkeypatch):
    """A default backend without a per-frame path (none today: made so here) falls back to winograd."""
    from pyfusion import backends, net

    img = np.random.default_rng(7).random((40, 40), dtype=np.float32)
    want = net.frame_scores(img, model=asym_onnx[False], backend="winograd")
    monkeypatch.setattr(backends, "default_backend", lambda model=None, gpu=None: "onnx")
    monkeypatch.setattr(net, "frame_backends", lambda: ("winograd", "torch"))
    assert np.array_equal(net.frame_scores(img, model=asym_onnx[False]), want)
    with pytest.raises(NotImplementedError, match="per-frame"):
        net.frame_scores(img, model=asym_onnx[False], backend="onnx")


# ----------------------------------------------------------------------------------- small-region removal
def test_label_removal_equals_the_pairwise_removal_for_two_labels():
    rng = np.random.default_rng(6)
    for seed in range(5):
        binary = (cv2.GaussianBlur(rng.random((60, 70)), (0, 0), 2.0) > 0.5).astype(np.float64)
        labels = (binary == 0).astype(np.int32)                                  # label 0 = the binary map's 1
        for area in (5, 40, 200):
            got = stack.remove_small_label_regions(labels, area=area, n_labels=2)
            want = remove_small_regions(binary, area=area)
            assert np.array_equal(got == 0, want == 1), (seed, area)


def test_label_removal_refills_with_the_majority_neighbour():
    labels = np.zeros((30, 30), np.int32)
    labels[:, 15:] = 1
    labels[10:13, 2:5] = 2                      # small, inside 0
    labels[10:12, 14:17] = 3                    # small, on the 0|1 border: the majority of its border wins
    labels[20:22, 22:24] = 0                    # small 0 region inside 1
    out = stack.remove_small_label_regions(labels, area=20)
    assert (out[10:13, 2:5] == 0).all()
    assert (out[20:22, 22:24] == 1).all()
    ring = np.zeros((30, 30), bool)
    ring[9:13, 13:18] = True
    ring[10:12, 14:17] = False
    expect = np.bincount(labels[ring]).argmax()
    assert (out[10:12, 14:17] == expect).all()
    for k in np.unique(out):                     # every region is large now
        from scipy import ndimage

        comp, n = ndimage.label(out == k, structure=np.ones((3, 3)))
        assert np.bincount(comp.ravel())[1:].min() >= 20
    assert out.dtype == np.int32


# ----------------------------------------------------------------------------------- a synthetic focus stack
def synthetic_stack(n=4, h=96, w=192, seed=0, colour=False):
    """A textured image and ``n`` frames, frame k sharp in the k-th vertical band and blurred elsewhere (uint8)."""
    rng = np.random.default_rng(seed)
    shape = (h, w, 3) if colour else (h, w)
    sharp = cv2.GaussianBlur(rng.random(shape), (0, 0), 0.7)
    sharp = (sharp - sharp.min()) / (sharp.max() - sharp.min())
    blur = cv2.GaussianBlur(sharp, (0, 0), 2.5)
    band = np.minimum(np.arange(w) * n // w, n - 1)
    frames = []
    for k in range(n):
        m = (band == k)[None, :, None] if colour else (band == k)[None, :]
        frames.append(np.round(np.where(m, sharp, blur) * 255).astype(np.uint8))
    truth = np.broadcast_to(band, (h, w))
    return np.round(sharp * 255).astype(np.uint8), frames, truth


def fake_frame_fn(gray):
    """A focus measure at the net's score-map geometry: high-pass energy per 16x16 patch at stride 2."""
    g = np.asarray(gray, np.float64)
    e = (g - cv2.GaussianBlur(g, (0, 0), 1.0)) ** 2
    sh, sw = CNN.score_shape(*g.shape)
    e = np.pad(e, ((0, max(0, 2 * sh + 14 - g.shape[0])), (0, max(0, 2 * sw + 14 - g.shape[1]))), mode="edge")
    c = np.zeros((e.shape[0] + 1, e.shape[1] + 1))
    c[1:, 1:] = e.cumsum(0).cumsum(1)
    r, q = np.arange(sh) * 2, np.arange(sw) * 2
    s = c[r[:, None] + 16, q + 16] - c[r[:, None], q + 16] - c[r[:, None] + 16, q] + c[r[:, None], q]
    return np.log(s / 256 + 1e-6).astype(np.float32)


def _check_stack(result, sharp, frames, truth):
    depth = result.maps["depth_map"]
    assert depth.shape == truth.shape and depth.dtype == np.int32
    assert (depth == truth).mean() > 0.9
    err = np.abs(result.fused.astype(np.float64) - sharp).mean()
    assert err < 0.25 * min(np.abs(f.astype(np.float64) - sharp).mean() for f in frames)   # beats every frame
    return err


@pytest.mark.parametrize("colour", [False, True])
def test_synthetic_stack_with_fake_scores(colour):
    sharp, frames, truth = synthetic_stack(colour=colour)
    r = pyfusion.fuse(frames, frame_fn=fake_frame_fn)
    assert r.fused.shape == frames[0].shape and r.fused.dtype == np.uint8
    assert set(r.maps) == set(stack.MAPS)
    assert r.label_map.shape == truth.shape
    _check_stack(r, sharp, frames, truth)
    assert set(r.timings) == set(cnn.STAGES) | {"total"}


def test_synthetic_stack_with_the_shipped_net(winograd):
    sharp, frames, truth = synthetic_stack()
    r = pyfusion.fuse(frames, backend="winograd", threads=2)
    _check_stack(r, sharp, frames, truth)
    assert (r.label_map == truth).mean() > 0.9


def test_one_pass_calls_the_net_once_per_frame_and_ties_go_to_the_lower_index():
    sharp, frames, truth = synthetic_stack(n=3)
    calls = []

    def const(gray):
        calls.append(1)
        return np.zeros(CNN.score_shape(*gray.shape), np.float32)

    r = pyfusion.fuse(frames, frame_fn=const)
    assert len(calls) == 3
    assert (r.depth_map == 0).all() and (r.label_map == 0).all()
    np.testing.assert_array_equal(r.fused, frames[0])        # one frame everywhere: weight 1 (clipped, normalised)


def test_series_true_is_todays_series_result():
    """series=True runs the paper's (a + b) + c: the same bytes as fusing the pair, then the result with c."""
    sharp, frames, truth = synthetic_stack(n=3)

    def pair_fn(a, b):
        return (fake_frame_fn(a) > fake_frame_fn(b)).astype(np.float32)

    r = pyfusion.fuse(frames, score_fn=pair_fn, series=True)
    first = pyfusion.fuse(frames[:2], score_fn=pair_fn)
    second = pyfusion.fuse([first.fused, frames[2]], score_fn=pair_fn)
    assert np.array_equal(r.fused, second.fused)
    assert set(r.maps) == set(cnn.MAPS)
    np.testing.assert_array_equal(r.decision_map, first.decision_map)
    assert np.array_equal(pyfusion.fuse(frames, score_fn=pair_fn).fused, r.fused)   # a pair score_fn: series


def test_series_true_with_the_net_is_todays_series_result(winograd):
    sharp, frames, _ = synthetic_stack(n=3, h=48, w=96)
    r = pyfusion.fuse(frames, backend="winograd", series=True)
    first = pyfusion.fuse(frames[:2], backend="winograd")
    second = pyfusion.fuse([first.fused, frames[2]], backend="winograd")
    assert np.array_equal(r.fused, second.fused)


def test_two_sources_forced_one_pass():
    sharp, frames, truth = synthetic_stack(n=2, colour=True)
    r = pyfusion.fuse(frames, frame_fn=fake_frame_fn, series=False, edge_fix=False)   # the paper's blend: comparable with the pairwise method
    assert set(r.maps) == set(stack.MAPS)
    _check_stack(r, sharp, frames, truth)

    def pair_fn(a, b):
        return 1 / (1 + np.exp(-2 * (fake_frame_fn(a) - fake_frame_fn(b))))   # a pair net with this frame score

    p = pyfusion.fuse(frames, score_fn=pair_fn)
    # the same labels but where the averaged probabilities and the averaged logits disagree (focus boundaries)
    assert ((p.cleaned_map == 1) == (r.depth_map == 0)).mean() > 0.99
    assert np.abs(p.fused.astype(int) - r.fused).mean() < 0.5
    assert set(pyfusion.fuse(frames, score_fn=pair_fn, series=True).maps) == set(cnn.MAPS)


def test_two_sources_forced_one_pass_with_the_net(winograd):
    sharp, frames, truth = synthetic_stack(n=2, h=64, w=96)
    r = pyfusion.fuse(frames, backend="winograd", series=False)
    _check_stack(r, sharp, frames, truth)


def test_option_errors():
    _, frames, _ = synthetic_stack(n=3, h=32, w=48)
    with pytest.raises(ValueError, match="frame_fn"):
        pyfusion.fuse(frames, score_fn=lambda a, b: a, series=False)
    with pytest.raises(ValueError, match="frame_fn"):
        pyfusion.fuse(frames, frame_fn=fake_frame_fn, series=True)
    with pytest.raises(ValueError, match="threshold"):
        pyfusion.fuse(frames, frame_fn=fake_frame_fn, threshold=0.3)
    with pytest.raises(ValueError, match="shape"):
        pyfusion.fuse(frames, frame_fn=lambda g: np.zeros((3, 3), np.float32))


def test_memory_holds_no_per_frame_maps():
    """Peak traced memory of 8 frames is about that of 3 (the stack's maps are O(1) in N). One thread: with
    several, the guided filter's parallel temporaries make the traced peak vary by ~30% from run to run."""
    import tracemalloc

    def peak(n):
        _, frames, _ = synthetic_stack(n=n, h=96, w=128)
        tracemalloc.start()
        pyfusion.fuse(frames, frame_fn=fake_frame_fn, threads=1)
        _, top = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return top

    peak(8)   # warm-up: first-use allocations (lazy imports, caches) are not the stack's maps
    assert peak(8) < 1.2 * peak(3)


# ------------------------------------------------------------------------------------------------ the CLI
FAKE_NET = r"""
import sys, types
sys.path.insert(0, sys.argv[1])
import test_stack
net = types.ModuleType("pyfusion.net")
net.frame_scores = lambda img, **kw: test_stack.fake_frame_fn(img)
net.score_map = lambda a, b, **kw: (test_stack.fake_frame_fn(a) > test_stack.fake_frame_fn(b)).astype("float32")
sys.modules["pyfusion.net"] = net
import pyfusion
pyfusion.net = net
from pyfusion.cli import main
sys.exit(main(["fuse", *sys.argv[2:]]))
"""


def run_cli(*args):
    cmd = [sys.executable, "-c", FAKE_NET, str(ROOT / "tests")] + [str(a) for a in args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=120)


def _write_frames(tmp_path, frames):
    paths = []
    for k, f in enumerate(frames):
        paths.append(tmp_path / f"f{k}.png")
        cv2.imwrite(str(paths[-1]), f)
    return paths


def test_cli_writes_depth_files(tmp_path):
    sharp, frames, truth = synthetic_stack(n=4)
    paths = _write_frames(tmp_path, frames)
    out, depth = tmp_path / "fused.png", tmp_path / "depth.png"
    p = run_cli(*paths, "-o", out, "--depth", depth, "--maps", tmp_path / "maps")
    assert p.returncode == 0, p.stderr
    colour = cv2.imread(str(depth), cv2.IMREAD_UNCHANGED)
    index = cv2.imread(str(tmp_path / "depth_index.png"), cv2.IMREAD_UNCHANGED)
    assert colour.shape == truth.shape + (3,) and colour.dtype == np.uint8
    assert index.shape == truth.shape and index.dtype == np.uint16
    assert (index == truth).mean() > 0.9
    assert len({tuple(c) for c in colour.reshape(-1, 3)}) == 4                 # one colour per frame
    assert {f.name for f in (tmp_path / "maps").iterdir()} == {"label.png", "depth.png"}
    assert cv2.imread(str(tmp_path / "maps" / "depth.png"), cv2.IMREAD_UNCHANGED).max() == 255
    # two sources: the pairwise cleaned map; --series with three or more: no depth map (one line, exit 2)
    p = run_cli(*paths[:2], "-o", tmp_path / "out2.png", "--depth", tmp_path / "d2.png")
    assert p.returncode == 0, p.stderr
    assert set(np.unique(cv2.imread(str(tmp_path / "d2_index.png"), cv2.IMREAD_UNCHANGED))) <= {0, 1}
    p = run_cli(*paths[:3], "-o", tmp_path / "out3.png", "--depth", tmp_path / "d3.png", "--series")
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "--series" in p.stderr
    p = run_cli(*paths, "-o", tmp_path / "out4.png", "--depth", depth)               # exists, no --force
    assert p.returncode == 2 and "already exists" in p.stderr


def test_cli_series_flag(tmp_path):
    sharp, frames, truth = synthetic_stack(n=3, h=48, w=96)
    paths = _write_frames(tmp_path, frames)
    assert run_cli(*paths, "-o", tmp_path / "s.png", "--series").returncode == 0
    assert run_cli(*paths, "-o", tmp_path / "o.png").returncode == 0
    assert run_cli(*paths[:2], "-o", tmp_path / "ab.png").returncode == 0
    assert run_cli(tmp_path / "ab.png", paths[2], "-o", tmp_path / "abc.png").returncode == 0
    series = cv2.imread(str(tmp_path / "s.png"), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(series, cv2.imread(str(tmp_path / "abc.png"), cv2.IMREAD_UNCHANGED))
    assert not np.array_equal(series, cv2.imread(str(tmp_path / "o.png"), cv2.IMREAD_UNCHANGED))


def test_progress_names_each_pass_and_counts_the_frames(capsys):
    sharp, frames, truth = synthetic_stack(n=3, h=64, w=96)
    quiet, _, _ = stack.fuse(frames, frame_fn=fake_frame_fn)
    assert capsys.readouterr().err == ""
    fused, _, _ = stack.fuse(frames, frame_fn=fake_frame_fn, progress=True)
    err = capsys.readouterr().err
    for stage in ("stack: score maps", "stack: edge band", "stack: pyramid blend"):
        assert re.search(rf"{stage}: 100%[^\r\n]* 3/3 ", err), err
    np.testing.assert_array_equal(fused, quiet)
    fused, _, _ = stack.fuse(frames, frame_fn=fake_frame_fn, progress=True, edge_fix=False)
    err = capsys.readouterr().err
    for stage in ("stack: score maps", "stack: guide", "stack: weights and blend"):
        assert re.search(rf"{stage}: 100%[^\r\n]* 3/3 ", err), err
