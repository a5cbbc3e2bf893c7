#!/usr/bin/env python
"""Seconds and peak memory of long focus stacks fused with `pyfusion fuse`, which reads the frames as needed.

    python -m fusionlab stack-memory                                  # 10, 50, 100 frames of 3 and 12 MP
    python -m fusionlab stack-memory --frames 100 --sizes 12 --budget 0   # one case, whatever it takes

Each stack is made under --work (made once, kept): frame k is the pcb stack's frame k mod 7
(../shared/data/stacks/pcb, 2048x1536 JPEG: "3 MP", the files' own bytes) or that frame resized to 4000x3000
(bicubic, OpenCV's JPEG quality 95: "12 MP"). Each case is one `pyfusion fuse` process (the cnn method in one pass, no
alignment, default options) whose wall time, CPU time and peak resident memory (the kernel's maximum RSS of the
child, os.wait4) are measured. Results go to --json (kept between runs: a case already measured is not run
again unless --fresh) and, with every case, measured or not, into the `stack-memory` block of docs/benchmarks.md.
Cases run in the order of their frame counts, each size in turn; with --budget S a case is skipped when the per-frame seconds of its size measured so
far say it would end after S seconds of this run.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2

from fusionlab import ROOT
from fusionlab.docblocks import replace_block
from pyfusion.fusion import STACK_MEMORY
from pyfusion.io import read_image, write_image

PROG = "fusionlab stack-memory"
BLOCK = "stack-memory"
#: Frame sizes by name: None keeps the pcb frames as they are.
SIZES = {"3": None, "12": (4000, 3000)}


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", default="10,50,100", help="frame counts (default 10,50,100)")
    ap.add_argument("--sizes", default="3,12", help=f"frame sizes in MP, of {', '.join(SIZES)} (default 3,12)")
    ap.add_argument("--stack", type=Path, default=ROOT.parent / "shared/data/stacks/pcb",
                    help="the frames cycled (default ../shared/data/stacks/pcb; expected.jpg is not a frame)")
    ap.add_argument("--work", type=Path, default=ROOT / "runs/stack_memory", help="stacks and outputs")
    ap.add_argument("--json", type=Path, default=ROOT / "runs/stack_memory/results.json", help="results (kept)")
    ap.add_argument("--doc", type=Path, default=ROOT / "docs/benchmarks.md", help="its stack-memory block")
    ap.add_argument("--budget", type=float, default=2400, help="seconds for this run (0: no limit; default 2400)")
    ap.add_argument("--fresh", action="store_true", help="measure every case again")
    ap.add_argument("--no-run", action="store_true", help="measure nothing: rewrite the block from --json")
    args = ap.parse_args(argv)
    try:
        args.frames = [int(x) for x in args.frames.split(",")]
        args.sizes = [x.strip() for x in args.sizes.split(",")]
    except ValueError:
        ap.error("--frames takes integers separated by commas")
    if any(n < 3 for n in args.frames) or any(s not in SIZES for s in args.sizes):
        ap.error(f"--frames must be >= 3 and --sizes of {', '.join(SIZES)}")
    return args


def make_stack(frames: list, size: str, n: int, work: Path) -> list[Path]:
    """The ``n`` frame files of ``size`` under ``work`` (made once): frame k from source frame k mod len."""
    folder = work / f"{size}mp_{n}"
    paths = [folder / f"frame_{k:03d}.jpg" for k in range(n)]
    if all(p.exists() for p in paths):
        return paths
    folder.mkdir(parents=True, exist_ok=True)
    sources = []
    for k, src in enumerate(frames):
        if SIZES[size] is None:
            sources.append(src)
            continue
        resized = work / f"{size}mp_source_{k}.jpg"
        if not resized.exists():
            write_image(resized, cv2.resize(read_image(src), SIZES[size], interpolation=cv2.INTER_CUBIC))
        sources.append(resized)
    for k, p in enumerate(paths):
        shutil.copyfile(sources[k % len(sources)], p)
    return paths


def revision() -> str:
    """The last commit that changed pyfusion/, with ``+changes`` where pyfusion/ differs from it (the code a case
    ran)."""
    git = ["git", "-C", str(ROOT)]
    head = subprocess.run([*git, "log", "-1", "--format=%h", "--", "pyfusion"], capture_output=True,
                          text=True).stdout.strip()
    dirty = subprocess.run([*git, "status", "--porcelain", "pyfusion"], capture_output=True, text=True).stdout.strip()
    return (head or "unknown") + ("+changes" if dirty else "")


def measure(paths: list[Path], out: Path) -> dict:
    """One `pyfusion fuse` process over ``paths``: wall and CPU seconds, peak RSS (bytes), exit status."""
    code = revision()
    cmd = [sys.executable, "-m", "pyfusion", "fuse", *map(str, paths), "-o", str(out), "--force"]
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    err = child.stderr.read().decode(errors="replace").strip()
    child.stderr.close()
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_bytes": usage.ru_maxrss * 1024,
            "status": os.waitstatus_to_exitcode(status), "error": err.splitlines()[-1] if err else "",
            "load_start": load, "load_end": os.getloadavg()[0],
            "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "revision": code}


def cpu_name() -> str:
    """The CPU's model name (/proc/cpuinfo), else the machine type."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.machine()


def key(size: str, n: int) -> str:
    return f"{size}mp_{n}"


def table(results: dict, frames: list, sizes: list, first_frame: dict) -> str:
    """The markdown block: every case, measured or not."""
    rows = ["| frames | size | wall s | CPU s | s per frame | peak RSS GiB | load average at start / end |",
            "|---:|---|---:|---:|---:|---:|---|"]
    missing = []
    for size in sizes:
        for n in frames:
            r = results.get(key(size, n))
            dims = first_frame.get(size, "")
            if r is None or r["status"] != 0:
                why = "not measured" if r is None else f"failed ({r['error']})"
                rows.append(f"| {n} | {dims} | {why} | | | | |")
                missing.append(f"python -m fusionlab stack-memory --frames {n} --sizes {size} --budget 0")
                continue
            rows.append(f"| {n} | {dims} | {r['wall_s']:.0f} | {r['cpu_s']:.0f} | {r['wall_s'] / n:.1f} | "
                        f"**{r['peak_bytes'] / 2**30:.2f}** | {r['load_start']:.1f} / {r['load_end']:.1f} |")
    dates = sorted({r["date"] for r in results.values()})
    lines = [
        "## Long stacks: seconds and peak memory",
        "",
        "Written by `python -m fusionlab stack-memory`; do not edit by hand.",
        "",
        f"Focus stacks of N frames fused by `pyfusion fuse F1 ... FN -o fused.png` (cnn, one pass, no alignment, "
        f"default options: the default cap of {STACK_MEMORY:g} GiB, every core), which reads each frame from its "
        "file when a pass needs it (`pyfusion.io.FrameSequence`) instead of holding them all. Frame k is the pcb "
        "stack's frame k mod 7 (2048x1536 JPEG) or that frame resized to 4000x3000 (JPEG quality 95). Whole "
        "processes, reading the files and writing the result included; peak RSS is the child's maximum resident "
        "memory (`os.wait4`). There `--max-memory GB` caps the process's resident memory while it fuses: what "
        "the process holds and the stack's maps (about 140 + 8 x channels bytes per pixel) are taken from it and "
        "the network's tiles get the rest; a cap below what the maps need is refused.",
        "",
        f"* Machine: {cpu_name()}, {os.cpu_count()} cores, shared with other "
        f"jobs (the load average says how busy); Python {platform.python_version()}",
        f"* Dates: {dates[0]} to {dates[-1]}" if dates else "* Dates: none measured",
        f"* pyfusion/ as of commit {', '.join(sorted({r.get('revision', 'unknown') for r in results.values()}))}",
        "* Wall seconds follow the other jobs' load (the load average over the last minute at the start and end); "
        "the peak memory does not depend on them.",
        "",
        *rows,
    ]
    if missing:
        lines += ["", "The cases not measured (too long for the run's time on this machine) are measured by:", "",
                  "```bash", *missing, "```"]
    return "\n".join(lines)


def main(argv=None) -> int:
    args = parse_args(argv)
    frames = sorted(p for p in args.stack.glob("*.jpg") if p.name != "expected.jpg")
    if not frames:
        print(f"{PROG}: error: no frames in {args.stack}", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    results = {} if args.fresh or not args.json.exists() else json.loads(args.json.read_text())
    start = time.perf_counter()
    first_frame = {}
    for n in sorted(args.frames):
        for size in sorted(args.sizes, key=float):
            paths = make_stack(frames, size, n, args.work)
            h, w = read_image(paths[0]).shape[:2]
            first_frame[size] = f"{w}x{h}"
            if args.no_run or (key(size, n) in results and results[key(size, n)]["status"] == 0):
                continue
            done = [r for k, r in results.items() if k.startswith(f"{size}mp_") and r["status"] == 0]
            per_frame = max((r["wall_s"] / r["frames"] for r in done), default=0.0)
            if args.budget and time.perf_counter() - start + per_frame * n > args.budget:
                print(f"{PROG}: {n} frames of {size} MP: skipped (about {per_frame * n:.0f} s, over --budget)")
                continue
            r = measure(paths, args.work / f"fused_{key(size, n)}.png")
            r["frames"], r["size"] = n, first_frame[size]
            results[key(size, n)] = r
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(results, indent=1))
            print(f"{PROG}: {n} frames of {r['size']}: {r['wall_s']:.0f} s, peak {r['peak_bytes'] / 2**30:.2f} GiB"
                  + (f", FAILED: {r['error']}" if r["status"] else ""), flush=True)
            replace_block(args.doc, BLOCK, table(results, args.frames, args.sizes, first_frame))
    print(table(results, args.frames, args.sizes, first_frame))
    replace_block(args.doc, BLOCK, table(results, args.frames, args.sizes, first_frame))
    return 0


if __name__ == "__main__":
    sys.exit(main())
