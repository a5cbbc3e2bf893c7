#!/usr/bin/env python
"""Benchmark the Caffe twin and the fast backends (winograd, ONNX Runtime) side by side on the same inputs.

    python tools/benchmark.py --out docs/benchmarks.md
    python tools/benchmark.py --sizes 256,520 --backends winograd,onnx,caffe --model models/cnn_fusion.caffemodel

For every size (256x256 and 520x520: a Lytro pair from ../shared/data/mfif/sources/color when present, else
synthetic; 4000x3000: synthetic) and backend, one fresh child process runs the whole pipeline of
``pyfusion.fuse`` and reports per stage the wall time and the peak RSS (VmHWM, reset before each stage through
/proc/self/clear_refs): read (both sources), score map (``pyfusion.net.score_map``, tiled to --max-memory),
post-processing (focus map, small-region removal, guided filter, weighted average) and write. The parent
compares each fast backend's score map with the Caffe twin's (max |Δscore|, score-map speed-up) and writes a
markdown table (atomically) with the machine (CPU model, cores, memory, load) and whether the training run
(tools/train.py) was competing for the CPU.

Model: --model, else the shipped models/cnn_fusion.caffemodel (+ .onnx), else the latest runs/cpu snapshot
(exported to a temporary deploy caffemodel + ONNX), else random weights (then the table says so).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from fusionlab import ROOT

SHARED = Path(os.environ.get("PYFUSION_SHARED", ROOT.parent / "shared" / "data"))
LYTRO = SHARED / "mfif" / "sources" / "color"
DEFAULT_SIZES = "256,520,4000x3000"
TARGETS = {"e2e_520_s": 1.0, "speedup": 25.0, "dscore": 1e-4, "big_s": 60.0, "big_rss_gib": 4.0}


NOTES = """## What is measured, and why the fast path is faster

* **Caffe twin** (reference): `prototxt/cnn_deploy.prototxt` in pycaffe. Its head is fc1 as an 8x8 convolution
  (512 -> 256 channels) and fc2 as a 1x1 convolution: 537 GMAC at 520x520, more than the whole trunk, and an
  im2col buffer of 512*64 floats per score (~8.4 GB at 520x520). Tiled above the memory budget.
* **winograd** (`pyfusion.backends.winograd`, C kernels in `pyfusion/backends/_winograd.c`, the default): the same folded net
  (weights read from the ONNX file). conv2 and conv3 by Winograd F(4x4, 3x3): 36 instead of 144 multiplications
  per 4x4 output tile and channel pair (~20 instead of ~80 GMAC per 520x520 pair), each block of 18 tiles
  transformed, multiplied (a register-blocked 6x16 AVX2/FMA kernel, no BLAS), transformed back, biased,
  rectified and pooled while it is in cache; conv1 computed inside conv2's blocks and conv3 straight into the
  head's tap products; OpenMP threads = cores; channels-last maps, one source at a time (~190 B per input pixel
  at peak, `pyfusion.backends.winograd.bytes_needed`). Scores within 1e-5 of ONNX Runtime (rounding of the transforms), independent
  of the thread count; its tiles start on its 4x4 tile grid, so tiled scores are bit-identical.
* **ONNX Runtime** (`fusionlab.onnx_export`): fc2 . fc1 folded into one 1x512x8x8 filter and softmax -> sigmoid
  of the logit difference (256x less head work, computed as a 1x1 convolution to 64 tap maps plus a shifted
  sum), both sources in one batch of two, NCHWc convolution kernels, intra-op threads = cores, no memory arena
  (tiles of different sizes must not pin the largest). Left: conv2 (64 -> 128, 3x3 at full resolution) and conv3
  (128 -> 256, 3x3 at half resolution), ~20 GMAC each per source at 520x520: ~95% of the time (ORT profile).
* **Tiles** (`pyfusion.tiling.tile_plan`): overlapping, on the stride-2 grid, 4-pixel halo before and 4 after the
  16-pixel patches (winograd: starts on multiples of 8, halos of 8 to 17), interior padding rows dropped: scores
  identical to whole-image inference (tests/test_net.py, tests/test_winograd.py: bit-identical for winograd; to
  float rounding, <= 1e-6, for ONNX Runtime and Caffe, whose kernels block the work by the tile size). Memory model: ONNX Runtime ~1.5 KB per
  input pixel of a tile (both sources, measured), Caffe `pyfusion.backends.caffe.peak_bytes`.
* **Post-processing** (focus map: summed-area table; small-region removal: `scipy.ndimage.label` + bincount;
  guided filter: cumulative-sum box filters; weighted average) is O(pixels) in time and memory, float64; its
  peak RSS is the `post` column.
"""


# ------------------------------------------------------------------------------------------------ child side
def _hwm_reset() -> None:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:  # pragma: no cover - not Linux / no permission: VmHWM then is a running maximum
        pass


def _hwm() -> int:
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


def child(args) -> int:
    """Run one configuration; print one JSON line with per-stage seconds and peak bytes."""
    import numpy as np

    from pyfusion import backends, fuse, models, net, tiling
    from pyfusion.io import read_image, write_image

    stages, peaks = {}, {}
    model = Path(args.model)
    spec, be = models.resolve(model)[0], backends.get(args.backend)
    max_memory = int(args.max_memory * 2**30)
    t = time.perf_counter()
    warm = np.zeros((32, 32), np.float32)
    net.score_map(warm, warm, model=model, backend=args.backend)
    from pyfusion.fusion import _method

    _method("cnn")  # the method's modules are imported on first use: count that with the model load, not in prep
    stages["load"] = time.perf_counter() - t

    _hwm_reset()
    t = time.perf_counter()
    imgs = [read_image(p) for p in args.inputs]
    stages["read"], peaks["read"] = time.perf_counter() - t, _hwm()
    h, w = imgs[0].shape[:2]
    tile = tiling.choose_tile(h, w, model=spec, backend=be, max_bytes=max_memory)
    box = {}

    def score_fn(a, b):
        t0 = time.perf_counter()
        box["prep"], box["prep_peak"] = t0 - box["fuse_start"], _hwm()
        _hwm_reset()
        t0 = time.perf_counter()
        s = net.score_map(a, b, model=model, backend=args.backend, max_bytes=max_memory)
        box["score"], box["score_peak"] = time.perf_counter() - t0, _hwm()
        _hwm_reset()
        box["post_start"] = time.perf_counter()
        return s

    _hwm_reset()
    box["fuse_start"] = time.perf_counter()
    result = fuse(imgs, score_fn=score_fn)
    stages["prep"], peaks["prep"] = box["prep"], box["prep_peak"]
    stages["score_map"], peaks["score_map"] = box["score"], box["score_peak"]
    stages["post"], peaks["post"] = time.perf_counter() - box["post_start"], _hwm()
    _hwm_reset()
    t = time.perf_counter()
    write_image(args.output, result.fused, force=True)
    stages["write"], peaks["write"] = time.perf_counter() - t, _hwm()
    np.save(args.scores, result.score_map.astype(np.float32))
    print(json.dumps({"stages": stages, "peaks": peaks, "tile": list(tile),
                      "tiles": len(tiling.tile_plan(h, w, tile, model=spec, backend=be)), "fuse_timings": result.timings}))
    return 0


# ----------------------------------------------------------------------------------------------- parent side
def machine() -> dict:
    """CPU model, cores, memory, load average, and whether tools/train.py is running."""
    cpu = next((ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
               platform.processor())
    mem = next((int(ln.split()[1]) * 1024 for ln in open("/proc/meminfo") if ln.startswith("MemTotal:")), 0)
    training = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if "tools/train.py" in cmd:
                training.append(pid)
    nice = {}
    for pid in training:
        try:
            nice[pid] = os.getpriority(os.PRIO_PROCESS, int(pid))
        except OSError:
            pass
    return {"cpu": cpu, "cores": os.cpu_count(), "mem_gib": mem / 2**30, "load": os.getloadavg(),
            "training_pids": training, "training_nice": nice, "nice": os.nice(0),
            "python": platform.python_version()}


def _synthetic_pair(h: int, w: int, seed: int = 0):
    """A multi-focus pair: a textured scene, left half sharp in A, right half sharp in B (uint8 RGB)."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(seed)
    scene = np.zeros((h, w, 3), np.float32)
    for scale in (4, 16, 64):  # texture at several scales
        small = rng.random((h // scale + 2, w // scale + 2, 3), dtype=np.float32)
        scene += cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)[:h, :w] / 3
    scene = np.clip(scene, 0, 1)
    blur = cv2.GaussianBlur(scene, (0, 0), 3.0)
    left = np.zeros((h, w, 1), bool)
    left[:, : w // 2] = True
    a = (np.where(left, scene, blur) * 255 + 0.5).astype(np.uint8)
    b = (np.where(left, blur, scene) * 255 + 0.5).astype(np.uint8)
    return a, b


def make_inputs(size: str, folder: Path):
    """Two source files for ``size`` ("256", "520" or "WxH"); returns (paths, description)."""
    import cv2

    from pyfusion.io import read_image

    w, h = (int(x) for x in size.split("x")) if "x" in size else (int(size), int(size))
    pair = LYTRO / "c_01_1.tif", LYTRO / "c_01_2.tif"
    if max(w, h) <= 520 and all(p.is_file() for p in pair):
        imgs = [read_image(p) for p in pair]
        H, W = imgs[0].shape[:2]
        if H >= h and W >= w:
            y, x = (H - h) // 2, (W - w) // 2
            imgs = [im[y:y + h, x:x + w] for im in imgs]
            desc = f"Lytro c_01 ({W}x{H})" + ("" if (H, W) == (h, w) else f", centre {w}x{h} crop")
        else:
            imgs, desc = list(_synthetic_pair(h, w)), "synthetic"
    else:
        imgs, desc = list(_synthetic_pair(h, w)), "synthetic"
    paths = []
    for k, im in enumerate(imgs):
        p = folder / f"{size}_{k + 1}.png"
        cv2.imwrite(str(p), im[..., ::-1] if im.ndim == 3 else im)
        paths.append(p)
    return paths, desc


def resolve_model(arg, tmp: Path):
    """(caffemodel path with its .onnx beside it, description): --model, else the shipped cnn model."""
    from pyfusion import models

    model = Path(arg) if arg else models.get("cnn").caffemodel
    desc = str(model) if arg else f"shipped {model.relative_to(ROOT)}"
    onnx = models.resolve(model)[2]
    if not arg and onnx.is_file() and not model.with_suffix(".onnx").is_file():   # the shipped twin, in the package
        (tmp / model.name).symlink_to(model.resolve())
        (tmp / onnx.name).symlink_to(onnx.resolve())
        model = tmp / model.name
    if not model.with_suffix(".onnx").is_file():
        from fusionlab.onnx_export import export_onnx

        if model.parent != tmp:
            (tmp / model.name).symlink_to(model.resolve())
            model = tmp / model.name
        export_onnx(model, model.with_suffix(".onnx"))
    return model, desc


def method_table(args) -> int:
    """``--methods``: end-to-end ``pyfusion.fuse(method=...)`` seconds per method and size, in this process
    (median, min and max of --repeat runs after one warm-up run that loads the models)."""
    import numpy as np

    from pyfusion import fuse

    methods = [m for m in args.methods.split(",") if m]
    with tempfile.TemporaryDirectory() as t:
        lines = ["| size | " + " | ".join(f"{m} median (min-max) s" for m in methods) + " |",
                 "|---|" + "---:|" * len(methods)]
        for size in [x for x in args.sizes.split(",") if x]:
            paths, _ = make_inputs(size, Path(t))
            cells = []
            for m in methods:
                fuse(paths, method=m)
                times = []
                for _ in range(args.repeat):
                    t0 = time.perf_counter()
                    fuse(paths, method=m)
                    times.append(time.perf_counter() - t0)
                cells.append(f"{np.median(times):.3f} ({min(times):.3f}-{max(times):.3f})")
            lines.append(f"| {size} | " + " | ".join(cells) + " |")
    info = machine()
    text = "\n".join([f"`python tools/benchmark.py --methods {args.methods} --sizes {args.sizes} --repeat "
                      f"{args.repeat}` on {info['cpu']}, {info['cores']} cores, load average at start "
                      f"{info['load'][0]:.2f}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; end to end "
                      "(read, fuse, no write), default backend and threads.", "", *lines]) + "\n"
    print(text)
    if args.out:
        from fusionlab.docblocks import replace_block

        replace_block(args.out, "benchmark-methods", text)
    return 0


def run_child(backend, inputs, model, max_memory, timeout, tmp: Path, tag: str):
    scores = tmp / f"{tag}_{backend}.npy"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", "--backend", backend, "--model", str(model),
           "--max-memory", str(max_memory), "--output", str(tmp / f"{tag}_{backend}_fused.png"),
           "--scores", str(scores), "--inputs", *map(str, inputs)]
    env = {**os.environ, "GLOG_minloglevel": "2"}
    t = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return {"error": f"not finished in {timeout:.0f} s"}
    if r.returncode != 0:
        return {"error": (r.stderr.strip().splitlines() or ["failed"])[-1][:120]}
    out = json.loads(r.stdout.strip().splitlines()[-1])
    out["wall_child"] = time.perf_counter() - t
    out["scores"] = str(scores)
    return out


def _fmt_s(x):
    return "–" if x is None else (f"{x:.3f}" if x < 10 else f"{x:.1f}")


def _mib(x):
    return f"{x / 2**20:.0f}"


def render(info, model_desc, rows, max_memory, command="python tools/benchmark.py --out docs/benchmarks.md") -> str:
    m = info
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    nices = ", ".join(f"{v:+d}" for v in m.get("training_nice", {}).values())
    competing = (f"**yes**: tools/train.py (pid {', '.join(m['training_pids'])}, nice {nices or '?'}; this "
                 f"benchmark nice {m['nice']:+d}) was training on the same cores during the whole benchmark, so "
                 "every time is pessimistic" if m["training_pids"] else "no")
    lines = [
        "# Benchmarks: Caffe twin vs the fast backends",
        "",
        f"Written by `{command}`; do not edit by hand.",
        "",
        f"* Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']:.1f} GiB RAM, Python {m['python']}",
        f"* Date: {when}; load average at start {m['load'][0]:.2f} / {m['load'][1]:.2f} / {m['load'][2]:.2f}",
        f"* Training run competing for the CPU: {competing}",
        f"* Model: {model_desc}",
        f"* Sizes: {', '.join(dict.fromkeys(r['size'] for r in rows))} (default {DEFAULT_SIZES}); "
        f"score-map memory budget (--max-memory): {max_memory:g} GiB; tiles = score-map tiles used",
        "* One fresh process per row. Times in seconds (wall clock); peak RSS per stage in MiB (VmHWM reset before "
        "the stage). `prep`: sources to [0, 1] floats and grayscale. `load` (model load, session creation, a "
        "32x32 warm-up, importing the method's modules) is not part of `total` = read + prep + score map + post + "
        "write.",
        "",
        "| size | input | backend | tiles | load | read | prep | score map | post | write | total | "
        "peak RSS read / prep / score / post / write | max |Δscore| | score-map speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        res = r["result"]
        if "error" in res:
            lines.append(f"| {r['size']} | {r['desc']} | {r['backend']} | – | – | – | – | – | – | – | "
                         f"{res['error']} | – | – | – |")
            continue
        s, p = res["stages"], res["peaks"]
        total = s["read"] + s["prep"] + s["score_map"] + s["post"] + s["write"]
        tile = res["tile"]
        lines.append(
            f"| {r['size']} | {r['desc']} | {r['backend']} | {res['tiles']} ({tile[0]}x{tile[1]}) | "
            f"{_fmt_s(s['load'])} | {_fmt_s(s['read'])} | {_fmt_s(s['prep'])} | {_fmt_s(s['score_map'])} | "
            f"{_fmt_s(s['post'])} | {_fmt_s(s['write'])} | **{_fmt_s(total)}** | "
            f"{_mib(p['read'])} / {_mib(p['prep'])} / {_mib(p['score_map'])} / {_mib(p['post'])} / "
            f"{_mib(p['write'])} | "
            f"{r.get('dscore', '–')} | {r.get('speedup', '–')} |")
    lines += ["", "## Targets", ""]
    for text in targets(rows):
        lines.append(f"* {text}")
    lines += ["", NOTES]
    return "\n".join(lines)


def targets(rows):
    by = {(r["size"], r["backend"]): r for r in rows if "error" not in r["result"]}
    out = []

    def total(r):
        s = r["result"]["stages"]
        return s["read"] + s["prep"] + s["score_map"] + s["post"] + s["write"]

    fast = [b for b in dict.fromkeys(r["backend"] for r in rows) if b != "caffe"]
    for b in fast:
        r = by.get(("520", b))
        if r:
            t = total(r)
            out.append(f"520x520 end to end ({b}) ≤ {TARGETS['e2e_520_s']} s: {t:.2f} s, "
                       f"{'met' if t <= TARGETS['e2e_520_s'] else 'missed'}")
    for size in sorted({r["size"] for r in rows}, key=lambda x: len(x)):
        for b in fast:
            if "speedup_x" in by.get((size, b), {}):
                x = by[(size, b)]["speedup_x"]
                out.append(f"{size} {b}: score map {x:.1f}x faster than the Caffe twin (target ≥ "
                           f"{TARGETS['speedup']:g}x: {'met' if x >= TARGETS['speedup'] else 'missed'})")
            if "dscore_x" in by.get((size, b), {}):
                d = by[(size, b)]["dscore_x"]
                out.append(f"{size} {b}: max |Δscore| {d:.2e} (target ≤ {TARGETS['dscore']:g}: "
                           f"{'met' if d <= TARGETS['dscore'] else 'missed'})")
    if not any("x" in r["size"] for r in rows):
        out.append("4000x3000 (≤ 60 s, ≤ 4 GiB): not run in this benchmark (see the sizes above)")
    for r in rows:
        if "x" in r["size"] and int(r["size"].split("x")[0]) * int(r["size"].split("x")[1]) >= 10**7:
            res = r["result"]
            if "error" in res:
                out.append(f"{r['size']} {r['backend']}: {res['error']}")
                continue
            t, rss = total(r), max(res["peaks"].values()) / 2**30
            ok = t <= TARGETS["big_s"] and rss <= TARGETS["big_rss_gib"]
            out.append(f"{r['size']} {r['backend']}: {t:.1f} s, peak RSS {rss:.2f} GiB (target ≤ "
                       f"{TARGETS['big_s']:g} s, ≤ {TARGETS['big_rss_gib']:g} GiB: {'met' if ok else 'missed'})")
    return out


def parent(args) -> int:
    import numpy as np

    info = machine()
    sizes = [s.strip() for s in args.sizes.split(",") if s.strip()]
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    rows = []
    with tempfile.TemporaryDirectory(prefix="pyfusion-bench-") as tmpdir:
        tmp = Path(tmpdir)
        model, model_desc = resolve_model(args.model, tmp)
        print(f"benchmark: model {model_desc}; machine {info['cpu']}, {info['cores']} cores; "
              f"training competing: {bool(info['training_pids'])}", flush=True)
        for size in sizes:
            inputs, desc = make_inputs(size, tmp)
            size_rows = []
            for backend in backends:
                res = run_child(backend, inputs, model, args.max_memory, args.timeout, tmp, size)
                row = {"size": size, "desc": desc, "backend": backend, "result": res}
                size_rows.append(row)
                msg = res.get("error") or " ".join(f"{k} {v:.3f}" for k, v in res["stages"].items())
                print(f"benchmark: {size} {backend}: {msg}", flush=True)
            ok = {r["backend"]: r for r in size_rows if "error" not in r["result"]}
            for b in [b for b in ok if b != "caffe"] if "caffe" in ok else []:
                sa = np.load(ok[b]["result"]["scores"])
                sb = np.load(ok["caffe"]["result"]["scores"])
                d = float(np.abs(sa - sb).max())
                x = ok["caffe"]["result"]["stages"]["score_map"] / ok[b]["result"]["stages"]["score_map"]
                ok[b].update(dscore=f"{d:.1e}", speedup=f"{x:.1f}x", dscore_x=d, speedup_x=x)
            rows += size_rows
    text = render(info, model_desc, rows, args.max_memory,
                  command="python tools/benchmark.py " + " ".join(sys.argv[1:]))
    if args.out:
        out = Path(args.out)
        from fusionlab.docblocks import replace_block

        out.parent.mkdir(parents=True, exist_ok=True)
        replace_block(out, "benchmark", text)   # the rest of the page (e.g. the stacks sections) is kept
        print(f"benchmark: wrote {out}")
    else:
        print(text)
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", help="markdown file to write (atomically); default: print")
    ap.add_argument("--sizes", default=DEFAULT_SIZES, help=f"comma-separated sizes, N or WxH (default {DEFAULT_SIZES})")
    ap.add_argument("--backends", default="winograd,onnx,caffe",
                    help="comma-separated backends (default winograd,onnx,caffe)")
    ap.add_argument("--model", help="deploy caffemodel (its .onnx beside it, else exported to a temp folder)")
    ap.add_argument("--max-memory", type=float, default=2.0, metavar="GB",
                    help="score-map memory budget in GB (default 2)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per configuration (default 3600)")
    ap.add_argument("--methods", help="comma-separated fusion methods: time pyfusion.fuse end to end per method instead")
    ap.add_argument("--repeat", type=int, default=5, help="runs per method and size with --methods (default 5)")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", help=argparse.SUPPRESS)
    ap.add_argument("--inputs", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--output", help=argparse.SUPPRESS)
    ap.add_argument("--scores", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.methods:
        return method_table(args)
    return child(args) if args.child else parent(args)


if __name__ == "__main__":
    sys.exit(main())
