"""The occlusion benchmark: the layered-defocus stack generator and the halo measure (fusionlab.occlusion), and
`python -m fusionlab occlusion-bench` end to end on one tiny stack."""
import hashlib
import json
import shutil

import numpy as np
import pytest
from helpers import need

from fusionlab import occlusion, synthetic
from fusionlab.commands import occlusion_bench
from pyfusion.io import write_image


@pytest.fixture(scope="module")
def photos():
    from skimage import data

    return [np.ascontiguousarray(im[:64, :80]) for im in (data.astronaut()[100:], data.coffee(), data.chelsea())]


def _stack(photos, seed=0, planes=3, radius=4.0):
    return occlusion.make_occlusion_stack(photos[:planes], np.random.default_rng([seed, 1]), radius=radius, name="t")


# ------------------------------------------------------------------------------------------------- the generator
def test_truth_is_each_pixel_from_the_nearest_plane(photos):
    s = _stack(photos)
    assert s.sharp.dtype == np.uint8 and s.sharp.shape == photos[0].shape
    assert set(np.unique(s.planes)) == {0, 1, 2}
    for p in range(3):
        assert np.array_equal(s.sharp[s.planes == p], photos[p][s.planes == p])
    assert np.array_equal(s.labels, s.planes)                  # three planes, three frames: frame p on plane p


def test_frames_follow_the_layered_model(photos):
    s = _stack(photos, radius=6.0)
    assert len(s.frames) == 3 and s.radii.shape == (3, 3)
    assert np.allclose(s.radii, 6.0 * np.abs(np.subtract.outer([0, 0.5, 1], [0, 0.5, 1])))
    band = occlusion.band_mask(s.planes, s.width)
    for k, f in enumerate(s.frames):
        away = (s.planes == k) & ~band
        assert away.any() and np.array_equal(f[away], s.sharp[away])   # in focus, and no other plane reaches it
        assert np.abs(f[s.planes != k].astype(float) - s.sharp[s.planes != k]).mean() > 1.0   # defocused elsewhere


def test_two_planes_make_three_frames_the_middle_one_between_them(photos):
    s = _stack(photos, planes=2)
    assert len(s.frames) == 3 and np.allclose(s.radii, [[0, 2, 4], [4, 2, 0]])
    assert set(np.unique(s.labels)) == {0, 2}


def test_near_blur_covers_the_background_in_the_far_focused_frame():
    """A white square in front of a black background: focused behind it, its blur spreads over the background
    up to the disk's radius; focused on it, the background beside it stays black (its own blur of black)."""
    white, black = np.full((40, 40), 255.0), np.zeros((40, 40))
    alpha = np.zeros((40, 40))
    alpha[10:30, 10:20] = 1.0                                  # right edge between columns 19 and 20
    far = occlusion.composite([white, black], [alpha, np.ones((40, 40))], [5.0, 0.0])
    near = occlusion.composite([white, black], [alpha, np.ones((40, 40))], [0.0, 5.0])
    assert np.all(far[20, 20:24] > 5) and np.all(np.diff(far[20, 19:26]) < 0)   # the halo fades with distance
    assert np.allclose(far[20, 25:], 0, atol=1e-9)                 # and ends at the disk's reach (5 + 0.71 px)
    assert np.allclose(near, alpha * 255.0, atol=1e-9)             # the sharp square, nothing spread


def test_far_focused_frame_shows_the_halo_in_a_stack(photos):
    s = _stack(photos, planes=2, radius=8.0)
    far = s.frames[-1].astype(float)
    halo = occlusion.halo_side_mask(s.planes, s.width)
    away = (s.planes == 1) & ~occlusion.band_mask(s.planes, s.width)
    assert halo.any() and np.array_equal(far[away], s.sharp[away])
    assert np.abs(far[halo] - s.sharp[halo]).mean() > 3.0


def test_generator_is_seeded(photos):
    a, b, c = _stack(photos), _stack(photos), _stack(photos, seed=1)
    for x, y in zip(a.frames + a.moved + (a.planes, a.sharp), b.frames + b.moved + (b.planes, b.sharp)):
        assert np.array_equal(x, y)
    assert all(np.array_equal(x, y) for x, y in zip(a.transforms, b.transforms))
    assert not np.array_equal(a.planes, c.planes)
    assert not np.array_equal(a.moved[0], a.frames[0]) and np.array_equal(a.moved[1], a.frames[1])  # hand-held


def test_scale_1_is_the_benchmark_as_it_was(photos):
    """sha256 of a stack as the generator made it before it had ``scale``: scale 1 (given or not) is unchanged."""
    for s in (_stack(photos), occlusion.make_occlusion_stack(photos, np.random.default_rng([0, 1]), radius=4.0,
                                                              name="t", scale=1)):
        arrays = s.frames + s.moved + (s.sharp, s.planes, s.labels, s.radii) + s.transforms
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
        assert digest == "d5db7e9d0a4acfa2c762d9b2cab8acd0d9c1ecb83310917f0ffec7884061d303"


def test_scale_2_is_the_same_scene_at_twice_the_pixels(photos):
    one = _stack(photos)
    two = occlusion.make_occlusion_stack(photos, np.random.default_rng([0, 1]), radius=4.0, name="t", scale=2)
    h, w = photos[0].shape[:2]
    assert two.sharp.shape == (2 * h, 2 * w, 3) and two.planes.shape == two.labels.shape == (2 * h, 2 * w)
    assert all(f.shape == two.sharp.shape for f in two.frames + two.moved)
    assert two.radius == 8.0 and np.array_equal(two.radii, 2 * one.radii) and two.width == 9
    assert np.mean(two.planes[::2, ::2] == one.planes) > 0.95          # the same shapes, sampled finer
    background = synthetic.enlarge(photos[-1], 2)
    assert np.array_equal(two.sharp[two.planes == 2], background[two.planes == 2])


def test_one_pass_exact_is_an_occlusion_fuser_and_scale_has_its_own_json():
    assert "one-pass exact" in occlusion.OCC_FUSERS
    args = occlusion_bench.parse_args(["--scale", "2", "--fusers", "one-pass;one-pass exact"])
    assert args.json.name == "occlusion_bench_scale2.json" and args.fusers == ["one-pass", "one-pass exact"]
    assert occlusion_bench.parse_args([]).json.name == "occlusion_bench.json"


def test_benchmark_stacks_cycle_planes_and_radii_and_do_not_depend_on_count(photos, tmp_path):
    paths = [write_image(tmp_path / f"p{k}.png", np.roll(photos[k % 3], 7 * k, axis=1)) for k in range(5)]
    few = list(occlusion.occlusion_stacks(paths, count=2, seed=3))
    more = list(occlusion.occlusion_stacks(paths, count=4, seed=3))
    assert [len(s.frames) for s in more] == [3, 3, 4, 3] and [s.radius for s in more] == list(occlusion.OCC_RADII)
    assert [s.radii.shape[0] for s in more] == [2, 3, 4, 2]
    for x, y in zip(few, more):
        assert x.name == y.name and all(np.array_equal(f, g) for f, g in zip(x.frames, y.frames))
    assert np.array_equal(more[1].sharp[more[1].planes == 2], synthetic.read_photo(paths[1])[more[1].planes == 2])


# ----------------------------------------------------------------------------------------------- the halo measure
def _edge_planes(w=60, h=20, c=30):
    planes = np.ones((h, w), np.int32)
    planes[:, :c] = 0                                          # near plane on the left, columns 0..c-1
    return planes


def test_band_has_the_width_asked_and_the_halo_side_is_the_far_one():
    planes = _edge_planes()
    for width in (1, 3, 7):
        band = occlusion.band_mask(planes, width)
        cols = np.flatnonzero(band.all(axis=0))
        assert np.array_equal(cols, np.arange(30 - width, 30 + width)) and not band[:, ~band.all(axis=0)].any()
        halo = occlusion.halo_side_mask(planes, width)
        assert np.array_equal(np.flatnonzero(halo.any(axis=0)), np.arange(30, 30 + width))
    assert not occlusion.band_mask(np.zeros((8, 8), np.int32), 3).any()


def test_measure_of_the_truth_is_inf_and_a_blurred_band_lowers_only_the_band(photos):
    s = _stack(photos)
    perfect = occlusion.halo_scores(s.sharp, s.sharp, s.planes, s.width)
    assert perfect["band_psnr"] == perfect["rest_psnr"] == perfect["psnr"] == perfect["halo_psnr"] == np.inf
    assert perfect["band_ssim"] == pytest.approx(1.0) and perfect["ssim"] == pytest.approx(1.0)
    band = occlusion.band_mask(s.planes, s.width)
    img = s.sharp.copy()
    img[band] = s.frames[-1][band]                             # the band from a defocused frame
    x = occlusion.halo_scores(img, s.sharp, s.planes, s.width)
    assert np.isfinite(x["band_psnr"]) and x["band_psnr"] < 40 and x["rest_psnr"] == np.inf
    assert x["band_ssim"] < 0.99 and x["rest_ssim"] > x["band_ssim"]


def test_oracle_and_given_labels(photos):
    s = _stack(photos, planes=2, radius=4.0)
    oracle = occlusion.oracle_selection(s.frames, s.sharp)
    assert oracle.shape == s.sharp.shape and oracle.dtype == np.uint8
    err = [np.abs(f.astype(int) - s.sharp).sum() for f in s.frames]
    assert np.abs(oracle.astype(int) - s.sharp).sum() <= min(err)
    # the one-pass path on a given label map: every pixel labelled frame 1 gives frame 1 itself
    fused = occlusion.fuse_with_labels(s.frames, np.ones(s.planes.shape, np.int32), threads=1)
    assert np.array_equal(fused, s.frames[1])
    edge = occlusion.edge_labels(s)
    halo = occlusion.halo_side_mask(s.planes, s.width)
    assert np.all(edge[halo] == 0) and np.array_equal(edge[s.planes == 0], s.labels[s.planes == 0])


def test_enfuse_decision_and_blend(photos):
    need(shutil.which("enfuse") is not None, "enfuse is not installed")   # .ci/run installs it
    s = _stack(photos, planes=2, radius=4.0)
    labels = occlusion.enfuse_labels(s.frames)
    assert labels.shape == s.planes.shape and set(np.unique(labels)) <= {0, 1, 2}
    for k in range(3):                                          # one frame everywhere: that frame
        assert np.array_equal(occlusion.enfuse_blend(s.frames, np.full(s.planes.shape, k, np.int32)), s.frames[k])
    assert np.array_equal(occlusion.select(s.frames, s.labels)[s.planes == 0], s.frames[0][s.planes == 0])


def test_diagnose_varies_the_guided_path(photos, monkeypatch):
    """The one-pass variants of the diagnosis are the paper's guided-filter path (edge_fix=False) with the option."""
    import pyfusion

    s = _stack(photos, planes=2, radius=4.0)
    monkeypatch.setattr(occlusion, "DIAGNOSES", {k: occlusion.DIAGNOSES[k] for k in
                                                 ("one-pass, gf_radius=0 (hard blend)", "true labels, one-pass blend")})
    got = occlusion.diagnose(s)
    want = pyfusion.fuse(list(s.frames), method="cnn", threads=1, edge_fix=False, gf_radius=0).fused
    assert got["one-pass, gf_radius=0 (hard blend)"] == occlusion.halo_scores(want, s.sharp, s.planes, s.width)
    fixed = pyfusion.fuse(list(s.frames), method="cnn", threads=1).fused
    assert not np.array_equal(want, fixed)


def test_focus_stack_not_built_is_a_runtime_error(photos, tmp_path):
    with pytest.raises(RuntimeError, match="not built"):
        occlusion.focus_stack_fuse(list(photos), exe=tmp_path / "nope")


def test_focus_stack_gets_its_options(photos, tmp_path):
    """A stand-in program that records its arguments and writes the second frame as the result."""
    exe = tmp_path / "fake-focus-stack"
    log = tmp_path / "argv"
    exe.write_text(f"#!/bin/sh\necho \"$@\" > {log}\nfor a in \"$@\"; do case $a in --output=*) "
                   f"out=${{a#--output=}};; esac; done\ncp \"$(echo \"$@\" | tr ' ' '\\n' | grep f01.png)\" \"$out\"\n")
    exe.chmod(0o755)
    frames = [np.ascontiguousarray(p[:64, :64]) for p in photos[:3]]
    fused = occlusion.focus_stack_fuse(frames, exe=exe, threads=None, options=("--no-contrast", "--no-whitebalance"))
    assert np.array_equal(fused, frames[1])
    argv = log.read_text().split()
    assert argv[:4] == ["--no-opencl", "--align-keep-size", "--no-contrast", "--no-whitebalance"]
    assert not any(a.startswith("--threads") for a in argv)


# ----------------------------------------------------------------------------------------------- the command
def test_command_end_to_end(photos, tmp_path):
    for k in range(3):
        write_image(tmp_path / f"p{k}.jpg", photos[k])
    doc, out = tmp_path / "stacks.md", tmp_path / "r.json"
    argv = ["--photos", str(tmp_path), "--count", "2", "--fusers", "one-pass;dwt", "--diagnose", "--json", str(out),
            "--doc", str(doc), "--no-progress"]
    assert occlusion_bench.main(argv) == 0
    rows = json.loads(out.read_text())["stacks"]
    assert len(rows) == 2 and set(rows[0]["results"]) == {"one-pass", "dwt"}
    assert set(rows[0]["diagnosis"]) == set(occlusion.DIAGNOSES)
    text = doc.read_text()
    assert "<!-- occlusion_bench:start -->" in text and "| one-pass |" in text and "| dwt |" in text
    with pytest.raises(SystemExit) as e:
        occlusion_bench.main(["--fusers", "nope"])
    assert e.value.code == 2


def test_rerun_with_more_fusers_runs_only_the_missing_ones(monkeypatch):
    from types import SimpleNamespace

    calls = []

    def fake(stack, fusers, **kw):
        calls.append((list(fusers), kw["diagnose"]))
        return {"results": {f: {"psnr": 1.0} for f in fusers}, "skipped": {}, "seconds": 1.0}

    monkeypatch.setattr(occlusion_bench, "score_stack", fake)
    args = SimpleNamespace(diagnose=True, threads=1, candidates=[])
    old = {"stack": "s", "results": {"dwt": {"psnr": 2.0}}, "skipped": {"enfuse": "absent"}, "diagnosis": {},
           "seconds": 2.0}
    row = occlusion_bench.complete(old, "s", ["dwt", "enfuse", "one-pass exact"], args)
    assert calls == [(["one-pass exact"], False)]
    assert row["results"]["dwt"]["psnr"] == 2.0 and "one-pass exact" in row["results"] and row["seconds"] == 3.0
    assert row["diagnosis"] == {} and row["skipped"] == {"enfuse": "absent"}
    assert occlusion_bench.complete(row, "s", ["dwt"], args) is row and len(calls) == 1
    assert set(occlusion_bench.complete(None, "s", ["dwt"], args)["results"]) == {"dwt"} and calls[-1][1] is True
