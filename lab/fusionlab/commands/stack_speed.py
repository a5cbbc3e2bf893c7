#!/usr/bin/env python
"""Where the time of a focus stack goes, and what would save it: three measurements, each printed as markdown.

    python -m fusionlab stack-speed undecided --count 12      # the cheap focus measure: share undecided, work left
    python -m fusionlab stack-speed align --count 12          # ECC stopping at full, half (quarter) size
    python -m fusionlab stack-speed sharpness --fused F.png   # pcb: ours vs focus-stack's result in the figure crops
    python -m fusionlab stack-speed detail --count 10          # tuning stacks: the finest level by max |coefficient|
    python -m fusionlab stack-speed band --scale 4 --count 6    # tuning stacks: the fast path's edge band

``undecided``: on the real stack (--stack, registered by pyfusion.align) and on --count synthetic stacks
(fusionlab.synthetic.benchmark_stacks), fusionlab.stackbench.undecided_survey for every margin and floor.
``align``: fusionlab.stackbench.align_check on --count synthetic hand-held stacks. ``sharpness``: the mean
gradient energy (fusionlab.stackbench.sharpness) of a fused pcb result (--fused, as `pyfusion fuse --align` writes
it: cropped to the alignment's common region, whose (x, y) --offset gives) and of focus-stack's expected.jpg
registered to it (and, where focus-stack is built, of its results with its defaults and without its contrast and
white-balance matching), in the three crops of the pcb figure (or --windows), with the sharpest aligned frame's and
the per-pixel maximum of the aligned frames'; then the crops' contrast (gray standard deviation) and the frames'
exposure ratios to the reference (fusionlab.stackbench.mean_ratio). ``detail``: on --count synthetic tuning
stacks (photos 50 and up, seed 1), PSNR against the truth of the one pass and of its labels blended with the
finest pyramid level taken, pixel by pixel, from the frame of largest |coefficient| (:func:`max_abs_blend`: the coefficient selection of
wavelet-merging tools, which can raise the gradient energy beyond any frame's), everywhere or in
the depth map's edge band only. ``band``: on --count synthetic tuning stacks at --scale times the size
(fusionlab.synthetic.benchmark_stacks' ``scale``), registered, PSNR against the truth of the exact one pass and of
the fast path (work_pixels) with the edge fix's band 16 px wide at full size and 16 working pixels wide.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

from fusionlab import ROOT, stackbench, synthetic
from pyfusion.io import read_image

PROG = "stack_speed"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=("undecided", "align", "sharpness", "detail", "band"))
    ap.add_argument("--scale", type=int, default=4, help="band: the stacks' scale (default 4)")
    ap.add_argument("--stacks", choices=("layered", "occlusion"), default="layered",
                    help="band: the synthetic layered stacks or the occlusion stacks (fusionlab.occlusion)")
    ap.add_argument("--stack", type=Path, default=ROOT.parent / "shared/data/stacks/pcb",
                    help="the real stack's folder (default ../shared/data/stacks/pcb; expected.jpg is not a frame)")
    ap.add_argument("--photos", default=str(ROOT.parent / "shared/data/train/bsds500/val"),
                    help="sharp photos of the synthetic stacks")
    ap.add_argument("--count", type=int, default=12, help="synthetic stacks (default 12; 0: none)")
    ap.add_argument("--levels", default="0,1", help="align: ECC's finest pyramid levels to compare (default 0,1)")
    ap.add_argument("--fused", type=Path, help="sharpness: our fused pcb result")
    ap.add_argument("--offset", default="auto", help="sharpness: X,Y of --fused in the frames (default: from "
                    "pyfusion.align of the stack)")
    ap.add_argument("--crop-size", type=int, default=200, help="sharpness: side of the crops (default 200)")
    ap.add_argument("--windows", default="auto",
                    help="sharpness: the crops' top-left corners X,Y;X,Y;... in the compared region (default auto: "
                         "chosen from --fused and focus-stack's result as the pcb figure chooses them, so for the "
                         "figure's fused image its three crops)")
    ap.add_argument("--no-peer-runs", dest="peer_runs", action="store_false",
                    help="sharpness: do not run focus-stack (default: run it where built, with its defaults and "
                         "with --no-contrast --no-whitebalance, beside its expected.jpg)")
    args = ap.parse_args(argv)
    if args.what == "sharpness" and args.fused is None:
        ap.error("sharpness needs --fused")
    if args.count < 0:
        ap.error("--count must be >= 0")
    return args


def max_abs_blend(frames, labels: np.ndarray, *, levels: int = 4, where: np.ndarray | None = None) -> np.ndarray:
    """The pyramid blend of ``labels`` (:func:`pyfusion.refine_stack.pyramid_blend`, float32) with the finest
    Laplacian level taken from the frame of largest |coefficient| (summed over the channels), where ``where``
    (bool, full size; default everywhere)."""
    from pyfusion.io import from_unit, to_unit
    from pyfusion.refine_stack import collapse_pyramid, gaussian_pyramid, laplacian_pyramid

    pyrs = [list(zip(laplacian_pyramid(to_unit(img, np.float32), levels),
                     gaussian_pyramid((labels == k).astype(np.float32), levels))) for k, img in enumerate(frames)]
    summed = []
    for i in range(levels + 1):
        laps, masks = np.stack([p[i][0] for p in pyrs]), np.stack([p[i][1] for p in pyrs])
        level = (laps * (masks[..., None] if laps.ndim == 4 else masks)).sum(axis=0)
        if i == 0:
            size = np.abs(laps).sum(axis=-1) if laps.ndim == 4 else np.abs(laps)
            pick = np.take_along_axis(laps, size.argmax(axis=0)[None, ..., None] if laps.ndim == 4
                                      else size.argmax(axis=0)[None], axis=0)[0]
            zone = np.ones(labels.shape, bool) if where is None else where
            level = np.where(zone[..., None] if level.ndim == 3 else zone, pick, level)
        summed.append(level)
    return from_unit(collapse_pyramid(summed), frames[0].dtype)


def detail(args) -> str:
    import pyfusion
    from pyfusion.refine_stack import BAND, label_band

    photos = sorted(Path(args.photos).glob("*.jpg"))
    rows = []
    for st in synthetic.benchmark_stacks(photos, count=args.count, seed=1, start=50):
        r = pyfusion.fuse(list(st.frames), method="cnn")
        variants = (r.fused, max_abs_blend(st.frames, r.depth_map),
                    max_abs_blend(st.frames, r.depth_map, where=label_band(r.depth_map, BAND)))
        rows.append([synthetic.psnr(v, st.sharp) for v in variants])
        print(st.name, " ".join(f"{v:.2f}" for v in rows[-1]), file=sys.stderr)
    rows = np.array(rows)
    lines = [f"{len(rows)} tuning stacks (photos 50 and up, seed 1), PSNR (dB) against the truth", "",
             "| blend of the one-pass labels | mean PSNR | vs the one pass: mean (min / max) |", "|---|---:|---:|"]
    names = ("the one pass (4-level pyramid blend)", "finest level by the largest absolute coefficient",
             f"the same in the {BAND}-px edge band only")
    for j, name in enumerate(names):
        d = rows[:, j] - rows[:, 0]
        lines.append(f"| {name} | {rows[:, j].mean():.2f} | {d.mean():+.2f} ({d.min():+.2f} / {d.max():+.2f}) |")
    return "\n".join(lines) + "\n"


def band_table(args) -> str:
    from pyfusion.constants import WORK_PIXELS
    from pyfusion.methods import stack
    from pyfusion.refine_stack import BAND

    from fusionlab import occlusion

    photos = sorted(Path(args.photos).glob("*.jpg"))
    make = occlusion.occlusion_stacks if args.stacks == "occlusion" else synthetic.benchmark_stacks
    rows, factors = [], set()
    for st in make(photos, count=args.count, seed=1, start=50, scale=args.scale):
        frames = list(st.frames)
        f = stack.work_factor(frames[0].shape[:2])
        factors.add(f)
        fused = [stack.fuse(frames)[0], stack.fuse(frames, work_pixels=WORK_PIXELS)[0],
                 stack.fuse(frames, work_pixels=WORK_PIXELS, band=BAND * f)[0]]
        row = [synthetic.psnr(x, st.sharp) for x in fused]
        if args.stacks == "occlusion":   # and in the band around the occlusion edges
            zone = occlusion.band_mask(st.planes, st.radius)
            row += [synthetic.psnr(x[zone], st.sharp[zone]) for x in fused]
        rows.append(row)
        print(st.name, " ".join(f"{v:.2f}" for v in rows[-1]), file=sys.stderr)
    rows = np.array(rows)
    shape = "x".join(str(v) for v in frames[0].shape[1::-1])
    band = args.stacks == "occlusion"
    lines = [f"{len(rows)} {args.stacks} tuning stacks (photos 50 and up, seed 1) at scale {args.scale} (e.g. {shape}; "
             f"working downscale {', '.join(map(str, sorted(factors)))}), registered, PSNR (dB) against the truth", "",
             "| one pass | mean PSNR | vs exact: mean (min / max) |" + (" band PSNR | vs exact |" if band else ""),
             "|---|---:|---:|" + ("---:|---:|" if band else "")]
    for j, name in enumerate(("exact (full resolution)", f"fast, band {BAND} px (the default)",
                              f"fast, band {BAND} working px")):
        cells = []
        for c in ((j, j + 3) if band else (j,)):
            d = rows[:, c] - rows[:, c - j]
            cells.append(f" {rows[:, c].mean():.2f} | {d.mean():+.2f} ({d.min():+.2f} / {d.max():+.2f}) |")
        lines.append(f"| {name} |" + "".join(cells))
    return "\n".join(lines) + "\n"


def real_frames(stack: Path) -> list:
    return [read_image(p) for p in sorted(stack.glob("*.jpg")) if p.name != "expected.jpg"]


def undecided(args) -> str:
    from pyfusion.align import align

    lines = ["| stack | frames | size | margin | floor | undecided | labels as the one pass | work, 64x64 tiles | "
             "work, 256x256 tiles |", "|---|---:|---|---:|---:|---:|---:|---:|---:|"]

    def add(name, frames):
        for r in stackbench.undecided_survey(frames):
            lines.append(f"| {name} | {len(frames)} | {frames[0].shape[1]}x{frames[0].shape[0]} | {r['margin']:g} | "
                         f"{r['floor']:g} | {r['undecided']:.1%} | {r['agree']:.2%} | {r['work']['64x64']:.2f} | "
                         f"{r['work']['256x256']:.2f} |")
        print(lines[-1], file=sys.stderr)

    if args.stack.is_dir():
        add(args.stack.name, align(real_frames(args.stack))[0])
    photos = sorted(Path(args.photos).glob("*.jpg"))
    for st in synthetic.benchmark_stacks(photos, count=args.count, seed=0) if args.count else ():
        add(st.name, list(st.frames))
    return "\n".join(lines) + "\n"


def align_table(args) -> str:
    photos = sorted(Path(args.photos).glob("*.jpg"))
    levels = tuple(int(v) for v in args.levels.split(","))
    rows = [stackbench.align_check(st, levels=levels)
            for st in synthetic.benchmark_stacks(photos, count=args.count, seed=0)]
    lines = ["| ECC's finest level | seconds (mean) | corner error px (mean / worst) | one-pass PSNR dB (mean) |",
             "|---|---:|---:|---:|"]
    for level in rows[0]["levels"]:
        v = [r["levels"][level] for r in rows]
        err = [x["corner_error_px"] for x in v]
        lines.append(f"| {level} ({'full size' if level == 0 else f'1/{2 ** level} size'}) | "
                     f"{np.mean([x['seconds'] for x in v]):.3f} | {np.mean(err):.3f} / {np.max(err):.3f} | "
                     f"{np.mean([x['psnr'] for x in v]):.3f} |")
    lines.append(f"| true transforms | | 0 | {np.mean([r['true_warp'] for r in rows]):.3f} |")
    return f"{len(rows)} synthetic hand-held stacks (seed 0, one thread)\n\n" + "\n".join(lines) + "\n"


#: focus-stack's runs beside its expected.jpg: its defaults, and without its contrast and white-balance matching.
PEER_RUNS = (("focus-stack, run here", ()), ("focus-stack --no-contrast --no-whitebalance",
                                              ("--no-contrast", "--no-whitebalance")))


def sharpness_table(args) -> str:
    from pyfusion.align import align

    from fusionlab.occlusion import FOCUS_STACK, focus_stack_fuse

    ours = read_image(args.fused)
    raw = real_frames(args.stack)
    aligned, report = align(raw)
    x, y = report.crop[:2] if args.offset == "auto" else (int(v) for v in args.offset.split(","))
    others = {"focus-stack's expected.jpg": read_image(args.stack / "expected.jpg")}
    if args.peer_runs and FOCUS_STACK.is_file():
        for label, options in PEER_RUNS:
            others[label] = focus_stack_fuse(raw, threads=None, options=options)
    registered = {k: stackbench.agreement(ours, v, offset=(x, y)) for k, v in others.items()}
    ag = registered["focus-stack's expected.jpg"]
    cx, cy, cw, ch = ag["crop"]
    frames = [f[cy:cy + ch, cx:cx + cw] for f in aligned]   # the aligned frames on ours' compared pixels
    if args.windows == "auto":
        windows = stackbench.figure_windows(ag["ours"], ag["other"], size=args.crop_size)
    else:
        windows = [(*(int(v) for v in xy.split(",")), args.crop_size, args.crop_size)
                   for xy in args.windows.split(";")]
    energy = np.stack([np.square(stackbench.detail_energy(f)) for f in frames])
    ceiling = energy.max(axis=0)    # no image made of the frames' pixels has more, pixel by pixel
    del energy
    images = {"ours": ag["ours"], **{k: v["other"] for k, v in registered.items()}}
    head = "| crop (x, y, w, h) | " + " | ".join(images) + " | "
    lines = [head + "ours / each other | sharpest single frame | per-pixel maximum of the frames |",
             "|---|" + "---:|" * (len(images) + 3)]
    spread = [head + "sharpest single frame |", "|---|" + "---:|" * (len(images) + 1)]
    for w in windows:
        e = {k: stackbench.sharpness(v, w) for k, v in images.items()}
        single = [stackbench.sharpness(f, w) for f in frames]
        best = int(np.argmax(single))
        x0, y0, ww, hh = w
        top = float(ceiling[y0:y0 + hh, x0:x0 + ww].mean())
        ratios = " / ".join(f"{e['ours'] / e[k]:.2f}" for k in registered)
        lines.append(f"| {tuple(int(v) for v in w)} | " + " | ".join(f"{v:.3f}" for v in e.values()) +
                     f" | {ratios} | {single[best]:.3f} | {top:.3f} |")
        spread.append(f"| {tuple(int(v) for v in w)} | " + " | ".join(
            f"{stackbench.gray_spread(v, w):.4f}" for v in images.values()) +
            f" | {stackbench.gray_spread(frames[best], w):.4f} |")
    print("windows: " + ";".join(f"{int(w[0])},{int(w[1])}" for w in windows), file=sys.stderr)
    ref = len(raw) // 2
    gains = [stackbench.mean_ratio(aligned[ref], f) for f in aligned]
    gain_line = "; ".join(f"{k + 1}: " + "/".join(f"{g:.3f}" for g in gk) for k, gk in enumerate(gains))
    return (f"mean gradient energy (mean squared Sobel magnitude, gray in [0, 1]) of {args.fused.name}, of "
            f"focus-stack's results registered to it, and of the aligned frames\n\n" + "\n".join(lines) +
            "\n\nstandard deviation of the gray (contrast) in the same crops\n\n" + "\n".join(spread) +
            f"\n\nreference frame's mean over each aligned frame's, R/G/B (unsaturated pixels): {gain_line}\n")


def main(argv=None) -> int:
    args = parse_args(argv)
    t0 = time.perf_counter()
    text = {"undecided": undecided, "align": align_table, "sharpness": sharpness_table,
            "detail": detail, "band": band_table}[args.what](args)
    print(text)
    print(f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
