#!/usr/bin/env python
"""A real focus stack (default ../shared/data/stacks/pcb: 7 hand-held frames, 2048x1536, and focus-stack's result
expected.jpg; github.com/PetteriAimonen/focus-stack, MIT licence) fused by tools/fuse.py --align --depth, timed
and its peak memory measured; then compared with the other tool's result (registered to ours, PSNR/SSIM as
agreement only: neither is ground truth) in a figure of crops side by side and our depth map.

    python -m fusionlab pcb-figure --figure docs/figures/pcb.png --doc docs/stacks.md

--variant OPTIONS fuses the stack a second time with these extra tools/fuse.py options (default
"--region-ratio 0.01": the paper's small-region area, instead of the one-pass default 0.003) and shows it
beside. The crops: the two most
detailed regions of our result and the region where it differs most from the other tool's.

Writes OUT/fused.png, OUT/depth.png (+ _index.png), OUT/run.json (command, CPU and wall seconds, peak memory),
the same under OUT/variant/, and OUT/pcb.json (everything, agreement and crops included); with --doc the section
between <!-- stack_pcb:start --> and <!-- stack_pcb:end --> of that file. --reuse keeps earlier fusions in OUT
(same options) and redoes only the comparison and the figure.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import sys
from pathlib import Path


import numpy as np  # noqa: E402

from fusionlab import stackbench  # noqa: E402
from fusionlab.docblocks import replace_block  # noqa: E402
from pyfusion.io import read_image, to_gray, to_unit, write_atomic  # noqa: E402
from fusionlab.synthetic import scores  # noqa: E402

from fusionlab import ROOT
PROG = "pcb_figure"
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".tif", ".tiff"}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stack", type=Path, default=ROOT.parent / "shared/data/stacks/pcb", help="folder of the frames")
    ap.add_argument("--expected", default="expected.jpg", help="the other tool's result in --stack (default "
                    "expected.jpg; not a frame)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs/stacks/pcb", help="our outputs (default runs/stacks/pcb)")
    ap.add_argument("--figure", type=Path, default=ROOT / "docs/figures/pcb.png", help="the figure (PNG)")
    ap.add_argument("--doc", type=Path, help="markdown file for the section (between its stack_pcb markers)")
    ap.add_argument("--threads", type=int, default=1, help="threads of the fusion (default 1)")
    ap.add_argument("--variant", default="--region-ratio 0.01",
                    help="extra tools/fuse.py options of a second fusion shown beside ('' for none)")
    ap.add_argument("--variant-label", default="ours, r=0.01", help="its name in the figure and the doc")
    ap.add_argument("--crop-size", type=int, default=200, help="side of the crops in px, shown 1:1 (default 200)")
    ap.add_argument("--max-kb", type=int, default=400, help="largest figure size in KB (default 400)")
    ap.add_argument("--reuse", action="store_true", help="keep earlier fusions in --out")
    return ap.parse_args(argv)


def frames_of(stack: Path, expected: str) -> list[Path]:
    """The frames: the images of ``stack`` in name order, the other tool's result left out."""
    return sorted(p for p in stack.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.name != expected)


def fuse_stack(frames, out: Path, *, threads: int, extra=()) -> dict:
    """tools/fuse.py --align --depth (plus ``extra`` options) on the frames into ``out``, measured
    (:func:`fusionlab.stackbench.measure_command`); the alignment's crop, correlations and stage times are read
    from its ``-v`` output."""
    out.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, ROOT / "tools/fuse.py", *frames, "-o", out / "fused.png", "--align", "--depth",
           out / "depth.png", "--threads", str(threads), *extra, "--force", "-v"]
    m = stackbench.measure_command(cmd, cwd=ROOT)
    if m["returncode"] != 0:
        raise RuntimeError(f"tools/fuse.py failed ({m['returncode']}): {m['output'].strip()[-500:]}")
    log = m["output"]
    found = re.search(r"align crop\s*:\s*(\d+)x(\d+) at \((\d+), (\d+)\)", log)
    stages = {k: float(v) for k, v in re.findall(r"^time (\w+)\s*: ([\d.]+) s", log, re.M)}
    correlations = {Path(n).name: float(c) for n, c in re.findall(r"^align\s+: (\S+) correlation ([\d.]+)", log, re.M)}
    return {"command": " ".join(os.path.relpath(str(c), ROOT) if isinstance(c, Path) else str(c) for c in cmd[1:]),
            "extra": list(extra), "frames": [p.name for p in frames], "threads": threads, "seconds": m["seconds"],
            "cpu_seconds": m["cpu_seconds"], "peak_bytes": m["peak_bytes"], "peak_from": m["peak_from"],
            "stages": stages, "correlations": correlations,
            "crop": [int(found[3]), int(found[4]), int(found[1]), int(found[2])] if found else None}


def fused_run(frames, out: Path, *, threads: int, extra, reuse: bool) -> dict:
    """The run in ``out``: an earlier one with the same options when ``reuse``, else :func:`fuse_stack`."""
    record = out / "run.json"
    if reuse and record.is_file() and (out / "fused.png").is_file():
        run = json.loads(record.read_text(encoding="utf-8"))
        if run["extra"] == list(extra) and run["threads"] == threads and run["frames"] == [p.name for p in frames]:
            return run
    print(f"{PROG}: fusing {len(frames)} frames into {out} ...", file=sys.stderr)
    run = fuse_stack(frames, out, threads=threads, extra=extra)
    write_atomic(record, json.dumps(run, indent=1) + "\n")
    return run


def window_psnr(a, b, w) -> float:
    x, y, s, t = w
    return scores(a[y:y + t, x:x + s], b[y:y + t, x:x + s])["psnr"]


def _cut(img, crop):
    x, y, w, h = crop
    return img[y:y + h, x:x + w]


def compare(runs: dict, expected_path: Path, *, size: int) -> tuple[dict, np.ndarray]:
    """Agreement of each of our results (``runs``: label -> (run, folder); the first one chooses the crops) with
    the other tool's result, and the figure; returns ``(numbers, figure)``."""
    (label0, (run0, out0)), *others = runs.items()
    ours, expected = read_image(out0 / "fused.png"), read_image(expected_path)
    x, y = (run0["crop"][:2] if run0["crop"] else ((expected.shape[1] - ours.shape[1]) // 2,
                                                   (expected.shape[0] - ours.shape[0]) // 2))
    ag = stackbench.agreement(ours, expected, offset=(x, y))
    a, b = ag["ours"], ag["other"]
    detail = stackbench.pick_windows(stackbench.detail_energy(a), size=size, count=2, margin=size // 4)
    diff = np.abs(to_gray(to_unit(a)) - to_gray(to_unit(b)))
    worst = stackbench.pick_windows(diff, size=size, count=1, taken=detail, margin=size // 4)
    windows = detail + worst
    kinds = ["most detail"] * len(detail) + ["largest difference"] * len(worst)
    images = {label0: a}
    for label, (run, out) in others:
        if run["crop"] != run0["crop"]:
            raise RuntimeError(f"{label}: aligned to another crop ({run['crop']}) than {label0} ({run0['crop']})")
        images[label] = _cut(read_image(out / "fused.png"), ag["crop"])
    results = {label: {"psnr": scores(img, b)["psnr"], "ssim": scores(img, b)["ssim"],
                       "windows": [window_psnr(img, b, w) for w in windows]} for label, img in images.items()}
    captions = [f"{i + 1}. {k} at ({w[0]}, {w[1]}); PSNR to focus-stack: "
                + ", ".join(f"{r['windows'][i]:.1f}" for r in results.values()) + " dB"
                for i, (k, w) in enumerate(zip(kinds, windows))]
    depth = _cut(read_image(out0 / "depth.png"), ag["crop"])
    fig = stackbench.comparison_figure([*images.values(), b], depth, windows, captions=captions,
                                       names=[*images, "focus-stack"])
    numbers = {"compared": [int(v) for v in ag["crop"]], "compared_size": list(a.shape[:2][::-1]),
               "transform": np.round(ag["transform"], 5).tolist(), "results": results,
               "windows": [{"box": list(map(int, w)), "kind": k} for w, k in zip(windows, kinds)]}
    return numbers, fig


def _run_line(label: str, run: dict) -> str:
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in run["stages"].items() if k != "total")
    return (f"{label}: {run['cpu_seconds']:.1f} s of CPU for the whole command, {run['seconds']:.1f} s wall on "
            f"this (shared) machine (stages, wall: {stages}); peak resident memory "
            f"{run['peak_bytes'] / 2**30:.2f} GiB (`{run['peak_from']}`)")


def _short_command(run: dict) -> str:
    """The command with the frames between the first and the last elided."""
    words = run["command"].split(" ")
    idx = [i for i, w in enumerate(words) if Path(w).name in run["frames"]]
    if len(idx) > 2:
        words = words[:idx[0] + 1] + ["..."] + words[idx[-1]:]
    return " ".join(words)


def section(runs: dict, numbers: dict, figure: Path, doc: Path | None, how: str) -> str:
    """The markdown of the pcb section."""
    link = os.path.relpath(figure, doc.parent if doc else ROOT / "docs")
    (label0, (run0, _)), *others = runs.items()
    cw, ch = numbers["compared_size"]
    lines = [f"`python {_short_command(run0)}` on the {len(run0['frames'])} frames "
             f"({', '.join(run0['frames'])}), one pass, {run0['threads']} thread(s); measured by "
             f"`python -m fusionlab pcb-figure`"
             + (" (which also runs " + ", ".join(f"`{' '.join(r['extra'])}`" for r, _ in dict(others).values())
                + ")" if others else "") + ":", ""]
    lines += [f"- {_run_line(label, run)}" for label, (run, _) in runs.items()]
    lines.append("- alignment: correlations " + ", ".join(f"{n} {c:.3f}" for n, c in run0["correlations"].items())
                 + (f"; common region {run0['crop'][2]}x{run0['crop'][3]} at ({run0['crop'][0]}, {run0['crop'][1]})"
                    if run0["crop"] else ""))
    lines.append(f"- agreement with focus-stack's `expected.jpg` (registered to ours by ECC, affine; compared on "
                 f"{cw}x{ch} px; not ground truth), PSNR / SSIM: "
                 + "; ".join(f"{label} {r['psnr']:.2f} dB / {r['ssim']:.4f}"
                             for label, r in numbers["results"].items()))
    for i, w in enumerate(numbers["windows"]):
        lines.append(f"- crop {i + 1}, {w['kind']} at ({w['box'][0]}, {w['box'][1]}), PSNR to focus-stack: "
                     + "; ".join(f"{label} {r['windows'][i]:.1f} dB" for label, r in numbers["results"].items()))
    lines += ["", f"![pcb: crops of ours beside focus-stack's, our depth map]({link})", "",
              f"Figure: left, the crops ({', '.join(numbers['results'])}, then `expected.jpg`) on the same pixels, "
              f"1:1; right, {label0} with the crops outlined, and its depth map (viridis: first frame dark, last "
              f"bright). PNG {how}."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    expected = args.stack / args.expected
    if not expected.is_file():
        print(f"{PROG}: error: {expected} not found", file=sys.stderr)
        return 2
    frames = frames_of(args.stack, args.expected)
    if len(frames) < 2:
        print(f"{PROG}: error: fewer than two frames in {args.stack}", file=sys.stderr)
        return 2
    variant = shlex.split(args.variant)
    plan = {"ours": (args.out, ())}
    if variant:
        plan[args.variant_label] = (args.out / "variant", variant)
    runs = {label: (fused_run(frames, out, threads=args.threads, extra=extra, reuse=args.reuse), out)
            for label, (out, extra) in plan.items()}
    numbers, fig = compare(runs, expected, size=args.crop_size)
    data, how = stackbench.encode_png(fig, max_bytes=args.max_kb * 1024)
    args.figure.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(args.figure, data)
    how = f"{how}, {len(data) / 1024:.0f} KB"
    write_atomic(args.out / "pcb.json", json.dumps({"runs": {k: r for k, (r, _) in runs.items()}, "agreement": numbers,
                                                    "figure": str(args.figure), "png": how}, indent=1) + "\n")
    text = section(runs, numbers, args.figure, args.doc, how)
    print(text)
    if args.doc:
        replace_block(args.doc, "stack_pcb", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
