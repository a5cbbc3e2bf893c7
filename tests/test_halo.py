"""pyfusion.refine_stack on tiny synthetic cases: the boundary band of a label map, its re-decision by the local
focus measure, the one-pass guided blend (the stack path's own result) and the pyramid blend."""
import json

import cv2
import numpy as np
import pytest
from test_stack import fake_frame_fn, synthetic_stack

import pyfusion
from pyfusion import refine_stack


def _two_frames(h=40, w=64, edge=32, seed=0, dtype=np.uint8):
    """Texture, and two frames: frame 0 sharp left of column ``edge`` and blurred right of it, frame 1 the reverse."""
    rng = np.random.default_rng(seed)
    sharp = rng.random((h, w))
    blur = cv2.GaussianBlur(sharp, (0, 0), 2.0)
    left = (np.arange(w) < edge)[None, :]
    scale = np.iinfo(dtype).max
    to = lambda x: np.round(x * scale).astype(dtype)          # noqa: E731
    return to(sharp), [to(np.where(left, sharp, blur)), to(np.where(left, blur, sharp))]


def test_label_band_is_width_pixels_each_side_of_every_boundary():
    lab = np.zeros((12, 20), np.int32)
    lab[:, 10:] = 1
    lab[:3, 15:] = 2                                                 # a third label in the corner
    band = refine_stack.label_band(lab, 2)
    assert band[6:, 8:12].all() and not band[6:, :8].any() and not band[6:, 12:].any()
    assert band[1:5, 13:].all()                                      # around the 2 | 1 boundary (rows 0-2 | 3-)
    assert not band[0, 18:].any() and not band[5:, 13:].any()
    assert not refine_stack.label_band(lab, 0).any()
    assert not refine_stack.label_band(np.zeros((5, 5), np.int32), 3).any()


def test_redecide_band_moves_a_misplaced_boundary_to_the_sharp_frame_edge():
    _, frames = _two_frames(edge=32)
    depth = np.zeros((40, 64), np.int32)
    depth[:, 38:] = 1                                                # the patch decision: 6 px into frame 1's side
    out = refine_stack.redecide_band(frames, depth, width=8, focus_radius=1)
    assert out.dtype == np.int32 and not np.shares_memory(out, depth)
    assert (out[:, 33:38] == 1).mean() > 0.95                        # the wrong strip goes to frame 1
    assert (out[:, 24:31] == 0).mean() > 0.95                        # frame 0's side stays
    far = ~refine_stack.label_band(depth, 8)
    assert np.array_equal(out[far], depth[far])                      # outside the band nothing changes
    assert np.array_equal(refine_stack.redecide_band(frames, depth, width=0, focus_radius=1), depth)


def test_redecide_band_keeps_the_label_where_no_frame_is_sharper():
    flat = [np.full((20, 30), 100, np.uint8)] * 3
    depth = np.zeros((20, 30), np.int32)
    depth[:, 15:] = 2
    assert np.array_equal(refine_stack.redecide_band(flat, depth, width=5, focus_radius=2), depth)


@pytest.mark.parametrize("colour", [False, True])
def test_guided_blend_is_the_one_pass_blend(colour):
    _, frames, _ = synthetic_stack(n=3, h=64, w=96, colour=colour)
    r = pyfusion.fuse(frames, frame_fn=fake_frame_fn, edge_fix=False)
    assert np.array_equal(refine_stack.guided_blend(frames, r.maps["depth_map"]), r.fused)


def test_blends_of_one_label_give_that_frame_in_8_and_16_bits():
    for dtype in (np.uint8, np.uint16):
        _, frames = _two_frames(dtype=dtype)
        frames = [np.dstack([f, f[::-1], f[:, ::-1]]) for f in frames]  # colour, every 16-bit low byte used
        ones = np.ones(frames[0].shape[:2], np.int32)
        for levels in (0, 3, None):
            out = refine_stack.pyramid_blend(frames, ones, levels=levels)
            assert out.dtype == dtype and np.array_equal(out, frames[1])
        assert np.array_equal(refine_stack.guided_blend(frames, ones), frames[1])


def test_pyramid_blend_switches_detail_at_the_label_edge_and_shading_smoothly():
    sharp, frames = _two_frames(edge=32)
    lab = np.zeros(sharp.shape, np.int32)
    lab[:, 32:] = 1
    hard = refine_stack.pyramid_blend(frames, lab, levels=0)
    assert np.array_equal(hard, np.where(lab == 0, frames[0], frames[1]))
    out = refine_stack.pyramid_blend(frames, lab)
    err = np.abs(out.astype(float) - sharp)
    assert err[:, :24].mean() < 2 and err[:, 40:].mean() < 2         # each side its sharp frame, away from the edge
    assert err.mean() < np.abs(frames[0].astype(float) - sharp).mean() / 3
    a = np.full((16, 128), 40, np.uint8)
    b = np.full((16, 128), 200, np.uint8)
    lab = np.broadcast_to((np.arange(128) >= 64).astype(np.int32), (16, 128))
    row = refine_stack.pyramid_blend([a, b], lab, levels=3)[8].astype(int)
    assert np.all(row[:32] == 40) and np.all(row[96:] == 200)        # the transition's reach: a few 2^levels px
    assert np.all(np.diff(row) >= 0) and 40 < row[63] < 200 and 40 < row[64] < 200   # a ramp, no overshoot


def test_bad_label_maps_are_refused():
    _, frames = _two_frames()
    with pytest.raises(ValueError, match="integer"):
        refine_stack.pyramid_blend(frames, np.zeros((40, 64)))
    with pytest.raises(ValueError, match="shape"):
        refine_stack.redecide_band(frames, np.eye(40, 60, dtype=np.int32), width=2, focus_radius=1)
    with pytest.raises(ValueError, match=">= 0"):
        refine_stack.pyramid_blend(frames, np.zeros((40, 64), np.int32), levels=-1)


# ------------------------------------------------------------------------ the lab: candidates and the selection rule
def test_selection_rule_takes_the_best_band_within_the_whole_image_tolerance():
    from fusionlab import occlusion

    d = occlusion.BASE_CANDIDATE
    band = {d: 28.0, "a": 30.0, "b": 29.5, "c": 29.0}
    whole = {d: 38.0, "a": 37.8, "b": 37.95, "c": 39.0}
    assert occlusion.choose_candidate(band, whole) == "b"           # a loses 0.2 dB on the whole image
    assert occlusion.choose_candidate(band, whole, {d: 35.0, "a": 35.0, "b": 34.8, "c": 35.0}) == "c"
    assert occlusion.choose_candidate(band, whole, {d: 35.0, "a": 30.0, "b": 30.0, "c": 30.0}) == d


def test_candidates_command_on_tiny_stacks(tmp_path):
    from skimage import data

    from fusionlab import occlusion
    from fusionlab.commands import occlusion_bench
    from pyfusion.io import write_image

    for k, im in enumerate((data.astronaut()[100:], data.coffee(), data.chelsea())):
        write_image(tmp_path / f"p{k}.jpg", np.ascontiguousarray(im[:64, :80]))
    out = tmp_path / "r.json"
    pick = f"band {refine_stack.BAND} r={refine_stack.FOCUS_RADIUS} + pyramid {refine_stack.LEVELS}"
    argv = ["--photos", str(tmp_path), "--count", "2", "--fusers", "one-pass", "--candidates", pick, "--layered", "1",
            "--json", str(out), "--no-progress"]
    assert occlusion_bench.main(argv) == 0
    got = json.loads(out.read_text())
    for row in got["stacks"]:              # the one-pass fuser (the default, edge_fix) is the fix's candidate
        assert list(row["candidates"]) == [occlusion.BASE_CANDIDATE, pick]
        one_pass = {k: v for k, v in row["results"]["one-pass"].items() if k != "seconds"}
        assert one_pass == row["candidates"][pick] != row["candidates"][occlusion.BASE_CANDIDATE]
    assert len(got["layered"]) == 1 and set(got["layered"][0]["candidates"][pick]) == {"psnr", "ssim"}
    assert occlusion_bench.main(argv) == 0                           # a rerun resumes both kinds of stacks
    assert json.loads(out.read_text()) == got
    for bad in (["--candidates", "nope"], ["--layered", "2"]):
        with pytest.raises(SystemExit) as e:
            occlusion_bench.main(bad)
        assert e.value.code == 2


def test_edge_fix_is_the_band_re_decision_then_the_pyramid_blend():
    _, frames = _two_frames(edge=32)
    depth = np.zeros((40, 64), np.int32)
    depth[:, 38:] = 1
    fused, labels = refine_stack.edge_fix(frames, depth)
    assert np.array_equal(labels, refine_stack.redecide_band(frames, depth, width=refine_stack.BAND,
                                                             focus_radius=refine_stack.FOCUS_RADIUS))
    assert np.array_equal(fused, refine_stack.pyramid_blend(frames, labels, levels=refine_stack.LEVELS))
    from fusionlab import occlusion

    name = f"band {refine_stack.BAND} r={refine_stack.FOCUS_RADIUS} + pyramid {refine_stack.LEVELS}"
    assert np.array_equal(occlusion.candidates_fused(frames, depth, [name])[name], fused)   # the chosen candidate


def test_progress_bars_name_each_pass_and_change_nothing(capsys):
    _, frames = _two_frames(edge=32)
    depth = np.zeros((40, 64), np.int32)
    depth[:, 38:] = 1
    quiet = refine_stack.edge_fix(frames, depth)
    loud = refine_stack.edge_fix(frames, depth, progress=True)
    assert all(np.array_equal(a, b) for a, b in zip(quiet, loud))
    assert np.array_equal(refine_stack.guided_blend(frames, depth, progress=True),
                          refine_stack.guided_blend(frames, depth))
    err = capsys.readouterr().err
    for stage in ("edge band", "pyramid blend", "guide", "weights and blend"):
        assert f"stack: {stage}" in err and "2/2" in err
