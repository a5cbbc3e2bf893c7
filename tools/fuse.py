#!/usr/bin/env python
"""Fuse two or more multi-focus images with the CNN method of Liu et al. (2017).

    python tools/fuse.py A B [C ...] -o fused.png [--maps DIR] [--model PATH] [--backend NAME]
                         [--max-memory GB] [--region-ratio R] [--gf-radius R] [--gf-eps E] [--threshold T]
                         [--force] [-v]

Three or more sources are fused in series in the order given: ((A + B) + C) + ...
With --maps DIR the maps of the first pair are written as 8-bit PNGs: score.png (one pixel per patch),
focus.png, binary.png, cleaned.png, decision.png. User errors (missing, unreadable or mismatched inputs, an
existing output without --force) print one line ``fuse: error: ...`` and exit with status 2.

Reference: Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
network", Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyfusion.constants import GF_EPS, GF_RADIUS, REGION_RATIO, THRESHOLD  # noqa: E402
from pyfusion.fusion import STAGES, fuse  # noqa: E402
from pyfusion.io import FusionInputError, map_to_uint8, read_image, validate_images, write_image  # noqa: E402

PROG = "fuse"
MAP_NAMES = ("score", "focus", "binary", "cleaned", "decision")


class UserError(Exception):
    """Reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", metavar="IMAGE", help="two or more registered source images")
    p.add_argument("-o", "--output", required=True, type=Path, help="fused image (format from the extension)")
    p.add_argument("--maps", type=Path, metavar="DIR", help="also write the score/focus/binary/cleaned/decision maps")
    p.add_argument("--model", type=Path, help="deploy caffemodel (default: the shipped models/cnn_fusion.caffemodel)")
    p.add_argument("--backend", help="inference backend: winograd (fastest on a CPU), onnx (ONNX Runtime, CUDA where "
                   "present) or caffe (the reference); default: the fastest available")
    p.add_argument("--max-memory", type=float, metavar="GB",
                   help="memory for the score map in GB (tiles the pair; default: a fraction of the free memory)")
    p.add_argument("--region-ratio", type=float, default=REGION_RATIO, metavar="R",
                   help=f"small-region area threshold as a fraction of H*W (default {REGION_RATIO})")
    p.add_argument("--gf-radius", type=int, default=GF_RADIUS, metavar="R",
                   help=f"guided filter radius (default {GF_RADIUS})")
    p.add_argument("--gf-eps", type=float, default=GF_EPS, metavar="E",
                   help=f"guided filter eps, images in [0, 1] (default {GF_EPS})")
    p.add_argument("--threshold", type=float, default=THRESHOLD, metavar="T",
                   help=f"focus map threshold, focus > T takes the first source (default {THRESHOLD})")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("-v", "--verbose", action="store_true", help="print the configuration and per-stage timings")
    args = p.parse_args(argv)
    if len(args.sources) < 2:
        p.error("need at least two source images")
    if not 0.0 <= args.region_ratio <= 1.0:
        p.error(f"--region-ratio must be in [0, 1], got {args.region_ratio}")
    if args.gf_radius < 0:
        p.error(f"--gf-radius must be >= 0, got {args.gf_radius}")
    if args.max_memory is not None and not args.max_memory > 0:
        p.error(f"--max-memory must be > 0, got {args.max_memory}")
    if not args.gf_eps > 0:
        p.error(f"--gf-eps must be > 0, got {args.gf_eps}")
    return args


def _check_outputs(args) -> list[Path]:
    outs = [args.output]
    if args.maps is not None:
        if args.maps.exists() and not args.maps.is_dir():
            raise UserError(f"--maps {args.maps}: exists and is not a directory")
        outs += [args.maps / f"{name}.png" for name in MAP_NAMES]
    if not args.force:
        for path in outs:
            if path.exists():
                raise UserError(f"{path}: already exists (use --force to overwrite)")
    if not args.output.parent.is_dir() and str(args.output.parent):
        raise UserError(f"{args.output}: directory {args.output.parent} does not exist")
    return outs


def run(args) -> int:
    _check_outputs(args)
    if args.model is not None and not args.model.is_file():
        raise UserError(f"--model {args.model}: no such file")
    if args.backend is not None:
        from pyfusion import net
        if args.backend not in net.BACKENDS:
            raise UserError(f"--backend {args.backend!r}: choose from {', '.join(net.BACKENDS)}")
    images = [read_image(path) for path in args.sources]
    validate_images(images, names=args.sources)
    if args.verbose:
        from pyfusion import net

        h, w = images[0].shape[:2]
        channels = 1 if images[0].ndim == 2 else images[0].shape[2]
        print(f"sources      : {', '.join(args.sources)} ({w}x{h}, {channels} channel(s), {images[0].dtype})")
        print(f"order        : {' -> '.join(Path(s).name for s in args.sources)} (fused in series)")
        print(f"model        : {args.model or 'default (pyfusion.net.MODEL_DEFAULT)'}")
        print(f"backend      : {args.backend or net.default_backend(args.model) + ' (the fastest available)'}")
        print(f"threshold    : focus > {args.threshold}")
        print(f"region ratio : {args.region_ratio}")
        print(f"guided filter: r={args.gf_radius}, eps={args.gf_eps}")
        print(f"output       : {args.output}" + (f", maps in {args.maps}" if args.maps else ""))
    result = fuse(images, model=args.model, backend=args.backend, region_ratio=args.region_ratio,
                  gf_radius=args.gf_radius, gf_eps=args.gf_eps, threshold=args.threshold,
                  max_memory=None if args.max_memory is None else int(args.max_memory * 2**30),
                  progress=sys.stderr.isatty())
    write_image(args.output, result.fused, force=args.force)
    if args.maps is not None:
        args.maps.mkdir(parents=True, exist_ok=True)
        for name in MAP_NAMES:
            write_image(args.maps / f"{name}.png", map_to_uint8(getattr(result, f"{name}_map")), force=args.force)
    if args.verbose:
        for stage in (*STAGES, "total"):
            print(f"time {stage:<13}: {result.timings[stage]:.3f} s")
        print(f"wrote {args.output}")
    return 0


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def main(argv=None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    except (UserError, FusionInputError) as e:
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except ValueError as e:  # e.g. pyfusion.net.ModelError: a wrong or corrupt model file
        print(f"{PROG}: error: {_one_line(e)}", file=sys.stderr)
        return 2
    except (ImportError, MemoryError, RuntimeError, OSError) as e:
        print(f"{PROG}: error: {type(e).__name__}: {_one_line(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
