"""The ``pyfusion`` command: ``fuse``, ``batch``, ``metrics`` and ``info`` (``python -m pyfusion`` too).

The method options of ``fuse`` and ``batch`` are generated from each method's declared options
(:func:`pyfusion.fusion.method_options`): one flag per option name, parsed with the chosen method's own
declaration. User errors (missing, unreadable or mismatched inputs, an option the method does not take, an
existing output without ``--force``, a wrong model file) print one line ``pyfusion COMMAND: error: ...`` and exit
with status 2; an interrupt exits with 130.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pyfusion import __version__
from pyfusion.fusion import METHODS, _method, method_options
from pyfusion.options import bool_flag, check
from pyfusion.util import imap_ordered

__all__ = ["main", "method_flags", "method_requirements", "depth_pictures", "info"]

FUSE_HELP = """\
Fuse two or more registered multi-focus images (default: the CNN method of Liu et al. 2017).

cnn: three or more sources are fused in one pass (one network pass per frame); with --series in series in the
order given, as in the paper: ((A + B) + C) + ...
With --maps DIR the method's maps are written as 8-bit PNGs (cnn, of the first pair: score.png (one pixel per
patch), focus.png, binary.png, cleaned.png, decision.png; one pass: label.png, depth.png, frame indices spread
over 0..255). With --depth PATH (cnn) the depth map (the index of the frame each pixel comes from, after the
small-region removal) is written as a colour-mapped PNG (viridis, first frame dark, last bright) and as the raw
index, 16-bit, in PATH with the suffix _index.png; two sources: from the pairwise cleaned map (0 = the first
source); not with --series on three or more sources.

cnn on three or more files without --align reads each frame from its file when it is needed (every file's header
is checked first; one decoded frame in memory at a time, the same result): --max-memory GB then caps the whole
process while it fuses (default 3.5 or less where less is free; the stack's maps take about 140 + 8 x channels
bytes per pixel, the network's tiles get the rest). Elsewhere --max-memory is the network's budget.

Reference: Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
network", Information Fusion 36 (2017) 191-207."""

FUSE_EXAMPLES = """\
examples:
  pyfusion fuse near.png far.png -o fused.png
  pyfusion fuse f1.tif f2.tif f3.tif f4.tif -o fused.tif --depth depth.png
  pyfusion fuse a.png b.png -o fused.png --method dwt --maps maps/
  pyfusion fuse a.jpg b.jpg c.jpg -o fused.png --align --align-motion homography -v
  pyfusion fuse a.png b.png -o fused.png --backend onnx --threads 4 --max-memory 2
  pyfusion fuse stack/*.tif -o fused.tif --max-memory 3 --progress"""

BATCH_HELP = """\
Fuse every focus stack under IN_DIR into OUT_DIR on Dask (pyfusion.batch).

One stack per sub-folder of IN_DIR (frames in file name order), or with --pattern the image files of IN_DIR
grouped by the regular expression's first group (e.g. --pattern '^(.+)_\\d+\\.jpg$'). Each stack is fused to
OUT_DIR/<name>.png; OUT_DIR/summary.json and summary.csv list every stack (frames, size, seconds, status, error).
A rerun skips the stacks already fused (output present, summary ok). By default a LocalCluster on 127.0.0.1 with
workers x threads <= cores; --scheduler ADDRESS uses a running cluster instead. Exit status: 0 all fused, 1 some
stack failed (the batch still goes on), 2 usage error."""

BATCH_EXAMPLES = """\
examples:
  pyfusion batch stacks/ fused/
  pyfusion batch photos/ fused/ --pattern '^(.+)_\\d+\\.jpg$' --align --ext .jpg
  pyfusion batch stacks/ fused/ --method dwt --workers 2 --threads 1
  pyfusion batch stacks/ fused/ --scheduler tcp://127.0.0.1:8786"""

METRICS_HELP = """\
The objective metrics of the multi-focus fusion survey (Liu et al., Information Fusion 64, 2020) of a fused image
against its two sources: QMI, QNCIE, QG, QP, QE, QY, QCB (higher is better) and QCV (lower is better); with
--reference also PSNR (dB) and SSIM against an all-in-focus reference."""

METRICS_EXAMPLES = """\
examples:
  pyfusion metrics near.png far.png --fused fused.png
  pyfusion metrics a.tif b.tif --fused fused.tif --reference truth.tif --json"""

INFO_HELP = "The version, the fusion methods, the inference backends on this machine and the registered models."

INFO_EXAMPLES = """\
examples:
  pyfusion info
  pyfusion info --json"""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def method_flags() -> dict:
    """The method options that have a command-line flag, over every method.

    Returns
    -------
    dict of str to dict
        Option name -> {method name -> its :class:`pyfusion.options.Option`}, for the methods that declare it
        with ``cli`` True, in declaration order.
    """
    out: dict[str, dict] = {}
    for method in METHODS:
        for o in method_options(method):
            if o.cli:
                out.setdefault(o.name, {})[method] = o
    return out


def method_requirements(method: str) -> tuple[int, str, tuple]:
    """``(min_size, min_reason, maps)`` of a method: the sources' smallest side, why, and its map names."""
    impl = _method(method)
    return impl.MIN_SIZE, impl.MIN_REASON, tuple(getattr(impl, "MAPS", ()))


def _flag_help(per_method: dict) -> str:
    o = next(iter(per_method.values()))
    text = o.help
    if o.choices:
        text += f" ({', '.join(map(str, o.choices))})"
    if len(per_method) < len(METHODS):
        text += f" [{', '.join(per_method)}]"
    groups: dict[str, list] = {}  # default -> the methods with it
    for m, x in per_method.items():
        if x.default not in (None, False):
            groups.setdefault(str(x.default), []).append(m)
    if len(groups) == 1 and len(next(iter(groups.values()))) == len(per_method):
        text += f" (default {next(iter(groups))})"
    elif groups:
        text += " (default " + "; ".join(f"{d} for {', '.join(ms)}" for d, ms in groups.items()) + ")"
    return text.replace("%", "%%")


def _add_method_flags(p: argparse.ArgumentParser, *, skip=()) -> list[str]:
    """Add the generated method flags to ``p``; returns their option names."""
    g = p.add_argument_group("method options", "Each applies to the methods in brackets (all where none are named); "
                             "the table of every method's options: docs/options.md.")
    names = []
    for name, per_method in method_flags().items():
        if name in skip:
            continue
        o = next(iter(per_method.values()))
        if o.type is bool_flag:
            g.add_argument(o.flag, dest=name, action="store_const", const=True, default=None,
                           help=_flag_help(per_method))
        else:
            g.add_argument(o.flag, dest=name, metavar=o.metavar or name.upper(), help=_flag_help(per_method))
        names.append(name)
    return names


def _method_kwargs(method: str, args, names) -> dict:
    """The method options given on the command line, converted by ``method``'s declaration; a one-line ValueError
    for a bad value or an option the method does not take."""
    declared = {o.name: o for o in method_options(method)}
    out = {}
    for name in names:
        text = getattr(args, name)
        if text is None:
            continue
        o = declared.get(name)
        value = text
        if o is not None and o.type is not bool_flag:
            try:
                value = o.type(text)
            except ValueError as e:
                raise ValueError(f"{o.flag} {text!r}: " + (f"expected {o.type.__name__}" if o.type in (int, float)
                                                           else str(e))) from None
            if o.choices and value not in o.choices:
                raise ValueError(f"{o.flag} {text!r}: choose from {', '.join(map(str, o.choices))}")
        out[name] = value
    return check(method, tuple(declared.values()), out)


# ------------------------------------------------------------------------------------------------------- fuse
def _map_file(maps_dir: Path, name: str) -> Path:
    return maps_dir / f"{name.removesuffix('_map')}.png"


def _depth_files(path: Path) -> tuple[Path, Path]:
    """The colour-mapped depth PNG and its raw 16-bit index PNG (``PATH`` with the suffix ``_index.png``)."""
    return path, path.with_name(f"{path.stem}_index.png")


def depth_pictures(depth, n: int):
    """``(colour, index)``: an RGB uint8 picture of a depth map (viridis over the frame indices ``0 .. n - 1``
    spread over 0..255) and the raw index as uint16."""
    import cv2
    import numpy as np

    index = np.asarray(depth).astype(np.uint16)
    colour = cv2.cvtColor(cv2.applyColorMap(_label_map_to_uint8(index, n), cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    return colour, index


def _label_map_to_uint8(m, n: int):
    import numpy as np

    return np.floor(np.asarray(m, np.float64) * 255.0 / max(n - 1, 1) + 0.5).astype(np.uint8)


def _check_outputs(args, map_names=()) -> None:
    outs = [args.output]
    if args.depth is not None:
        outs += list(_depth_files(args.depth))
        if not args.depth.parent.is_dir() and str(args.depth.parent):
            raise ValueError(f"--depth {args.depth}: directory {args.depth.parent} does not exist")
    if args.maps is not None:
        if args.maps.exists() and not args.maps.is_dir():
            raise ValueError(f"--maps {args.maps}: exists and is not a directory")
        outs += [_map_file(args.maps, name) for name in map_names]
    if not args.force:
        for path in outs:
            if path.exists():
                raise ValueError(f"{path}: already exists (use --force to overwrite)")
    if not args.output.parent.is_dir() and str(args.output.parent):
        raise ValueError(f"{args.output}: directory {args.output.parent} does not exist")


def _fuse(args) -> int:
    from pyfusion.fusion import fuse, streams
    from pyfusion.io import FrameSequence, check_output_format, map_to_uint8, read_image, validate_images, write_image

    if not args.align and (args.align_fill or args.skip_unaligned or args.align_motion != "affine"
                           or args.align_interp):
        raise ValueError("--align-motion, --align-interp, --align-fill and --skip-unaligned need --align")
    if len(args.sources) < 2:
        raise ValueError("need at least two source images")
    min_size, min_reason, maps = method_requirements(args.method)
    _check_outputs(args, maps)
    opts = _method_kwargs(args.method, args, args.method_flags)
    takes = {o.name for o in method_options(args.method)}
    if "progress" in takes:
        opts.setdefault("progress", sys.stderr.isatty())
    if args.depth is not None:
        if args.method != "cnn":
            raise ValueError(f"--depth does not apply to --method {args.method}")
        if opts.get("series") and len(args.sources) > 2:
            raise ValueError("--depth needs the one-pass method: fusing three or more sources in series (--series) "
                             "makes no depth map")
        if args.depth.suffix.lower() != ".png":
            raise ValueError(f"--depth {args.depth}: must be a .png file")
    if streams(args.sources, method=args.method, align=args.align):  # frames read as needed, headers checked now
        images = FrameSequence(args.sources, min_size=min_size, min_reason=min_reason)
    else:
        images = list(imap_ordered(read_image, args.sources, threads=opts.get("threads")))
        validate_images(images, names=args.sources, min_size=min_size, min_reason=min_reason)
    check_output_format(args.output, images[0].dtype)  # e.g. 16-bit sources to .jpg: before fusing, not after
    if args.verbose:
        h, w = images[0].shape[:2]
        channels = 1 if images[0].ndim == 2 else images[0].shape[2]
        print(f"sources      : {', '.join(args.sources)} ({w}x{h}, {channels} channel(s), {images[0].dtype})")
        print(f"method       : {args.method}")
        for key, value in opts.items():
            print(f"{key:<13}: {value}")
        if "backend" in takes and opts.get("backend") is None:
            from pyfusion.backends import default_backend

            model = opts.get("model")
            model = model[0] if isinstance(model, tuple) else model  # a two-net method: the nets share a format
            print(f"backend      : {default_backend(model)} (the fastest available)")
        print(f"output       : {args.output}" + (f", maps in {args.maps}" if args.maps else ""))
    align = False
    if args.align:
        align = {"motion": args.align_motion, "fill": args.align_fill, "names": args.sources,
                 "on_failure": "skip" if args.skip_unaligned else "stop"}
        if args.align_interp:
            align["interpolation"] = args.align_interp
    result = fuse(images, method=args.method, align=align, **opts)
    kept = len(result.alignment.names) if result.alignment is not None else len(images)
    if result.alignment is not None:
        for name, why in result.alignment.skipped.items():
            print(f"{args.parser.prog}: warning: {name} left out: {why}", file=sys.stderr)
        if args.verbose:
            a = result.alignment
            for name in a.names:
                print(f"align        : {name} correlation {a.correlations[name]:.4f}")
            x, y, w, h = a.crop
            filled = f", {a.filled:.1%} filled" if a.filled is not None else ""
            print(f"align crop   : {w}x{h} at ({x}, {y}){filled}")
    _check_outputs(args, result.maps)
    write_image(args.output, result.fused, force=args.force)
    if args.maps is not None:
        args.maps.mkdir(parents=True, exist_ok=True)
        for name, m in result.maps.items():
            picture = _label_map_to_uint8(m, kept) if name in ("label_map", "depth_map") else map_to_uint8(m)
            write_image(_map_file(args.maps, name), picture, force=args.force)
    if args.depth is not None:
        import numpy as np

        depth = result.maps.get("depth_map")
        if depth is None:  # two sources, pairwise: the cleaned map is 1 where the first source is taken
            depth = (np.asarray(result.maps["cleaned_map"]) == 0).astype(np.int32)
        colour, index = depth_pictures(depth, kept)
        path, index_path = _depth_files(args.depth)
        write_image(path, colour, force=args.force)
        write_image(index_path, index, force=args.force)
    if args.verbose:
        for stage, sec in result.timings.items():
            print(f"time {stage:<13}: {sec:.3f} s")
        print(f"wrote {args.output}" + (f", depth map {args.depth}" if args.depth is not None else ""))
    return 0


def _add_fuse(sub) -> None:
    from pyfusion.align import INTERPOLATION, INTERPOLATIONS, MOTIONS

    p = sub.add_parser("fuse", help="fuse a pair or a focus stack into one image", description=FUSE_HELP,
                       epilog=FUSE_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", metavar="IMAGE", help="two or more registered source images")
    p.add_argument("-o", "--output", required=True, type=Path, help="fused image (format from the extension)")
    p.add_argument("--method", default="cnn", choices=list(METHODS), help="fusion method (default cnn; "
                   "pyfusion info describes each)")
    p.add_argument("--maps", type=Path, metavar="DIR", help="also write the method's maps as PNGs (cnn: score, "
                   "focus, binary, cleaned, decision)")
    p.add_argument("--depth", type=Path, metavar="PATH",
                   help="cnn: also write the depth map (frame index per pixel) as a colour-mapped PNG, and the raw "
                   "index as a 16-bit PNG in PATH with the suffix _index.png")
    p.add_argument("--align", action="store_true",
                   help="register the sources to the middle one first (ECC on a pyramid, affine); the output is "
                   "cropped to the region every source covers")
    p.add_argument("--align-motion", choices=list(MOTIONS), default="affine",
                   help="motion model of --align (default affine)")
    p.add_argument("--align-interp", choices=tuple(INTERPOLATIONS),
                   help=f"resampling of --align's warped sources (default {INTERPOLATION})")
    p.add_argument("--align-fill", action="store_true",
                   help="with --align: keep the full size, filling uncovered borders, instead of cropping")
    p.add_argument("--skip-unaligned", action="store_true",
                   help="with --align: leave out sources that fail to align (default: error)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("-v", "--verbose", action="store_true", help="print the configuration and per-stage timings")
    p.set_defaults(run=_fuse, method_flags=_add_method_flags(p), parser=p)


# ------------------------------------------------------------------------------------------------------ batch
def _batch(args) -> int:
    from pyfusion.batch import run_batch

    if args.threads is not None and args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    if args.workers is not None and args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    align = {"motion": args.motion, "interpolation": args.align_interp,
             "on_failure": "skip" if args.skip_unaligned else "stop"} if args.align else False
    records = run_batch(args.in_dir, args.out_dir, method=args.method, align=align,
                        options=_method_kwargs(args.method, args, args.method_flags), pattern=args.pattern,
                        scheduler=args.scheduler, workers=args.workers, threads=args.threads, ext=args.ext,
                        force=args.force, progress=not args.no_progress and sys.stderr.isatty())
    failed = [r for r in records if r["status"] != "ok"]
    done = sum(1 for r in records if r["status"] == "ok" and not r.get("resumed"))
    resumed = sum(1 for r in records if r.get("resumed"))
    print(f"{args.parser.prog}: {done} fused, {resumed} already done, {len(failed)} failed; summary in "
          f"{args.out_dir / 'summary.json'}", file=sys.stderr)
    for r in failed:
        print(f"{args.parser.prog}: failed {r['name']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def _add_batch(sub) -> None:
    from pyfusion.align import INTERPOLATION, INTERPOLATIONS, MOTIONS

    p = sub.add_parser("batch", help="fuse every focus stack of a folder (Dask)", description=BATCH_HELP,
                       epilog=BATCH_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("in_dir", type=Path, metavar="IN_DIR", help="folder of stacks (one sub-folder per stack)")
    p.add_argument("out_dir", type=Path, metavar="OUT_DIR", help="fused images and summary.json/.csv")
    p.add_argument("--pattern", metavar="REGEX", help="group the files of IN_DIR by this regex's first group")
    p.add_argument("--method", default="cnn", choices=list(METHODS), help="fusion method (default cnn)")
    p.add_argument("--align", action="store_true", help="register the frames to the middle one first (ECC)")
    p.add_argument("--motion", choices=list(MOTIONS), default="affine",
                   help="alignment motion model (default affine; translation is more precise for pure shifts)")
    p.add_argument("--align-interp", choices=tuple(INTERPOLATIONS), default=INTERPOLATION,
                   help=f"resampling of the aligned frames (default {INTERPOLATION})")
    p.add_argument("--skip-unaligned", action="store_true",
                   help="leave out frames that fail to align (default: the stack fails)")
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads per fusion (default 1; workers x threads <= cores)")
    p.add_argument("--workers", type=int, metavar="N", help="local worker processes (default cores // threads)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="use a running Dask scheduler (e.g. tcp://127.0.0.1:8786)")
    p.add_argument("--ext", default=".png", help="output format (default .png)")
    p.add_argument("--force", action="store_true", help="fuse every stack again, finished or not")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(run=_batch, method_flags=_add_method_flags(p, skip=("threads", "progress")), parser=p,
                   interrupted="interrupted (rerun to resume)")


# ---------------------------------------------------------------------------------------------------- metrics
def _metrics(args) -> int:
    from pyfusion.fusion import evaluate
    from pyfusion.metrics import LOWER_IS_BETTER

    values = evaluate(args.sources, args.fused, reference=args.reference)
    if args.json:
        print(json.dumps(values, indent=1))
        return 0
    for name, value in values.items():
        unit = "dB" if name == "PSNR" else ""
        better = "lower is better" if name in LOWER_IS_BETTER else "higher is better"
        print(f"{name:<6}{value:>10.4f} {unit:<3} {better}")
    return 0


def _add_metrics(sub) -> None:
    p = sub.add_parser("metrics", help="the survey's fusion metrics of a fused image", description=METRICS_HELP,
                       epilog=METRICS_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs=2, metavar="SOURCE", help="the two source images")
    p.add_argument("--fused", required=True, metavar="IMAGE", help="the fused image")
    p.add_argument("--reference", metavar="IMAGE", help="an all-in-focus reference: adds PSNR and SSIM")
    p.add_argument("--json", action="store_true", help="print a JSON object instead of a table")
    p.set_defaults(run=_metrics, parser=p)


# ------------------------------------------------------------------------------------------------------- info
def _why_not(backend) -> str:
    why = getattr(backend, "why_unavailable", None)
    return (why() if why else None) or f"{backend.NAME}'s Python package does not import"


def info() -> dict:
    """What ``pyfusion info`` reports.

    Returns
    -------
    dict
        ``version``; ``methods`` (name -> one-line description); ``backends`` (name -> ``{"available": bool,
        "why_not": str or None}``); ``default_backend``; ``winograd_isa`` (the kernel variant in use, None where
        the kernels are not available); ``models``: per registered model ``name``, ``about``, ``file`` (its ONNX
        file, None where there is none), ``sha256`` and ``ok`` (present and matching its side-car).
    """
    from pyfusion import backends, models
    from pyfusion.backends import winograd

    found = {}
    for name in backends.BACKENDS:
        mod = backends.get(name)
        ok = mod.available()
        found[name] = {"available": ok, "why_not": None if ok else " ".join(_why_not(mod).split())}
    return {"version": __version__, "methods": dict(METHODS), "backends": found,
            "default_backend": backends.default_backend(), "winograd_isa": winograd.isa(),
            "models": [{"name": m.name, "about": m.about, "file": None if m.onnx is None else str(m.onnx),
                        "sha256": m.sha256, "ok": m.ok} for m in models.available()]}


def _info(args) -> int:
    report = info()
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"pyfusion {report['version']}")
    print("methods:")
    for name, about in report["methods"].items():
        print(f"  {name:<12} {about}")
    print(f"backends (default here: {report['default_backend']}):")
    for name, b in report["backends"].items():
        isa = f" (kernels {report['winograd_isa']})" if name == "winograd" and b["available"] else ""
        print(f"  {name:<12} " + ("yes" + isa if b["available"] else f"no: {b['why_not']}"))
    print("models:")
    for m in report["models"]:
        state = "ok " if m["ok"] else ("BAD" if m["file"] else "-  ")
        print(f"  {m['name']:<12} {state} {m['sha256'] or 'not present':<64} {m['file'] or ''}".rstrip())
    return 0


def _add_info(sub) -> None:
    p = sub.add_parser("info", help="version, methods, backends and models on this machine", description=INFO_HELP,
                       epilog=INFO_EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", action="store_true", help="print a JSON object instead of text")
    p.set_defaults(run=_info, parser=p)


# ------------------------------------------------------------------------------------------------------- main
def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="pyfusion", description="Multi-focus image fusion (CNN of Liu et al. 2017 and more).",
                epilog="examples:\n  pyfusion fuse a.png b.png -o fused.png\n  pyfusion info\n  pyfusion fuse --help",
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"pyfusion {__version__}")
    sub = p.add_subparsers(title="commands", dest="command", required=True, metavar="COMMAND")
    for add in (_add_fuse, _add_batch, _add_metrics, _add_info):
        add(sub)
    return p


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def _unrecognized(args, extra) -> None:
    """The subcommand's one-line usage error for unknown arguments, naming the chosen method's options."""
    message = f"unrecognized arguments: {' '.join(extra)}"
    if getattr(args, "method", None) in METHODS:
        flags = [o.flag for o in method_options(args.method) if o.cli and o.name in args.method_flags]
        message += f"; --method {args.method} takes {', '.join(flags)}"
    args.parser.error(message)


def main(argv=None) -> int:
    """Run the ``pyfusion`` command.

    Parameters
    ----------
    argv : list of str, optional
        The arguments after the program name (default ``sys.argv[1:]``), e.g. ``["fuse", "a.png", "b.png", "-o",
        "f.png"]``.

    Returns
    -------
    int
        The exit status: 0 done, 1 a failure of the machine (memory, a missing backend) or a failed batch stack, 2 a
        usage error or bad input (one line on standard error), 130 interrupted.
    """
    try:
        args, extra = _parser().parse_known_args(argv)
        if extra:
            _unrecognized(args, extra)
    except SystemExit as e:  # --help, --version, a usage error (its one line is printed)
        return 0 if e.code is None else e.code
    try:
        return args.run(args)
    except ValueError as e:  # bad input, an option the method does not take, pyfusion.models.ModelError, ...
        print(f"{args.parser.prog}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (ImportError, MemoryError, RuntimeError, OSError) as e:
        print(f"{args.parser.prog}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{args.parser.prog}: {getattr(args, 'interrupted', 'interrupted')}", file=sys.stderr)
        return 130
