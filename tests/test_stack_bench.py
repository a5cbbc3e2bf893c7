"""The focus-stack benchmark: the synthetic stack generator (fusionlab.synthetic), the benchmark and figure helpers
(fusionlab.stackbench) and tools/stack_bench.py end to end on one tiny stack."""
import hashlib
import json
import shutil
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import need

from fusionlab import stackbench, synthetic
from pyfusion.align import map_points

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[100:196, 150:278])   # 96x128 RGB uint8, textured


def _stack(photo, seed=0, frames=5, step=1.5, **options):
    return synthetic.make_stack(photo, np.random.default_rng([seed, 1]), frames=frames, step=step, name="t",
                                **options)


# ------------------------------------------------------------------------------------------------- the generator
def test_generator_is_deterministic(photo):
    a, b, c = _stack(photo), _stack(photo), _stack(photo, seed=1)
    for x, y in zip(a.frames + a.moved + (a.layers, a.depth), b.frames + b.moved + (b.layers, b.depth)):
        assert np.array_equal(x, y)
    assert all(np.array_equal(s, t) for s, t in zip(a.transforms, b.transforms))
    assert not np.array_equal(a.layers, c.layers)


def test_scale_1_is_the_benchmark_as_it_was(photo):
    """sha256 of a stack as the generator made it before it had ``scale``: scale 1 (given or not) is unchanged."""
    for s in (_stack(photo), _stack(photo, scale=1)):
        arrays = s.frames + s.moved + (s.layers, s.depth) + s.transforms
        digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
        assert digest == "308c14a446398e2aa1274e8c140f4898d89ac462dd0447df295ec066c4cb7f6e"


def _centre_shift(transform, shape):
    """Where the moved frame's centre lands in the reference, minus the centre: the shake's shift."""
    h, w = shape
    g = np.linalg.inv(np.vstack([transform, [0.0, 0.0, 1.0]]))[:2]
    centre = np.array([(w - 1) / 2, (h - 1) / 2])
    return g[:, :2] @ centre + g[:, 2] - centre


def test_scale_2_is_the_same_scene_at_twice_the_pixels(photo):
    one, two = _stack(photo, frames=4, step=2.0), _stack(photo, frames=4, step=2.0, scale=2)
    h, w = photo.shape[:2]
    assert two.sharp.shape == (2 * h, 2 * w, 3) and two.layers.shape == two.depth.shape == (2 * h, 2 * w)
    assert all(f.shape == two.sharp.shape for f in two.frames + two.moved) and two.step == 4.0
    assert np.array_equal(two.sharp, cv2.resize(photo, (2 * w, 2 * h), interpolation=cv2.INTER_CUBIC))
    assert np.mean(two.layers[::2, ::2] == one.layers) > 0.95          # the same layers, sampled finer
    assert np.abs(cv2.resize(two.depth, (w, h), interpolation=cv2.INTER_AREA) - one.depth).max() < 0.01
    for k, f in enumerate(two.frames):
        assert np.array_equal(f[two.layers == k], two.sharp[two.layers == k])
    for a, b in zip(one.transforms, two.transforms):                 # same rotation and zoom, twice the shift
        assert np.allclose(a[:, :2], b[:, :2])
        assert np.allclose(_centre_shift(b, (2 * h, 2 * w)), 2 * _centre_shift(a, (h, w)))


def test_one_pass_exact_is_a_fuser_and_equals_one_pass_below_the_working_size(photo, winograd):
    assert stackbench.FUSERS["one-pass exact"] == ("cnn", {"exact": True})
    s = _stack(photo)
    fast, exact = (stackbench.fuse_frames(list(s.frames), f)["fused"] for f in ("one-pass", "one-pass exact"))
    assert np.array_equal(fast, exact)


def test_frames_are_sharp_on_their_layer_and_blurrier_with_depth_distance(photo):
    s = _stack(photo, frames=4, step=2.0)
    assert s.layers.dtype == np.int32 and set(np.unique(s.layers)) == set(range(4))
    assert s.depth.min() == 0.0 and s.depth.max() == 1.0
    for k, f in enumerate(s.frames):
        assert f.dtype == np.uint8 and f.shape == photo.shape
        on = s.layers == k
        assert np.array_equal(f[on], photo[on])          # exactly the photo on its own layer
        errors = [np.abs(f[s.layers == j].astype(float) - photo[s.layers == j]).mean() for j in range(4) if j != k]
        dist = [abs(j - k) for j in range(4) if j != k]
        assert min(errors) > 1.0                          # defocused elsewhere
        # the frame equals the photo blurred by a disk of radius step * distance, layer by layer
        for j, d in zip([j for j in range(4) if j != k], dist):
            blurred = np.clip(np.round(synthetic.defocus(photo.astype(np.float64), 2.0 * d)), 0, 255)
            assert np.array_equal(f[s.layers == j], blurred[s.layers == j].astype(np.uint8))


def test_layer_shares_follow_the_drawn_shares():
    for seed in range(5):
        depth, labels = synthetic.depth_layers((60, 80), np.random.default_rng(seed), layers=6)
        shares = np.bincount(labels.ravel(), minlength=6) / labels.size
        assert shares.min() > 1 / 18 - 0.01 and shares.max() < 3 / 6 + 0.01
        # layers are depth bands: layer k's depths all below layer k + 1's
        assert all(depth[labels == k].max() <= depth[labels == k + 1].min() for k in range(5))


def test_shake_moves_every_frame_but_the_reference_by_its_recorded_transform():
    h, w = 80, 100
    yy, xx = np.mgrid[0:h, 0:w]
    spot = (20.0, 30.0)   # (x, y) of a Gaussian spot in every registered frame
    frame = np.exp(-((xx - spot[0]) ** 2 + (yy - spot[1]) ** 2) / (2 * 2.0 ** 2)) * 200
    frames = [np.round(frame).astype(np.uint8)] * 5
    moved, transforms = synthetic.shake(frames, np.random.default_rng(3))
    assert np.array_equal(moved[2], frames[2]) and np.array_equal(transforms[2], np.eye(2, 3))
    scales = []
    for m, t in zip(moved, transforms):
        v = m.astype(np.float64)
        centroid = np.array([(v * xx).sum(), (v * yy).sum()]) / v.sum()
        assert np.abs(centroid - map_points(t, [spot])[0]).max() < 0.1
        scales.append(np.sqrt(abs(np.linalg.det(t[:, :2]))))
    shift = [np.abs(map_points(t, [[(w - 1) / 2, (h - 1) / 2]])[0] - [(w - 1) / 2, (h - 1) / 2]).max()
             for t in transforms]
    assert max(shift) <= synthetic.SHAKE_SHIFT * np.sqrt(2) / (1 - synthetic.SHAKE_BREATHING[1]) + 1e-9
    zoom = abs(1 / scales[0] - 1)          # frame 0 is the farthest from the reference (index 2)
    assert synthetic.SHAKE_BREATHING[0] - 1e-9 <= zoom <= synthetic.SHAKE_BREATHING[1] + 1e-9
    assert np.all(np.diff(1 / np.array(scales)) * np.sign(1 / scales[-1] - 1) >= 0)   # monotone along the stack


def test_make_pair_is_unchanged_by_the_shared_helpers(photo):
    """make_pair and random_mask as they were before random_field/defocus were taken out of them."""
    rng_new, rng_old = np.random.default_rng(7), np.random.default_rng(7)
    p = synthetic.make_pair(photo, rng_new, radius=3, softness=2.0)
    h, w = photo.shape[:2]
    field = cv2.GaussianBlur(rng_old.standard_normal((h, w)), (0, 0), max(h, w) / 8, borderType=cv2.BORDER_REFLECT)
    field += np.linspace(-1, 1, w)[None, :] * field.std() * rng_old.uniform(-2, 2)
    m = (field > np.quantile(field, rng_old.uniform(0.3, 0.7))).astype(np.float64)
    m = cv2.GaussianBlur(m, (0, 0), 2.0, borderType=cv2.BORDER_REFLECT)
    s = photo.astype(np.float64)
    blurred = cv2.filter2D(s, -1, synthetic.disk_kernel(3), borderType=cv2.BORDER_REFLECT)
    a = np.clip(np.round(m[..., None] * s + (1 - m[..., None]) * blurred), 0, 255).astype(np.uint8)
    assert np.array_equal(p.mask, m) and np.array_equal(p.a, a)


def _photos(tmp_path, photo, n=2):
    folder = tmp_path / "photos"
    folder.mkdir()
    for k in range(n):
        cv2.imwrite(str(folder / f"{k}.jpg"), cv2.cvtColor(np.roll(photo, 17 * k, axis=1), cv2.COLOR_RGB2BGR))
    return folder


def test_benchmark_stacks_cycle_and_stack_k_does_not_depend_on_the_count(tmp_path, photo):
    folder = _photos(tmp_path, photo)
    photos = sorted(folder.glob("*.jpg"))
    three = list(synthetic.benchmark_stacks(photos, count=3, seed=4))
    two = list(synthetic.benchmark_stacks(photos, count=2, seed=4))
    assert [len(s.frames) for s in three] == list(synthetic.STACK_FRAMES[:3])
    assert [s.step for s in three] == list(synthetic.STACK_STEPS[:3])
    assert three[0].name == "00_0" and three[2].name == "02_0"
    assert all(np.array_equal(x, y) for x, y in zip(three[1].moved, two[1].moved))
    small = next(synthetic.benchmark_stacks(photos, count=1, crop=40))
    assert small.sharp.shape == (40, 40, 3)


def test_benchmark_stacks_on_bsds(shared_data):
    photos = sorted((shared_data / "train/bsds500/val").glob("*.jpg"))
    assert photos
    s = next(synthetic.benchmark_stacks(photos, count=1))
    assert s.sharp.shape[:2] in ((321, 481), (481, 321)) and len(s.frames) == synthetic.STACK_FRAMES[0]
    for k, f in enumerate(s.frames):
        assert np.array_equal(f[s.layers == k], s.sharp[s.layers == k])


# -------------------------------------------------------------------------------------------- the helpers
def test_pick_windows_takes_the_largest_sums_without_overlap():
    e = np.zeros((100, 120))
    e[10:30, 80:100] = 5.0
    e[60:80, 10:30] = 3.0
    got = stackbench.pick_windows(e, size=20, count=2)
    assert got == [(80, 10, 20, 20), (10, 60, 20, 20)]
    again = stackbench.pick_windows(e, size=20, count=1, taken=got)
    assert all(not (x < a + 20 and a < x + 20 and y < b + 20 and b < y + 20) for x, y, _, _ in again
               for a, b, _, _ in got)


def test_encode_png_falls_back_to_a_palette_under_the_limit():
    img = np.random.default_rng(0).integers(0, 256, (120, 160, 3), dtype=np.uint8)
    data, how = stackbench.encode_png(img, max_bytes=40_000)
    assert len(data) <= 40_000 and "palette" in how
    back = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert back.shape == img.shape
    data, how = stackbench.encode_png(np.zeros((50, 50, 3), np.uint8), max_bytes=40_000)
    assert how == "RGB"


def test_agreement_registers_a_shifted_copy(photo):
    from skimage import data

    big = data.astronaut()
    ours = np.ascontiguousarray(big[100:300, 100:300])
    shift = np.array([[1.0, 0, 2.0], [0, 1.0, -3.0]])      # other(x) = big(x + (2, -3)) around the same window
    other = cv2.warpAffine(big, shift, (512, 512), flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP)
    got = stackbench.agreement(ours, other, offset=(100, 100))
    assert np.allclose(got["transform"], [[1, 0, -2], [0, 1, 3]], atol=0.05)
    assert got["psnr"] > 35 and got["ours"].shape == got["other"].shape


def test_comparison_figure_shape(photo):
    depth = np.zeros(photo.shape, np.uint8)
    fig = stackbench.comparison_figure([photo] * 3, depth, [(0, 0, 40, 40), (50, 40, 40, 40)],
                                       captions=["a", "b"], names=["x", "y", "z"], thumb_width=100)
    assert fig.dtype == np.uint8 and fig.ndim == 3 and fig.shape[1] >= 3 * 40 + 100
    assert fig.shape[0] >= 2 * 40


# -------------------------------------------------------------------------------------------- end to end
def test_stack_bench_tool_end_to_end_and_resumes(tmp_path, photo, winograd, monkeypatch):
    from fusionlab.commands import stack_bench

    folder = _photos(tmp_path, photo, n=1)
    out, doc = tmp_path / "bench.json", tmp_path / "stacks.md"
    argv = ["--photos", str(folder), "--count", "1", "--crop", "96", "--fusers", "one-pass;series;dwt;enfuse",
            "--json", str(out), "--doc", str(doc), "--no-progress"]
    assert stack_bench.main(argv) == 0
    rows = json.loads(out.read_text())["stacks"]
    assert len(rows) == 1 and set(rows[0]["results"]) >= {"one-pass", "series", "dwt"}
    r = rows[0]["results"]["one-pass"]
    assert set(r) == set(stackbench.CONDITIONS)
    assert r["registered"]["psnr"] > max(rows[0]["frame_psnr"])       # fusion beats every frame
    assert 0 <= r["registered"]["depth_exact"] <= r["registered"]["depth_within_1"] <= 1
    assert rows[0]["align"]["corner_error_px"] < 1.0
    text = doc.read_text()
    assert "<!-- stack_bench:start -->" in text and "| one-pass |" in text and "| series |" in text
    assert json.loads(out.read_text())["config"]["align_interpolation"] == "cubic"
    if shutil.which("enfuse"):
        assert "| enfuse |" in text and "enfuse" in rows[0]["results"]
    else:
        assert "enfuse: not run" in text and "enfuse" not in rows[0]["results"]

    def fail(*a, **k):
        raise AssertionError("a finished stack was computed again")

    monkeypatch.setattr(stackbench, "score_stack", fail)
    assert stack_bench.main(argv) == 0                                  # resumes: nothing recomputed
    assert json.loads(out.read_text())["stacks"] == rows


def test_stack_bench_at_scale_2_writes_its_own_json_and_block(tmp_path, photo, winograd):
    from fusionlab.commands import stack_bench

    assert stack_bench.parse_args([]).json.name == "stack_bench.json"
    assert stack_bench.parse_args(["--scale", "2"]).json.name == "stack_bench_scale2.json"
    folder = _photos(tmp_path, photo, n=1)
    out, doc = tmp_path / "bench.json", tmp_path / "stacks.md"
    argv = ["--photos", str(folder), "--count", "1", "--crop", "48", "--scale", "2", "--fusers",
            "one-pass;one-pass exact", "--json", str(out), "--doc", str(doc), "--no-progress"]
    assert stack_bench.main(argv) == 0
    run = json.loads(out.read_text())
    assert run["config"]["scale"] == 2 and run["stacks"][0]["shape"] == [96, 96, 3]
    text = doc.read_text()
    assert "<!-- stack_bench_scale2:start -->" in text and "<!-- stack_bench:start -->" not in text
    assert "--scale 2" in text and "one-pass vs one-pass exact, moved+align" in text
    with pytest.raises(SystemExit) as e:
        stack_bench.parse_args(["--scale", "0"])
    assert e.value.code == 2


def test_enfuse_fuses_registered_and_hand_held_stacks(photo):
    need(shutil.which("enfuse"), "the enfuse program (Enblend-Enfuse) is not installed (apt install enfuse)")
    s = _stack(photo)
    f = stackbench.fuse_frames(list(s.frames), "enfuse")
    assert f["fused"].shape == photo.shape and f["fused"].dtype == np.uint8 and f["crop"] is None
    assert synthetic.scores(f["fused"], s.sharp)["psnr"] > max(synthetic.scores(x, s.sharp)["psnr"] for x in s.frames)
    g = stackbench.fuse_frames(list(s.moved), "enfuse", align={"interpolation": "linear"})
    x, y, w, h = g["crop"]
    assert g["fused"].shape == (h, w, 3) and g["cpu_seconds"] >= 0
    gray = stackbench._enfuse([cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.uint16) * 257 for x in s.frames])
    assert gray.shape == photo.shape[:2] and gray.dtype == np.uint16


def test_measure_command_reports_time_and_peak_memory():
    touch = "x = bytearray(80_000_000); x[::4096] = b'1' * len(x[::4096])"
    m = stackbench.measure_command([sys.executable, "-c", touch])
    assert m["returncode"] == 0 and m["seconds"] > 0 and m["cpu_seconds"] >= 0
    assert m["peak_bytes"] >= 80_000_000


def test_rerun_with_more_fusers_runs_only_the_missing_ones(monkeypatch):
    from types import SimpleNamespace

    from fusionlab import stackbench
    from fusionlab.commands import stack_bench

    calls = []

    def fake(stack, fusers, **kw):
        calls.append(list(fusers))
        return {"stack": stack, "results": {f: {"registered": {"psnr": 1.0}} for f in fusers}, "skipped": {}}

    monkeypatch.setattr(stackbench, "score_stack", fake)
    args = SimpleNamespace(align_interp="cubic", threads=1)
    old = {"stack": "s", "results": {"dwt": {"registered": {"psnr": 2.0}}}, "skipped": {"enfuse": "absent"},
           "true_warp": {"fuser": "dwt"}}
    row = stack_bench.complete(old, "s", ["dwt", "enfuse", "dtcwt"], args)
    assert calls == [["dtcwt"]]
    assert row["results"]["dwt"]["registered"]["psnr"] == 2.0 and "dtcwt" in row["results"]
    assert row["true_warp"] == {"fuser": "dwt"} and row["skipped"] == {"enfuse": "absent"}
    assert stack_bench.complete(row, "s", ["dwt", "dtcwt"], args) is row and len(calls) == 1
    assert stack_bench.complete(None, "s", ["dwt"], args)["results"].keys() == {"dwt"}


def test_completed_row_gets_the_true_warp_it_lacked_and_the_summary_keeps_the_alignment_line(monkeypatch):
    from types import SimpleNamespace

    from fusionlab import stackbench
    from fusionlab.commands import stack_bench

    def scores(psnr):
        return {"psnr": psnr, "ssim": 0.9, "cpu_seconds": 1.0, "seconds": 1.0}

    def fake(stack, fusers, **kw):
        return {"stack": stack, "skipped": {}, "true_warp": {"fuser": fusers[0], "bilinear": {"psnr": 30.0},
                                                             "bicubic": {"psnr": 31.0}},
                "results": {f: {"registered": {**scores(40.0), "crop_psnr": 40.0, "crop_ssim": 0.9},
                                "moved+align": scores(30.5),
                                "moved": scores(20.0)} for f in fusers}}

    monkeypatch.setattr(stackbench, "score_stack", fake)
    args = SimpleNamespace(align_interp="cubic", threads=1)
    base = {"frames": 3, "step": 1, "frame_psnr": [25.0], "seconds": 1.0, "cpu_seconds": 1.0,
            "align": {"corner_error_px": 0.25}}
    old = {**base, "stack": "s", "skipped": {}, "results": fake("s", ["one-pass"])["results"]}   # no true_warp
    row = stack_bench.complete(old, "s", ["one-pass", "dwt"], args)
    assert row["true_warp"]["fuser"] == "dwt"
    text = stackbench.summary([{**old, "results": row["results"]}])       # a row without its true warp
    assert "recovered transforms off by 0.250 px" in text and "true transforms" not in text
    text = stackbench.summary([{**base, **row}])
    assert "recovered transforms off by 0.250 px" in text
    assert "warped back by their true transforms, bicubic: 31.00" in text


def test_mean_ratio_measures_exposure_not_defocus():
    rng = np.random.default_rng(3)
    ref = (rng.random((80, 90, 3)) * 200).astype(np.uint8)
    blurred = cv2.GaussianBlur(ref.astype(np.float64), (0, 0), 4, borderType=cv2.BORDER_REFLECT)
    frame = np.clip(np.round(blurred * np.array([0.9, 1.0, 1.1])), 0, 255).astype(np.uint8)
    ref[:5], frame[-5:, :, 2] = 255, 255                     # saturated pixels (in either) are left out
    r = stackbench.mean_ratio(ref, frame)
    assert r == pytest.approx([1 / 0.9, 1.0, 1 / 1.1], rel=0.02)
    gray = ref[..., 1]
    assert stackbench.mean_ratio(gray, gray) == (1.0,)


def test_gray_spread_scales_with_contrast():
    rng = np.random.default_rng(4)
    img = rng.random((60, 70))
    low = 0.25 + 0.5 * (img - 0.5)
    assert stackbench.gray_spread(low) == pytest.approx(0.5 * stackbench.gray_spread(img))
    assert stackbench.sharpness(low) == pytest.approx(0.25 * stackbench.sharpness(img))
    w = (10, 5, 20, 30)
    assert stackbench.gray_spread(img, w) == pytest.approx(float(np.std(img[5:35, 10:30])))
