"""Alignment of hand-held focus stacks (pyfusion.align): ECC on a pyramid, crop to the common region, failures."""
import cv2
import numpy as np
import pytest

import pyfusion
from pyfusion.align import align, covered_rectangle, map_points
from pyfusion.io import FusionInputError
from fusionlab.synthetic import make_pair, scores

H, W = 360, 300                     # frame size, cut from the middle of a 512x512 photo
OFFSET = np.array([100.0, 76.0])    # frame pixel (0, 0) of the reference = photo pixel OFFSET
#: (dx, dy, rotation in degrees, scale) per frame: a few px of shake, < 1 degree, 1-3% focus breathing.
MOTIONS = [(2.3, -1.7, 0.4, 1.02), (-3.1, 0.8, -0.6, 0.985), (0.0, 0.0, 0.0, 1.0), (1.4, 2.6, 0.8, 1.03),
           (-0.6, -2.2, -0.3, 1.01)]


@pytest.fixture(scope="module")
def photo():
    from skimage import data

    return data.astronaut()   # 512x512 RGB uint8, textured almost everywhere


def _frame_to_photo(dx, dy, rot_deg, scale):
    """2x3 map: frame pixel -> photo pixel (rotation and scale about the frame centre, then a shift)."""
    ctr = np.array([(W - 1) / 2, (H - 1) / 2])
    a = np.deg2rad(rot_deg)
    r = scale * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    t = ctr + OFFSET + np.array([dx, dy]) - r @ ctr
    return np.hstack([r, t[:, None]])


def synthetic_stack(photo, motions=MOTIONS, blurred=(0, 3), half_blurred=(4,)):
    """Frames of the photo under known motions (the middle one still), some blurred; and the true transforms
    (reference pixel -> frame pixel)."""
    frames, truths = [], []
    to_ref = np.array([[1, 0, OFFSET[0]], [0, 1, OFFSET[1]], [0, 0, 1]])
    for k, m in enumerate(motions):
        g = _frame_to_photo(*m)
        f = cv2.warpAffine(photo, g, (W, H), flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP)
        if k in blurred:
            f = cv2.GaussianBlur(f, (0, 0), 2.0)
        if k in half_blurred:
            f[:, : W // 2] = cv2.GaussianBlur(f, (0, 0), 3.0)[:, : W // 2]
        frames.append(f)
        truths.append((np.linalg.inv(np.vstack([g, [0, 0, 1]])) @ to_ref)[:2])
    return frames, truths


CHECK_POINTS = np.array([[0, 0], [W - 1, 0], [0, H - 1], [W - 1, H - 1], [(W - 1) / 2, (H - 1) / 2]])


@pytest.mark.parametrize("motion", ["affine", "homography"])
def test_recovered_transforms_within_0_2_px(photo, motion):
    frames, truths = synthetic_stack(photo)
    aligned, rep = align(frames, motion=motion)
    assert rep.reference == "image 3" and rep.names == [f"image {k + 1}" for k in range(5)] and not rep.skipped
    for k, name in enumerate(rep.names):
        t = rep.transforms[name]
        assert t.shape == ((2, 3) if motion == "affine" else (3, 3))
        err = np.abs(map_points(t, CHECK_POINTS) - map_points(truths[k], CHECK_POINTS)).max()
        assert err < 0.2, f"{name}: {err:.3f} px"
        assert rep.correlations[name] > 0.9
    x, y, cw, ch = rep.crop
    assert all(a.shape == (ch, cw, 3) and a.dtype == np.uint8 for a in aligned)
    # a 3% zoom and 3 px shifts cost at most ~3% + 4 px per side
    assert 0.9 * W < cw < W and 0.9 * H < ch < H
    np.testing.assert_array_equal(aligned[2], frames[2][y:y + ch, x:x + cw])
    # the crop is covered by every frame: the aligned sharp frame matches the reference there
    err = np.abs(aligned[1].astype(float) - aligned[2].astype(float)).mean()
    assert err < 3.0


def test_fill_keeps_the_size_and_reports_the_filled_share(photo):
    frames, _ = synthetic_stack(photo)
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY).astype(np.float32) / 255 for f in frames]
    aligned, rep = align(gray, fill=True, reference=2)
    assert all(a.shape == (H, W) and a.dtype == np.float32 for a in aligned)
    assert 0 < rep.filled < 0.15 and rep.crop[2] < W


def test_uint16_and_single_channel_keep_dtype_and_shape(photo):
    frames, _ = synthetic_stack(photo, motions=MOTIONS[1:3], blurred=(), half_blurred=())
    frames = [(cv2.cvtColor(f, cv2.COLOR_RGB2GRAY)[:, :, None].astype(np.uint16) * 257) for f in frames]
    aligned, rep = align(frames)
    assert all(a.dtype == np.uint16 and a.ndim == 3 and a.shape[2] == 1 for a in aligned)


def test_failure_is_reported_by_name(photo):
    frames, _ = synthetic_stack(photo)
    noise = np.random.default_rng(0).integers(0, 256, frames[0].shape, dtype=np.uint8)
    frames[3] = noise
    names = [f"f{k}.png" for k in range(5)]
    with pytest.raises(FusionInputError, match=r"^f3\.png: cannot align to f2\.png") as e:
        align(frames, names=names)
    assert "\n" not in str(e.value)
    aligned, rep = align(frames, names=names, on_failure="skip")
    assert list(rep.skipped) == ["f3.png"] and rep.names == ["f0.png", "f1.png", "f2.png", "f4.png"]
    assert len(aligned) == 4
    # through fuse(): the same message, or the frame left out and reported in the result
    with pytest.raises(FusionInputError, match="image 4: cannot align to image 3"):
        pyfusion.fuse(frames, method="dwt", align=True)
    with pytest.raises(FusionInputError, match=r"^f3\.png: cannot align to f2\.png"):
        pyfusion.fuse(frames, method="dwt", align={"names": names})
    r = pyfusion.fuse(frames, method="dwt", align={"on_failure": "skip"})
    assert list(r.alignment.skipped) == ["image 4"] and r.fused.shape == aligned[0].shape
    assert "align" in r.timings


def test_nothing_left_to_fuse_is_an_error(photo):
    frames, _ = synthetic_stack(photo, motions=MOTIONS[1:3], blurred=(), half_blurred=())
    frames[0] = np.random.default_rng(1).integers(0, 256, frames[0].shape, dtype=np.uint8)
    with pytest.raises(FusionInputError, match="fewer than two frames"):
        align(frames, on_failure="skip")


@pytest.mark.parametrize("motion, tol", [("translation", 0.05), ("euclidean", 0.1), ("affine", 0.15)])
def test_shifted_pair_of_different_focus(photo, motion, tol):
    """Two sources sharp in different regions, one shifted by (3, -2) px. The focus difference biases the
    extra parameters of richer models a little (affine: ~0.04 px here, up to 0.3 px at the corners for a
    6-px defocus); translation, when it suffices, is the most precise."""
    sharp = photo[128:384, 128:384]
    pair = make_pair(sharp, np.random.default_rng(3), radius=3, softness=2.0)
    a_moved = cv2.warpAffine(pair.a, np.array([[1.0, 0, 3], [0, 1, -2]]), (256, 256), flags=cv2.INTER_NEAREST,
                             borderMode=cv2.BORDER_REFLECT)
    _, rep = align([a_moved, pair.b], motion=motion)
    t = rep.transforms["image 1"]
    pts = np.array([[0, 0], [255, 0], [0, 255], [255, 255], [127.5, 127.5]])
    assert t.shape == (2, 3) and np.abs(map_points(t, pts) - (pts + [3, -2])).max() < tol
    if motion == "translation":
        np.testing.assert_array_equal(t[:, :2], np.eye(2))


def test_covered_rectangle_is_conservative():
    mask = np.zeros((50, 60), bool)
    pts = np.array([[5, 3], [57, 8], [52, 47], [2, 44]], np.int32)
    cv2.fillConvexPoly(mask.view(np.uint8), pts, 1)
    x, y, w, h = covered_rectangle(mask)
    assert mask[y:y + h, x:x + w].all()
    assert w * h > 0.7 * mask.sum()
    assert covered_rectangle(np.ones((4, 5), bool)) == (0, 0, 5, 4)
    assert covered_rectangle(np.zeros((4, 5), bool)) == (0, 0, 0, 0)


@pytest.mark.slow
def test_misaligned_pair_fused_with_align_matches_the_registered_pair(photo, winograd):
    """A pair whose first source is shifted by (3, -2) px, fused by the CNN with align=True, scores within
    0.5 dB PSNR (against the sharp photo, over the common crop) of the same pair never misaligned.

    The two sources differ in focus, which biases ECC by a few hundredths of a pixel (here: 0.2 dB lost at
    ~42 dB). Measured on 8 pairs (skimage photos, disk radius 2-6): 0.2-0.65 dB for radius <= 4, 2.4 dB for a
    radius-6, softness-6 pair whose corners are misregistered by 0.3 px: heavy defocus differences cost more.
    """
    sharp = photo[128:384, 128:384]
    pair = make_pair(sharp, np.random.default_rng(3), radius=3, softness=2.0)
    shift = np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]])   # a_moved(x) = a(x - (3, -2)): integer, exact
    a_moved = cv2.warpAffine(pair.a, shift, (256, 256), flags=cv2.INTER_NEAREST, borderMode=cv2.BORDER_REFLECT)
    registered = pyfusion.fuse([pair.a, pair.b])
    r = pyfusion.fuse([a_moved, pair.b], align=True)
    x, y, cw, ch = r.alignment.crop
    t = r.alignment.transforms["image 1"]
    assert np.abs(map_points(t, CHECK_POINTS * 0.5) - (CHECK_POINTS * 0.5 + [3, -2])).max() < 0.1
    assert r.fused.shape == (ch, cw, 3) and cw <= 253 and ch <= 254
    crop = (slice(y, y + ch), slice(x, x + cw))
    ours = scores(r.fused, sharp[crop])["psnr"]
    ref = scores(registered.fused[crop], sharp[crop])["psnr"]
    unaligned = scores(pyfusion.fuse([a_moved, pair.b]).fused[crop], sharp[crop])["psnr"]
    print(f"PSNR registered {ref:.2f} dB, aligned {ours:.2f} dB, misaligned without align {unaligned:.2f} dB")
    assert abs(ours - ref) < 0.5
    assert unaligned < ref - 1.0


# ------------------------------------------------------------------------------------------------- resampling
def _waves(shift=(0.0, 0.0), shape=(120, 150)):
    """A smooth float32 image in [0.1, 0.9] (a few sinusoids), sampled at pixel + ``shift`` (x, y)."""
    y, x = np.mgrid[: shape[0], : shape[1]].astype(np.float64)
    x, y = x + shift[0], y + shift[1]
    img = 0.5 + 0.2 * np.sin(2 * np.pi * x / 11 + 0.3) * np.cos(2 * np.pi * y / 13) + 0.2 * np.sin(
        2 * np.pi * (x + y) / 17)
    return img.astype(np.float32)


def test_cubic_resampling_recovers_a_subpixel_shift_better_than_linear():
    ref, moved = _waves(), _waves(shift=(0.4, -0.3))
    out = {}
    for interp in ("linear", "cubic"):
        # ECC at full size: the sub-pixel shift of this fine pattern to 0.01 px (half size: 0.03 px)
        (a, b), rep = align([moved, ref], reference=1, motion="translation", interpolation=interp, finest_level=0)
        t = rep.transforms["image 1"]
        assert np.abs(t[:, 2] - [-0.4, 0.3]).max() < 0.01              # moved(x - (0.4, -0.3)) = ref(x)
        x, y, cw, ch = rep.crop
        np.testing.assert_array_equal(b, ref[y:y + ch, x:x + cw])
        out[interp] = (np.abs(a.astype(np.float64) - b).mean(), t, rep.crop)
        if interp == "linear":   # linear is cv2's INTER_LINEAR at the recovered transform
            want = cv2.warpAffine(moved, t, ref.shape[::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
            np.testing.assert_array_equal(a, want[y:y + ch, x:x + cw])
    assert out["cubic"][2] == out["linear"][2]                   # the same transform and crop: only the sampling
    np.testing.assert_array_equal(out["cubic"][1], out["linear"][1])
    assert out["cubic"][0] < 0.75 * out["linear"][0], out


def test_default_resampling_is_cubic(photo):
    frames, _ = synthetic_stack(photo, motions=MOTIONS[1:3], blurred=(), half_blurred=())
    default, _ = align(frames)
    cubic, _ = align(frames, interpolation="cubic")
    assert all(np.array_equal(a, b) for a, b in zip(default, cubic))


def test_cubic_overshoot_is_clipped_to_the_frame_range():
    """A sharp step shifted by a fraction of a pixel: bicubic sampling rings past the step's levels; floats are
    clipped to the frame's own range, integers saturate."""
    step = np.zeros((64, 64), np.float32)
    step[:, 32:] = 1.0
    step[20:40, 10:20] = 0.6
    moved = cv2.warpAffine(step, np.array([[1.0, 0, 0.37], [0, 1, 0.21]]), (64, 64), flags=cv2.INTER_LINEAR)
    for frames in ([moved, step], [moved * 0.5 + 0.2, step * 0.5 + 0.2]):
        (a, _), rep = align(frames, reference=1, motion="translation", interpolation="cubic")
        lo, hi = frames[0].min(), frames[0].max()
        raw = cv2.warpAffine(frames[0], rep.transforms["image 1"], (64, 64), flags=cv2.INTER_CUBIC |
                             cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        assert raw.min() < lo - 0.01 and raw.max() > hi + 0.01     # what the clipping is for
        assert a.dtype == np.float32 and lo <= a.min() and a.max() <= hi
    (a8, _), _ = align([np.round(moved * 255).astype(np.uint8), np.round(step * 255).astype(np.uint8)], reference=1,
                       motion="translation", interpolation="cubic")
    assert a8.dtype == np.uint8


def test_unknown_interpolation_is_a_value_error(photo):
    frames, _ = synthetic_stack(photo, motions=MOTIONS[1:3], blurred=(), half_blurred=())
    with pytest.raises(ValueError, match="unknown interpolation 'nearest'; choose from linear, cubic"):
        align(frames, interpolation="nearest")
    with pytest.raises(ValueError, match="interpolation"):
        pyfusion.fuse(frames, method="dwt", align={"interpolation": "area"})


def test_fuse_cli_align_interp_needs_align(tmp_path, capsys, photo):
    from pyfusion.cli import main
    from pyfusion.io import read_image, write_image

    frames, _ = synthetic_stack(photo, motions=MOTIONS[1:3], blurred=(), half_blurred=())
    paths = [str(write_image(tmp_path / f"f{k}.png", f)) for k, f in enumerate(frames)]
    out = tmp_path / "o.png"
    assert main(["fuse", *paths, "-o", str(out), "--method", "dwt", "--align-interp", "linear"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("pyfusion fuse: error: ") and "--align-interp" in err and err.count("\n") == 1
    assert not out.exists()
    assert main(["fuse", *paths, "-o", str(out), "--method", "dwt", "--align", "--align-interp", "linear"]) == 0
    np.testing.assert_array_equal(read_image(out), pyfusion.fuse(frames, method="dwt", align={
        "interpolation": "linear"}).fused)


def test_half_size_ecc_is_as_accurate_as_full_size_on_the_synthetic_stack(photo):
    frames, truths = synthetic_stack(photo)
    errors = {}
    for level in (0, 1):
        _, rep = align(frames, finest_level=level)
        assert rep.levels > 1
        errors[level] = max(np.abs(map_points(rep.transforms[n], CHECK_POINTS) - map_points(t, CHECK_POINTS)).max()
                            for n, t in zip(rep.names, truths))
    assert errors[1] < 0.2 and errors[0] < 0.2, errors


def test_a_still_frame_is_not_resampled(photo):
    ref = photo[100:260, 120:320]
    moved = cv2.warpAffine(photo, np.array([[1.0, 0.0, 3.0], [0.0, 1.0, -2.0]]), (512, 512))[100:260, 120:320]
    still = ref.copy()
    still[0, 0] ^= 1          # not bit-identical to the reference, but no motion
    aligned, rep = align([still, ref, moved], reference=1, motion="translation")
    x, y, cw, ch = rep.crop
    np.testing.assert_array_equal(aligned[0], still[y:y + ch, x:x + cw])       # taken as it is
    assert not np.array_equal(aligned[2], moved[y:y + ch, x:x + cw])           # the moved frame is resampled
