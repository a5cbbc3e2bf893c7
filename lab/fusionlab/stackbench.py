"""Focus-stack benchmarks: synthetic stacks with ground truth (:func:`fusionlab.synthetic.benchmark_stacks`) fused
by every N-frame fuser, registered and hand-held; and the comparison of a real stack's fusion with another tool's
result (crops, depth map, agreement). ``tools/stack_bench.py`` and ``tools/pcb_figure.py`` are their command lines.

Synthetic stacks (:func:`score_stack`), three conditions per fuser, each scored against the sharp photo
(:func:`fusionlab.synthetic.scores`, PSNR and SSIM):

* ``registered``: the registered frames, scored on the whole image and on the alignment's crop;
* ``moved+align``: the hand-held frames (:func:`fusionlab.synthetic.shake`) fused with ``align=True``, scored on
  the crop the alignment reports (the reference is the middle frame, which :func:`~fusionlab.synthetic.shake`
  leaves still, so its crop of the photo is the ground truth);
* ``moved``: the hand-held frames fused as if registered, scored on the same crop (what alignment saves).

Fusers (:data:`FUSERS`): ``one-pass`` (``fuse(frames, method="cnn")``, :mod:`pyfusion.methods.stack`, with its
edge fix), ``one-pass guided`` (``edge_fix=False``: the paper's guided-filter blend),
``series`` (``series=True``, the paper's ``((I1 + I2) + I3) + ...``), ``dwt`` (N sources at once),
``one-pass exact`` (``exact=True``: every frame scored at full resolution, where ``one-pass`` scores frames
over ``pyfusion.methods.stack.WORK_PIXELS`` at a working size; the two are the same on smaller frames),
``wavelet-cnn`` (in series), ``dtcwt`` (N frames at once), ``wavelet-cnn dtcwt`` (``transform="dtcwt"``, in series),
``one-pass r=0.01`` (one pass with the paper's small-region area), and
``enfuse`` (Enblend-Enfuse's contrast-weighted hard-mask stacking, only where the ``enfuse`` program is
installed; aligned by :func:`pyfusion.align.align`). A fuser that refuses N frames is recorded as skipped with
its error.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

from fusionlab import synthetic
from pyfusion.io import read_image, write_atomic, write_image

__all__ = ["FUSERS", "CONDITIONS", "fuse_frames", "score_stack", "summary", "measure_command",
           "pick_windows", "detail_energy", "agreement", "comparison_figure", "encode_png", "patch_energy",
           "undecided_survey", "align_check", "figure_windows", "sharpness", "gray_spread", "mean_ratio"]

#: The N-frame fusers: label -> (method of :func:`pyfusion.fuse`, its options); ``enfuse`` is the external program.
#: ``one-pass r=0.01``: one pass with the paper's small-region area (0.01 H W) instead of the one-pass default
#: (0.003 H W, ``constants.REGION_RATIO_STACK``, chosen on tuning stacks), to show what the removal on the label
#: map costs where true layers are small.
FUSERS = {"one-pass": ("cnn", {}), "one-pass guided": ("cnn", {"edge_fix": False}),
          "series": ("cnn", {"series": True}), "dwt": ("dwt", {}),
          "wavelet-cnn": ("wavelet-cnn", {}), "one-pass r=0.01": ("cnn", {"region_ratio": 0.01}),
          "enfuse": ("enfuse", {}), "dtcwt": ("dtcwt", {}),
          "wavelet-cnn dtcwt": ("wavelet-cnn", {"transform": "dtcwt"}), "one-pass exact": ("cnn", {"exact": True})}
#: The conditions of :func:`score_stack` (module docstring).
CONDITIONS = ("registered", "moved+align", "moved")
#: Resampling of the true-transform check: label -> :func:`pyfusion.align.align`'s ``interpolation``.
WARPS = {"bilinear": "linear", "bicubic": "cubic"}
#: enfuse's focus-stacking options (contrast weight only, hard masks: each pixel from the sharpest frame).
ENFUSE_OPTIONS = ("--exposure-weight=0", "--saturation-weight=0", "--contrast-weight=1", "--hard-mask",
                  "--contrast-window-size=5", "--gray-projector=l-star")


# ------------------------------------------------------------------------------------------------ fusing stacks
def _enfuse(frames, *, threads: int | None = None, extra=()) -> np.ndarray:
    """uint8 or uint16 frames fused by the ``enfuse`` program (:data:`ENFUSE_OPTIONS` and the options ``extra``;
    ``threads``: its OpenMP threads, default its own choice), through PNG files (enfuse writes grayscale with an
    alpha channel, which OpenCV misreads in a 16-bit TIFF and reads from a PNG as RGBA); RuntimeError when it
    fails."""
    exe = shutil.which("enfuse")
    if exe is None:
        raise RuntimeError("enfuse is not installed")
    with tempfile.TemporaryDirectory(prefix="enfuse.") as tmp:
        names = [str(write_image(Path(tmp) / f"f{k:02d}.png", f)) for k, f in enumerate(frames)]
        out = Path(tmp) / "fused.png"
        env = {**os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {})}
        run = subprocess.run([exe, *ENFUSE_OPTIONS, *extra, f"--output={out}", *names], capture_output=True,
                             text=True, env=env)
        if run.returncode != 0:
            raise RuntimeError(f"enfuse failed ({run.returncode}): {run.stderr.strip()[-300:]}")
        fused = read_image(out)
    if fused.ndim == 3 and frames[0].ndim == 2:          # grayscale read back as RGB
        return np.ascontiguousarray(fused[..., 0])
    return fused[..., : frames[0].shape[2]] if fused.ndim == 3 else fused


def fuse_frames(frames, fuser: str, *, align=False, threads: int | None = 1) -> dict:
    """Fuse ``frames`` with one of :data:`FUSERS`.

    ``align``: ``True`` or a dict of :func:`pyfusion.align.align`'s options (as :func:`pyfusion.fuse` takes it)
    registers the frames first; ``threads`` goes to the methods that take it and to the alignment.

    Returns
    -------
    dict
        ``fused``; ``seconds`` (wall) and ``cpu_seconds`` (this process and its children); ``crop``, the
        alignment's ``(x, y, width, height)`` with ``align`` (:func:`pyfusion.fuse`'s ``align``; enfuse:
        :func:`pyfusion.align.align` first), else None; ``depth``, the depth map where the fuser makes one (one
        pass), else None.
    """
    import pyfusion
    from pyfusion.fusion import method_takes

    method, options = FUSERS[fuser]
    align_opts = {"threads": threads, **(align if isinstance(align, dict) else {})} if align else False
    t0, c0 = time.perf_counter(), _cpu()
    if method == "enfuse":
        crop = None
        if align:
            from pyfusion.align import align as _align

            frames, report = _align(frames, **align_opts)
            crop = report.crop
        fused = _enfuse(frames, threads=threads)
        return {"fused": fused, "seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0, "crop": crop,
                "depth": None}
    kw = dict(options)
    if "threads" in method_takes(method):
        kw["threads"] = threads
    r = pyfusion.fuse(frames, method=method, align=align_opts, **kw)
    return {"fused": r.fused, "seconds": time.perf_counter() - t0, "cpu_seconds": _cpu() - c0,
            "crop": r.alignment.crop if align else None, "depth": r.maps.get("depth_map")}


def _cpu() -> float:
    """CPU seconds of this process and its finished children (user + system)."""
    return float(sum(os.times()[:4]))


def _cut(img: np.ndarray, crop) -> np.ndarray:
    x, y, w, h = crop
    return img[y:y + h, x:x + w]


def _corner_error(estimated: dict, true_transforms, names, shape) -> float:
    """Largest distance (px) between the estimated and the true transforms at the four image corners."""
    from pyfusion.align import map_points

    h, w = shape
    corners = np.array([[0, 0], [w - 1, 0], [0, h - 1], [w - 1, h - 1]], np.float64)
    return max(float(np.abs(map_points(estimated[n], corners) - map_points(t, corners)).max())
               for n, t in zip(names, true_transforms) if n in estimated)


def score_stack(stack, fusers, *, interpolation: str | None = None, threads: int | None = 1) -> dict:
    """Every fuser on every condition of one synthetic stack (module docstring).

    Parameters
    ----------
    stack : fusionlab.synthetic.Stack
    fusers : sequence of str
        Labels of :data:`FUSERS`.
    interpolation : {"cubic", "linear"}, optional
        Resampling of the ``moved+align`` condition (:func:`pyfusion.align.align`'s; default its default).
    threads : int, optional
        Threads of each fusion (default 1).

    Returns
    -------
    dict
        JSON-ready: ``stack``, ``frames``, ``step``, ``shape``, ``frame_psnr`` (each frame alone), ``align``
        (``crop``, ``corner_error_px`` of the recovered transforms, from one :func:`pyfusion.align.align` of the
        moved frames), ``results`` (fuser -> condition -> :func:`_conditions`), ``skipped`` (fuser -> reason),
        ``true_warp`` (the first fuser that ran, on the moved frames warped back by their true transforms,
        :data:`WARPS` -> ``psnr``, ``ssim`` on the crop: the loss of resampling alone), ``seconds`` and
        ``cpu_seconds`` of the whole stack.
    """
    from pyfusion.align import align

    t0, c0 = time.perf_counter(), _cpu()
    names = [f"image {k + 1}" for k in range(len(stack.frames))]
    _, report = align(list(stack.moved), threads=threads)
    crop = report.crop
    row = {"stack": stack.name, "frames": len(stack.frames), "step": stack.step, "shape": list(stack.sharp.shape),
           "frame_psnr": [synthetic.scores(f, stack.sharp)["psnr"] for f in stack.frames],
           "align": {"crop": list(crop),
                     "corner_error_px": _corner_error(report.transforms, stack.transforms, names,
                                                      stack.sharp.shape[:2])},
           "results": {}, "skipped": {}}
    for fuser in fusers:
        try:
            row["results"][fuser] = _conditions(stack, fuser, crop, interpolation, threads)
        except (ValueError, RuntimeError) as e:
            row["skipped"][fuser] = " ".join(str(e).split())
    first = next(iter(row["results"]), None)
    if first is not None:
        row["true_warp"] = {"fuser": first, **{name: _true_warp_scores(stack, first, crop, interp, threads)
                                               for name, interp in WARPS.items()}}
    row.update(seconds=time.perf_counter() - t0, cpu_seconds=_cpu() - c0)
    return row


def _conditions(stack, fuser: str, crop, interpolation, threads) -> dict:
    """One fuser on the three :data:`CONDITIONS` of a stack: each ``psnr``, ``ssim``, ``seconds``,
    ``cpu_seconds``; ``registered`` also ``crop_psnr``, ``crop_ssim`` (on ``crop``, the alignment's) and, for a
    fuser with a depth map, ``depth_exact`` and ``depth_within_1`` (the share of pixels whose depth is the true
    layer, or within one of it); ``moved+align`` also its ``crop``."""
    sharp_crop = _cut(stack.sharp, crop)
    f = fuse_frames(list(stack.frames), fuser, threads=threads)
    c = synthetic.scores(_cut(f["fused"], crop), sharp_crop)
    reg = {**synthetic.scores(f["fused"], stack.sharp), "crop_psnr": c["psnr"], "crop_ssim": c["ssim"], **_times(f)}
    if f["depth"] is not None:
        reg.update(depth_exact=float(np.mean(f["depth"] == stack.layers)),
                   depth_within_1=float(np.mean(np.abs(f["depth"] - stack.layers) <= 1)))
    f = fuse_frames(list(stack.moved), fuser, threads=threads,
                    align=True if interpolation is None else {"interpolation": interpolation})
    aligned = {**synthetic.scores(f["fused"], _cut(stack.sharp, f["crop"])), **_times(f), "crop": list(f["crop"])}
    f = fuse_frames(list(stack.moved), fuser, threads=threads)
    moved = {**synthetic.scores(_cut(f["fused"], crop), sharp_crop), **_times(f)}
    return {"registered": reg, "moved+align": aligned, "moved": moved}


def _times(f: dict) -> dict:
    return {"seconds": f["seconds"], "cpu_seconds": f["cpu_seconds"]}


def _true_warp_scores(stack, fuser, crop, interpolation, threads) -> dict:
    """Scores of the moved frames warped back with their true transforms as :func:`pyfusion.align.align` warps
    (no estimation error; the resampling alone), cut to ``crop`` and fused."""
    from pyfusion.align import _warp

    h, w = stack.sharp.shape[:2]
    frames = [_cut(_warp(m, t, (w, h), interpolation), crop) for m, t in zip(stack.moved, stack.transforms)]
    return synthetic.scores(fuse_frames(frames, fuser, threads=threads)["fused"], _cut(stack.sharp, crop))


# ------------------------------------------------------------------------------------------------- the tables
def _mean(rows, fuser, condition, key) -> float:
    return float(np.mean([r["results"][fuser][condition][key] for r in rows]))


def _cell(rows, fuser, condition, prefix="") -> str:
    psnr, ssim = (_mean(rows, fuser, condition, prefix + key) for key in ("psnr", "ssim"))
    return f"{psnr:.2f} / {ssim:.4f}"


def _fusers_run(rows) -> list:
    """Fusers with results on every stack, in :data:`FUSERS` order."""
    return [f for f in FUSERS if rows and all(f in r["results"] for r in rows)]


def _difference_line(rows, a, b, condition) -> str:
    d = np.array([r["results"][a][condition]["psnr"] - r["results"][b][condition]["psnr"] for r in rows])
    return (f"{a} vs {b}, {condition}: PSNR difference {d.mean():+.2f} dB on average (from {d.min():+.2f} to "
            f"{d.max():+.2f}); {a} at least as good on {int((d >= 0).sum())} of {len(d)} stacks")


def _group_table(rows, fusers, key, label) -> list:
    lines = [f"| {label} | stacks | " + " | ".join(fusers) + " |", "|---:|---:|" + "---:|" * len(fusers)]
    for value in sorted({r[key] for r in rows}):
        sel = [r for r in rows if r[key] == value]
        best = max(fusers, key=lambda f: _mean(sel, f, "registered", "psnr"))
        cells = [_cell(sel, f, "registered") for f in fusers]
        cells = [f"**{c}**" if f == best else c for f, c in zip(fusers, cells)]
        lines.append(f"| {value:g} | {len(sel)} | " + " | ".join(cells) + " |")
    return lines


def summary(rows, *, command: str = "", notes=()) -> str:
    """The markdown of the benchmark: the overall table (every fuser and condition, the best single frame), the
    registered results by frame count and by radius step, the one-pass vs series differences, the alignment
    error, and ``notes`` (lines, e.g. skipped fusers)."""
    fusers = _fusers_run(rows)
    n = len(rows)
    best_frame = np.mean([max(r["frame_psnr"]) for r in rows])
    lines = [f"PSNR (dB) / SSIM against the sharp photo, means over {n} stacks"
             + (f" (`{command}`)" if command else "") + ". *registered*: whole image and the alignment's crop; "
             "*moved + align*: hand-held frames with `align=True`, on its crop; *moved, no align*: the same frames "
             "fused as if registered, on the crop. CPU seconds per stack (mean; one thread; with `align=True` "
             "including the alignment).", "",
             "| fuser | registered | registered, crop | moved + align | moved, no align | CPU s | CPU s, align |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for f in fusers:
        lines.append(f"| {f} | {_cell(rows, f, 'registered')} | {_cell(rows, f, 'registered', 'crop_')} | "
                     f"{_cell(rows, f, 'moved+align')} | {_cell(rows, f, 'moved')} | "
                     f"{_mean(rows, f, 'registered', 'cpu_seconds'):.2f} | "
                     f"{_mean(rows, f, 'moved+align', 'cpu_seconds'):.2f} |")
    lines += [f"| best single frame | {best_frame:.2f} / - | | | | | |", ""]
    pairs = [(a, c) for a in fusers if a.startswith("one-pass") for c in ("registered", "moved+align")]
    if "series" in fusers:
        lines += [f"- {_difference_line(rows, a, 'series', c)}" for a, c in pairs]
    if {"one-pass", "one-pass exact"} <= set(fusers):
        lines += [f"- {_difference_line(rows, 'one-pass', 'one-pass exact', c)}" for c in CONDITIONS]
    lines += [f"- {_depth_line(rows, f)}" for f in fusers if all("depth_exact" in r["results"][f]["registered"]
                                                                 for r in rows)]
    lines += [f"- {x}" for x in _align_lines(rows, fusers)]
    lines.append(f"- the whole benchmark: {sum(r['cpu_seconds'] for r in rows) / 60:.1f} min of CPU "
                 f"({sum(r['seconds'] for r in rows) / 60:.1f} min wall on this machine)")
    lines += [f"- {x}" for x in notes]
    lines += ["", "Registered stacks by number of frames:", ""] + _group_table(rows, fusers, "frames", "frames")
    lines += ["", "Registered stacks by radius step (disk radius per layer of depth distance, px):", ""]
    lines += _group_table(rows, fusers, "step", "step")
    return "\n".join(lines) + "\n"


def _depth_line(rows, fuser) -> str:
    exact = np.array([r["results"][fuser]["registered"]["depth_exact"] for r in rows])
    near = np.array([r["results"][fuser]["registered"]["depth_within_1"] for r in rows])
    return (f"{fuser} depth map, registered: {exact.mean():.1%} of the pixels on their true layer on average "
            f"(worst stack {exact.min():.1%}), {near.mean():.1%} within one layer")


def _align_lines(rows, fusers) -> list:
    """The alignment's error, and how much of the hand-held loss the resampling alone explains (where every row
    has its ``true_warp``: a row completed with more fusers keeps the one of its first run)."""
    if not fusers:
        return []
    err = np.array([r["align"]["corner_error_px"] for r in rows])
    warped = all("true_warp" in r and r["true_warp"]["fuser"] == rows[0]["true_warp"]["fuser"] for r in rows)
    fuser = rows[0]["true_warp"]["fuser"] if warped else fusers[0]
    reg = np.array([r["results"][fuser]["registered"]["crop_psnr"] for r in rows])
    ali = np.array([r["results"][fuser]["moved+align"]["psnr"] for r in rows])
    loss = reg - ali
    lines = [f"alignment: recovered transforms off by {err.mean():.3f} px on average at the image corners (worst "
             f"{err.max():.3f} px); {fuser} on the hand-held frames with `align=True` loses {loss.mean():.2f} dB on "
             f"average against the registered stack on the same crop (from {loss.min():.2f} to {loss.max():.2f} dB)"]
    for name in WARPS if warped else ():
        tw = np.array([r["true_warp"][name]["psnr"] for r in rows])
        lines.append(f"{fuser} on the hand-held frames warped back by their true transforms, {name}: "
                     f"{tw.mean():.2f} dB ({(tw - ali).mean():+.2f} dB against `align=True`)")
    return lines


# --------------------------------------------------------------------------------------------- the documents
def measure_command(cmd, *, cwd=None) -> dict:
    """Run ``cmd`` (a list) and measure it: ``seconds`` (wall), ``cpu_seconds`` (user + system of the command and
    its children, from :func:`os.times` of this process's children before and after), ``peak_bytes`` (the
    largest resident set, by ``/usr/bin/time -v`` where present, else :func:`resource.getrusage` of the children,
    which also counts earlier children of this process), ``peak_from``, ``returncode`` and ``output`` (stdout
    and stderr)."""
    import resource

    gnu_time = Path("/usr/bin/time")
    use_time = gnu_time.is_file()
    full = [str(gnu_time), "-v", *map(str, cmd)] if use_time else [str(x) for x in cmd]
    before = os.times()
    t0 = time.perf_counter()
    run = subprocess.run(full, cwd=cwd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    after = os.times()
    output = run.stdout + run.stderr
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", output) if use_time else None
    peak = int(m.group(1)) * 1024 if m else resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    cpu = (after.children_user - before.children_user) + (after.children_system - before.children_system)
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_bytes": peak, "returncode": run.returncode,
            "output": output, "peak_from": "/usr/bin/time -v" if m else "getrusage(RUSAGE_CHILDREN)"}


# ------------------------------------------------------------------------------------------ the real-stack figure
def detail_energy(img: np.ndarray) -> np.ndarray:
    """Per-pixel detail: the gradient magnitude (Sobel) of the grayscale image, float64."""
    from pyfusion.io import to_gray, to_unit

    g = to_gray(to_unit(img))
    return np.hypot(cv2.Sobel(g, cv2.CV_64F, 1, 0), cv2.Sobel(g, cv2.CV_64F, 0, 1))


def pick_windows(energy: np.ndarray, *, size: int, count: int, taken=(), margin: int = 0) -> list:
    """``count`` square windows ``(x, y, size, size)`` of the largest mean ``energy``, picked greedily on a grid of
    stride ``size // 4``, overlapping neither each other nor the windows in ``taken``, at least ``margin`` px
    from the border."""
    h, w = energy.shape
    c = np.zeros((h + 1, w + 1))
    c[1:, 1:] = np.cumsum(np.cumsum(energy, 0), 1)
    stride = max(1, size // 4)
    ys = np.arange(margin, h - size - margin + 1, stride)
    xs = np.arange(margin, w - size - margin + 1, stride)
    sums = c[ys[:, None] + size, xs + size] - c[ys[:, None], xs + size] - c[ys[:, None] + size, xs] + c[ys[:, None], xs]
    chosen = list(taken)
    picked = []
    for i in np.argsort(sums, axis=None)[::-1]:
        y, x = int(ys[i // len(xs)]), int(xs[i % len(xs)])
        if all(x + size <= a or a + s <= x or y + size <= b or b + t <= y for a, b, s, t in chosen):
            chosen.append((x, y, size, size))
            picked.append((x, y, size, size))
            if len(picked) == count:
                break
    return picked


def agreement(ours: np.ndarray, other: np.ndarray, *, offset=(0, 0)) -> dict:
    """Register ``other`` (a result of another tool, larger or equal) to ``ours`` and compare them.

    ``other`` is cut at ``offset`` (x, y) to ``ours``' size, then registered to ``ours`` by
    :func:`pyfusion.align.align` (affine, ``ours`` the reference) and both are cropped to the common region.

    Returns
    -------
    dict
        ``ours``, ``other`` (the registered pair, same shape), ``crop`` (in ``ours``' pixels), ``transform``,
        ``psnr``, ``ssim`` (:func:`fusionlab.synthetic.scores`, ``other`` as the reference: agreement only, neither
        is ground truth).
    """
    from pyfusion.align import align

    h, w = ours.shape[:2]
    x, y = offset
    cut = np.ascontiguousarray(other[y:y + h, x:x + w])
    if cut.shape != ours.shape:
        raise ValueError(f"the other image cut at {offset} has shape {cut.shape}, ours {ours.shape}")
    (a, b), report = align([ours, cut], reference=0, names=["ours", "other"])
    return {"ours": a, "other": b, "crop": report.crop, "transform": report.transforms["other"],
            **synthetic.scores(a, b)}


def _label(img: np.ndarray, text: str, *, height: int = 22) -> np.ndarray:
    """``img`` (RGB uint8) under a white strip with ``text``."""
    strip = np.full((height, img.shape[1], 3), 255, np.uint8)
    cv2.putText(strip, text, (4, height - 7), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 1, cv2.LINE_AA)
    return np.vstack([strip, img])


def _pad_to(img: np.ndarray, h: int, w: int) -> np.ndarray:
    out = np.full((h, w, 3), 255, np.uint8)
    out[: img.shape[0], : img.shape[1]] = img
    return out


def _row(panels, gap: int = 6) -> np.ndarray:
    h = max(p.shape[0] for p in panels)
    spacer = np.full((h, gap, 3), 255, np.uint8)
    parts = []
    for p in panels:
        parts += [_pad_to(p, h, p.shape[1]), spacer]
    return np.hstack(parts[:-1])


def _column(panels, gap: int = 6) -> np.ndarray:
    w = max(p.shape[1] for p in panels)
    spacer = np.full((gap, w, 3), 255, np.uint8)
    parts = []
    for p in panels:
        parts += [_pad_to(p, p.shape[0], w), spacer]
    return np.vstack(parts[:-1])


def comparison_figure(images, depth: np.ndarray, windows, *, captions, names, thumb_width: int = 420) -> np.ndarray:
    """A figure (RGB uint8): one row per window, the images' crops side by side (same pixels, 1:1), each row
    captioned (``captions[i]``) and each crop named (``names``); on the right a thumbnail of the first image with
    the windows outlined and numbered, and the depth map (RGB, any size) at the thumbnail's width."""
    first = images[0]
    rows = []
    for i, ((x, y, s, t), cap) in enumerate(zip(windows, captions)):
        crops = [_label(np.ascontiguousarray(im[y:y + t, x:x + s]), f"{i + 1}: {name}") for im, name in
                 zip(images, names)]
        rows.append(_label(_row(crops), cap))
    scale = thumb_width / first.shape[1]
    size = (thumb_width, int(round(first.shape[0] * scale)))
    thumb = cv2.resize(first, size, interpolation=cv2.INTER_AREA)
    for i, (x, y, s, t) in enumerate(windows):
        p0 = (int(x * scale), int(y * scale))
        p1 = (int((x + s) * scale), int((y + t) * scale))
        cv2.rectangle(thumb, p0, p1, (255, 0, 0), 2)
        cv2.putText(thumb, str(i + 1), (p0[0] + 3, p0[1] + 16), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 0, 0), 2,
                    cv2.LINE_AA)
    depth_small = cv2.resize(depth, size, interpolation=cv2.INTER_AREA)
    right = _column([_label(thumb, f"{names[0]}: the crops"), _label(depth_small, "depth map (frame index)")])
    return _row([_column(rows), right], gap=12)


def encode_png(img: np.ndarray, *, max_bytes: int) -> tuple[bytes, str]:
    """PNG bytes of an RGB uint8 image within ``max_bytes`` where possible: full colour first, else an adaptive
    palette of 256, 128, 64 colours (PIL, no dithering); returns ``(data, how)``."""
    ok, buf = cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    data, how = buf.tobytes(), "RGB"
    if len(data) <= max_bytes:
        return data, how
    import io

    from PIL import Image

    for colours in (256, 128, 64):
        q = Image.fromarray(img).quantize(colors=colours, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
        out = io.BytesIO()
        q.save(out, format="PNG", optimize=True)
        data, how = out.getvalue(), f"{colours}-colour palette"
        if len(data) <= max_bytes:
            break
    return data, how


# ------------------------------------------------------------------------------------ where the stack time goes
def patch_energy(gray: np.ndarray, score_shape, *, patch: int, stride: int) -> np.ndarray:
    """A cheap focus measure on the score map's grid: the mean squared 4-neighbour Laplacian of ``gray`` (borders
    replicated) over each ``patch x patch`` patch with top-left ``(stride*i, stride*j)``, pixels past the image
    counting as 0 (float64 of ``score_shape``)."""
    lap = cv2.Laplacian(np.ascontiguousarray(gray, dtype=np.float32), cv2.CV_32F, ksize=1,
                        borderType=cv2.BORDER_REPLICATE)
    return _patch_mean(np.square(lap, dtype=np.float64), score_shape, patch=patch, stride=stride)


def _patch_mean(values: np.ndarray, score_shape, *, patch: int, stride: int) -> np.ndarray:
    sh, sw = int(score_shape[0]), int(score_shape[1])
    padded = np.zeros((max(stride * (sh - 1) + patch, values.shape[0]), max(stride * (sw - 1) + patch,
                                                                             values.shape[1])))
    padded[:values.shape[0], :values.shape[1]] = values
    sat = cv2.integral(padded)
    r, c = stride * np.arange(sh), stride * np.arange(sw)
    return (sat[r + patch][:, c + patch] - sat[r][:, c + patch] - sat[r + patch][:, c] + sat[r][:, c]) / patch ** 2


def undecided_survey(frames, *, scores=None, margins=(1.25, 1.5, 2.0), floors=(0.0, 1e-3, 3e-3),
                     tiles=((64, 64), (256, 256)), candidates: int = 3) -> list:
    """How much of a stack a cheap focus measure settles, and what the net would still have to score.

    Per frame, :func:`patch_energy` spread to pixels by :func:`pyfusion.focus.focus_map` (the net's patch
    averaging); a pixel is *undecided* when its best frame's measure is at most ``margin`` times the runner-up's
    and above ``floor`` (below it every frame is flat there). The labels of the rule: the measure's best frame
    where settled, else the net's best among the measure's top ``candidates`` frames. *Work*: the input area of
    the winograd tiles (:func:`pyfusion.tiling.tile_plan`, ``tile`` scores a side) holding a score needed by an
    undecided pixel of a candidate frame, summed over the frames, as a share of the frames' area (the exact path
    scores each frame whole: 1.0).

    Parameters
    ----------
    frames : sequence of ndarray
        Registered frames.
    scores : sequence of ndarray, optional
        Their per-frame score maps (:func:`pyfusion.net.frame_scores`; computed when not given).

    Returns
    -------
    list of dict
        One per (margin, floor): ``margin``, ``floor``, ``undecided`` (share of pixels), ``agree`` (share of
        pixels whose label is the one-pass argmax's), ``work`` (tile -> share).
    """
    from pyfusion import backends, models, net, tiling
    from pyfusion.focus import focus_map
    from pyfusion.io import to_gray, to_unit

    m = models.get("cnn")
    h, w = frames[0].shape[:2]
    shape = m.score_shape(h, w)
    grays = [to_gray(to_unit(f)).astype(np.float32) for f in frames]
    if scores is None:
        scores = [net.frame_scores(g) for g in grays]
    focus = np.stack([focus_map(s, (h, w), patch=m.patch, stride=m.stride) for s in scores])
    exact = focus.argmax(0)
    cheap = np.stack([focus_map(patch_energy(g, shape, patch=m.patch, stride=m.stride), (h, w), patch=m.patch,
                                stride=m.stride) for g in grays])
    order = np.argsort(-cheap, axis=0, kind="stable")
    ranked = np.take_along_axis(cheap, order[:2], axis=0)
    cand = order[:candidates]
    pick = np.take_along_axis(cand, np.take_along_axis(focus, cand, axis=0).argmax(0)[None], axis=0)[0]
    plans = {t: tiling.tile_plan(h, w, t, model=m, backend=backends.get("winograd")) for t in tiles}
    rows = []
    for floor in floors:
        for margin in margins:
            undecided = (ranked[0] <= margin * ranked[1]) & (ranked[0] > floor)
            labels = np.where(undecided, pick, order[0])
            work = dict.fromkeys(tiles, 0)
            for k in range(len(frames)):
                need = _patch_mean((undecided & (cand == k).any(0)).astype(np.float64), shape, patch=m.patch,
                                   stride=m.stride) > 0
                for t, plan in plans.items():
                    work[t] += sum((r.stop - r.start) * (c.stop - c.start) for ro, co, r, c in plan
                                   if need[ro, co].any())
            rows.append({"margin": margin, "floor": floor, "undecided": float(undecided.mean()),
                         "agree": float((labels == exact).mean()),
                         "work": {f"{t[0]}x{t[1]}": v / (len(frames) * h * w) for t, v in work.items()}})
    return rows


def align_check(stack, *, levels=(0, 1), threads: int | None = 1) -> dict:
    """:func:`pyfusion.align.align` of a stack's hand-held frames with ECC stopping at each pyramid level of
    ``levels`` (``finest_level``): ``seconds``, ``corner_error_px`` (against the true transforms) and the one-pass
    fusion's ``psnr`` against the sharp photo on the crop; and ``true_warp``: the same fusion of the frames warped
    back by their true transforms (bicubic), on the first level's crop."""
    from pyfusion.align import _warp, align

    names = [f"image {k + 1}" for k in range(len(stack.frames))]
    h, w = stack.sharp.shape[:2]
    out, crop = {}, None
    for level in levels:
        t0 = time.perf_counter()
        aligned, report = align(list(stack.moved), finest_level=level, threads=threads)
        seconds = time.perf_counter() - t0
        crop = crop or report.crop
        fused = fuse_frames(aligned, "one-pass", threads=threads)["fused"]
        out[level] = {"seconds": seconds, "corner_error_px": _corner_error(report.transforms, stack.transforms,
                                                                           names, (h, w)),
                      "psnr": synthetic.scores(fused, _cut(stack.sharp, report.crop))["psnr"]}
    frames = [_cut(_warp(m, t, (w, h), "cubic"), crop) for m, t in zip(stack.moved, stack.transforms)]
    true = synthetic.scores(fuse_frames(frames, "one-pass", threads=threads)["fused"], _cut(stack.sharp, crop))
    return {"levels": out, "true_warp": true["psnr"]}


def figure_windows(ours: np.ndarray, other: np.ndarray, *, size: int) -> list:
    """The crops of the real-stack figure: the two most detailed windows of ``ours`` and the window where it
    differs most from ``other`` (registered, same shape), ``(x, y, size, size)`` each."""
    detail = pick_windows(detail_energy(ours), size=size, count=2, margin=size // 4)
    from pyfusion.io import to_gray, to_unit

    diff = np.abs(to_gray(to_unit(ours)) - to_gray(to_unit(other)))
    return detail + pick_windows(diff, size=size, count=1, taken=detail, margin=size // 4)


def gray_spread(img: np.ndarray, window=None) -> float:
    """Standard deviation of the grayscale image in [0, 1] on ``window`` ``(x, y, w, h)`` (default the whole
    image): its contrast, which scales :func:`sharpness` by its square."""
    from pyfusion.io import to_gray, to_unit

    return float(np.std(to_gray(to_unit(img if window is None else _cut(img, window)))))


def mean_ratio(reference: np.ndarray, frame: np.ndarray) -> tuple:
    """Per channel, the mean of ``reference`` over the mean of ``frame`` (same shape) on the pixels saturated in
    neither (every channel below the dtype's maximum): the exposure gain that would bring ``frame`` to
    ``reference``. Defocus does not change a mean, so the ratio measures exposure and white balance only."""
    from pyfusion.io import to_unit

    a, b = to_unit(reference), to_unit(frame)
    a3, b3 = (a, b) if a.ndim == 3 else (a[..., None], b[..., None])
    ok = (a3 < 1.0).all(-1) & (b3 < 1.0).all(-1)
    return tuple(float(a3[..., c][ok].mean() / b3[..., c][ok].mean()) for c in range(a3.shape[-1]))


def sharpness(img: np.ndarray, window=None) -> float:
    """Mean gradient energy: the mean squared Sobel gradient magnitude of the grayscale image in [0, 1]
    (:func:`detail_energy`), on ``window`` ``(x, y, w, h)`` (default the whole image)."""
    e = detail_energy(img if window is None else _cut(img, window))
    return float(np.mean(np.square(e)))
