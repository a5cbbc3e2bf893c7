"""Stacks read from files as the frames are needed (pyfusion.io.FrameSequence, pyfusion.fuse on paths): the same
bytes as the frames held in memory, every frame checked, a decoded frame per thread held at a time."""
import weakref

import cv2
import numpy as np
import pytest

import pyfusion
from pyfusion import cli, io, models
from pyfusion.fusion import streams
from pyfusion.io import FrameSequence, FusionInputError, read_image

H, W = 64, 80
SCORES = models.get("cnn").score_shape(H, W)


def focus_scores(gray):
    """A cheap per-frame score map (squared Laplacian, box-averaged, at the net's stride) standing in for the net."""
    energy = cv2.blur(cv2.Laplacian(np.asarray(gray, np.float64), cv2.CV_64F) ** 2, (9, 9))
    return energy[8:8 + 2 * SCORES[0]:2, 8:8 + 2 * SCORES[1]:2]


def write_stack(folder, n, *, dtype=np.uint8, colour=True, seed=0):
    """``n`` PNG frames of one scene, each sharp in another band of rows; 16-bit frames carry a random low byte."""
    rng = np.random.default_rng(seed)
    scale = 255 if dtype == np.uint8 else 65535
    scene = rng.random((H, W, 3) if colour else (H, W))
    paths = []
    for k in range(n):
        blurred = cv2.GaussianBlur(scene, (0, 0), 2.5)
        band = slice(k * H // n, (k + 1) * H // n)
        blurred[band] = scene[band]
        img = np.clip(blurred * scale + rng.random(scene.shape), 0, scale).astype(dtype)
        p = folder / f"frame_{k}.png"
        cv2.imwrite(str(p), img[:, :, ::-1] if colour else img)
        paths.append(p)
    return paths


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16])
@pytest.mark.parametrize("colour", [False, True])
@pytest.mark.parametrize("series", [False, True])
def test_streamed_fusion_is_the_in_memory_fusion(tmp_path, dtype, colour, series):
    paths = write_stack(tmp_path, 5, dtype=dtype, colour=colour)
    assert streams(paths)
    opts = {"frame_fn": focus_scores} if not series else {"series": True, "score_fn": lambda a, b: 1 / (
        1 + np.exp(focus_scores(b) - focus_scores(a)))}
    streamed = pyfusion.fuse(paths, **opts)
    held = pyfusion.fuse([read_image(p) for p in paths], **opts)
    assert streamed.fused.dtype == np.dtype(dtype) and streamed.fused.shape == held.fused.shape
    assert streamed.fused.tobytes() == held.fused.tobytes()
    assert streamed.maps.keys() == held.maps.keys()
    for name in held.maps:
        assert np.array_equal(streamed.maps[name], held.maps[name])
    if dtype == np.uint16:  # 16 bits end to end: the low byte carries the frames' information
        assert len(np.unique(streamed.fused & 0xFF)) > 200


def test_streamed_command_is_the_in_memory_fusion_with_the_net(tmp_path, winograd, capsys):
    paths = write_stack(tmp_path, 3, colour=True)
    out = tmp_path / "fused.png"
    assert cli.main(["fuse", *map(str, paths), "-o", str(out), "--max-memory", "64", "--backend", "winograd"]) == 0
    held = pyfusion.fuse([read_image(p) for p in paths], backend="winograd")
    assert read_image(out).tobytes() == held.fused.tobytes()


def test_only_files_of_a_frame_by_frame_method_are_streamed(tmp_path):
    paths = write_stack(tmp_path, 3)
    assert streams(paths) and streams(FrameSequence(paths))
    assert not streams(paths[:2])                                  # a pair: held
    assert not streams(paths, align=True)                          # alignment needs every frame
    assert not streams(paths, method="dwt")
    assert not streams([read_image(p) for p in paths])             # arrays are already in memory
    one_pass = pyfusion.fuse(iter(paths), frame_fn=focus_scores)   # an iterator of paths: read once, streamed
    assert one_pass.fused.tobytes() == pyfusion.fuse(paths, frame_fn=focus_scores).fused.tobytes()


def test_a_broken_frame_in_the_middle_is_one_line_naming_it(tmp_path, capsys):
    paths = write_stack(tmp_path, 6)
    data = bytearray(paths[3].read_bytes())
    idat = data.index(b"IDAT")
    data[idat + 8:idat + 40] = bytes(32)  # the compressed pixels broken, the header and IEND intact
    paths[3].write_bytes(bytes(data))
    frames = FrameSequence(paths)  # the header is fine: found when the frame is decoded
    with pytest.raises(FusionInputError, match="frame_3.png"):
        pyfusion.fuse(frames, frame_fn=focus_scores)
    out = tmp_path / "fused.png"
    assert cli.main(["fuse", *map(str, paths), "-o", str(out), "--backend", "winograd"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "frame_3.png" in err and "Traceback" not in err
    assert not out.exists()


@pytest.mark.parametrize("odd", ["size", "depth", "channels", "missing"])
def test_a_mismatched_frame_is_refused_from_its_header_before_any_pixels(tmp_path, monkeypatch, odd):
    paths = write_stack(tmp_path, 5, dtype=np.uint16)
    img = read_image(paths[2])
    if odd == "missing":
        paths[2].unlink()
    else:
        bad = {"size": img[:, :-8], "depth": (img >> 8).astype(np.uint8), "channels": img[:, :, 0]}[odd]
        cv2.imwrite(str(paths[2]), bad[:, :, ::-1] if bad.ndim == 3 else bad)
    decoded = []
    real = io.read_image
    monkeypatch.setattr(io, "read_image", lambda p: decoded.append(p) or real(p))
    with pytest.raises(FusionInputError, match="frame_2.png") as e:
        pyfusion.fuse(paths, frame_fn=focus_scores)
    assert "\n" not in str(e.value)
    assert decoded == [str(paths[0])]  # only the first frame was decoded


@pytest.mark.parametrize("threads, held", [(1, 1), (2, 3)])
def test_the_frames_are_not_all_held(tmp_path, monkeypatch, threads, held):
    """One decoded frame at a time on one thread; with more, the frames being converted ahead of the net too (at
    most ``threads + 1``, pyfusion.util.imap_ordered)."""
    n = 7
    paths = write_stack(tmp_path, n)
    alive, most = [], [0]
    real = io.read_image

    def reading(p):
        img = real(p)
        alive.append(weakref.ref(img))
        return img

    def scores(gray):
        most[0] = max(most[0], sum(r() is not None for r in alive))
        return focus_scores(gray)

    monkeypatch.setattr(io, "read_image", reading)
    frames = FrameSequence(paths)
    result = pyfusion.fuse(frames, frame_fn=scores, threads=threads)
    assert 1 <= most[0] <= held             # while a frame is scored, at most the ones read ahead are alive
    assert frames.decodes >= 2 * n          # every pass reads the frames again (a cache would read each once)
    assert sum(r() is not None for r in alive) <= held
    assert result.fused.shape == (H, W, 3)


def test_max_memory_caps_the_streamed_stack(tmp_path, capsys):
    paths = write_stack(tmp_path, 3)
    out = tmp_path / "fused.png"
    assert cli.main(["fuse", *map(str, paths), "-o", str(out), "--max-memory", "0.01"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "max_memory 0.01 GB is too little" in err and "give at least" in err
    assert not out.exists()


def test_the_cap_is_what_the_process_holds_the_maps_and_the_score_maps(tmp_path, monkeypatch):
    from pyfusion import fusion

    frames = FrameSequence(write_stack(tmp_path, 3))
    monkeypatch.setattr(fusion, "_resident_bytes", lambda: 1 << 30)
    maps = (140 + 8 * 3) * H * W
    assert fusion._plan_memory(frames, {"max_memory": 2.0})["max_memory"] * 2**30 == 2**30 - maps
    assert fusion._plan_memory(frames, {}) == {}  # small frames: the default score-map budget fits under the cap
    assert fusion._plan_memory(frames, {"gpu": 0, "max_memory": 2.0})["max_memory"] == 2.0  # the GPU's budget


def test_frame_sequence_reads_like_a_list(tmp_path):
    paths = write_stack(tmp_path, 4, colour=False)
    frames = FrameSequence(paths)
    held = [read_image(p) for p in paths]
    assert len(frames) == 4 and frames.shape == (H, W) and frames.dtype == np.uint8
    assert frames.names == tuple(map(str, paths))
    assert all(np.array_equal(a, b) for a, b in zip(frames, held))
    assert np.array_equal(frames[-1], held[-1])
    tail = frames[1:]
    assert len(tail) == 3 and tail.names == tuple(map(str, paths[1:]))
    assert all(np.array_equal(a, b) for a, b in zip(tail, held[1:]))
    with pytest.raises(IndexError):
        frames[4]
    with pytest.raises(FusionInputError, match="at least two"):
        FrameSequence(paths[:1])


def test_frame_header_of_mutated_files_is_a_tuple_none_or_one_line(tmp_path):
    rng = np.random.default_rng(3)
    img = (rng.random((40, 56, 3)) * 65535).astype(np.uint16)
    valid = {}
    for ext, arr in ((".png", img), (".tif", img), (".jpg", (img >> 8).astype(np.uint8))):
        ok, buf = cv2.imencode(ext, arr)
        valid[ext] = buf.tobytes()
    for case in range(300):
        ext = list(valid)[case % 3]
        data = bytearray(valid[ext])
        for _ in range(rng.integers(1, 6)):  # bit flips and overwrites in the first 200 bytes (the headers)
            i = int(rng.integers(0, min(200, len(data))))
            data[i] = int(rng.integers(0, 256)) if rng.random() < 0.5 else data[i] ^ (1 << int(rng.integers(0, 8)))
        if rng.random() < 0.3:
            data = data[:int(rng.integers(0, len(data)))]
        p = tmp_path / f"case{case}{ext}"
        p.write_bytes(bytes(data))
        try:
            told = io.frame_header(p)
        except FusionInputError as e:
            assert "\n" not in str(e) and str(p) in str(e)
            continue
        assert told is None or (len(told) == 4 and all(isinstance(v, int) for v in told[:2]))
