#!/usr/bin/env python
"""Fuse two or more multi-focus images (default: the CNN method of Liu et al. 2017).

    python tools/fuse.py A B [C ...] -o fused.png [--method cnn|...] [--maps DIR] [--model NAME|PATH]
                         [--backend NAME] [--threads N] [--max-memory GB] [--region-ratio R] [--gf-radius R]
                         [--gf-eps E] [--threshold T] [--series] [--depth PATH] [--force] [-v]

cnn: three or more sources are fused in one pass (one network pass per frame, pyfusion.methods.stack); with
--series in series in the order given, as in the paper: ((A + B) + C) + ...
With --maps DIR the method's maps are written as 8-bit PNGs (cnn, of the first pair: score.png (one pixel per
patch), focus.png, binary.png, cleaned.png, decision.png; one pass: label.png, depth.png, frame indices spread
over 0..255). With --depth PATH (cnn) the depth map (the index of the frame each pixel comes from, after the
small-region removal) is written as a colour-mapped PNG (viridis, first frame dark, last bright) and as the raw
index, 16-bit, in PATH with the suffix _index.png; two sources: from the pairwise cleaned map (0 = the first
source); not with --series on three or more sources. User errors (missing, unreadable or mismatched
inputs, an option the method does not take, an existing output without --force) print one line
``fuse: error: ...`` and exit with status 2.

Reference: Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural
network", Information Fusion 36 (2017) 191-207.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


from pyfusion.align import INTERPOLATION, INTERPOLATIONS  # noqa: E402
from pyfusion.backends import BACKENDS  # noqa: E402
from pyfusion.constants import GF_EPS, GF_RADIUS, REGION_RATIO, THRESHOLD  # noqa: E402
from pyfusion.fusion import METHODS, _method, fuse, method_takes  # noqa: E402
from pyfusion.fusion import method_options as options_of  # noqa: E402
from pyfusion.io import FusionInputError, map_to_uint8, read_image, validate_images, write_image  # noqa: E402

PROG = "fuse"
#: Method options of the command line: (option, keyword of the method's fuse()).
METHOD_OPTIONS = (("--model", "model"), ("--backend", "backend"), ("--threads", "threads"), ("--gpu", "gpu"),
                  ("--max-memory", "max_memory"), ("--region-ratio", "region_ratio"), ("--gf-radius", "gf_radius"),
                  ("--gf-eps", "gf_eps"), ("--threshold", "threshold"), ("--series", "series"))


class UserError(Exception):
    """Reported as one line, exit status 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line instead of usage + message
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def parse_args(argv=None):
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0])
    p.add_argument("sources", nargs="+", metavar="IMAGE", help="two or more registered source images")
    p.add_argument("-o", "--output", required=True, type=Path, help="fused image (format from the extension)")
    p.add_argument("--method", default="cnn", choices=sorted(METHODS), help="fusion method (default cnn)")
    p.add_argument("--maps", type=Path, metavar="DIR", help="also write the method's maps as PNGs (cnn: score, "
                   "focus, binary, cleaned, decision)")
    p.add_argument("--model", help="registered model name or deploy weights file (default: the method's shipped "
                   "model, models/cnn_fusion.* for cnn)")
    p.add_argument("--backend", help="inference backend: winograd (fastest on a CPU), onnx (ONNX Runtime, CUDA where "
                   "present), caffe (the reference) or torch (PyTorch, optional: pip install .[torch]; precision "
                   "from $PYFUSION_TORCH_PRECISION); default: the fastest available")
    p.add_argument("--threads", type=int, metavar="N", help="threads (default $PYFUSION_THREADS, else every core)")
    p.add_argument("--gpu", type=int, metavar="N", help="run the net on CUDA device N (backends torch or caffe: a "
                   "CUDA build of either; default: the CPU)")
    p.add_argument("--max-memory", type=float, metavar="GB",
                   help="memory for the score map in GB (tiles the pair; default: a fraction of the free memory)")
    p.add_argument("--region-ratio", type=float, metavar="R",
                   help=f"small-region area threshold as a fraction of H*W (default {REGION_RATIO})")
    p.add_argument("--gf-radius", type=int, metavar="R", help=f"guided filter radius (default {GF_RADIUS})")
    p.add_argument("--gf-eps", type=float, metavar="E", help=f"guided filter eps, images in [0, 1] (default {GF_EPS})")
    p.add_argument("--threshold", type=float, metavar="T",
                   help=f"focus map threshold, focus > T takes the first source (default {THRESHOLD})")
    p.add_argument("--series", action="store_const", const=True, default=None,
                   help="cnn: fuse three or more sources in series, as in the paper ((A + B) + C ...), instead of "
                   "in one pass")
    p.add_argument("--depth", type=Path, metavar="PATH",
                   help="cnn: also write the depth map (frame index per pixel) as a colour-mapped PNG, and the raw "
                   "index as a 16-bit PNG in PATH with the suffix _index.png")
    p.add_argument("--align", action="store_true",
                   help="register the sources to the middle one first (ECC on a pyramid, affine); the output is "
                   "cropped to the region every source covers")
    p.add_argument("--align-motion", choices=("affine", "homography", "euclidean", "translation"), default="affine",
                   help="motion model of --align (default affine)")
    p.add_argument("--align-interp", choices=tuple(INTERPOLATIONS),
                   help=f"resampling of --align's warped sources (default {INTERPOLATION})")
    p.add_argument("--align-fill", action="store_true",
                   help="with --align: keep the full size, filling uncovered borders, instead of cropping")
    p.add_argument("--skip-unaligned", action="store_true",
                   help="with --align: leave out sources that fail to align (default: error)")
    p.add_argument("--force", action="store_true", help="overwrite existing output files")
    p.add_argument("-v", "--verbose", action="store_true", help="print the configuration and per-stage timings")
    args = p.parse_args(argv)
    if not args.align and (args.align_fill or args.skip_unaligned or args.align_motion != "affine"
                           or args.align_interp):
        p.error("--align-motion, --align-interp, --align-fill and --skip-unaligned need --align")
    if len(args.sources) < 2:
        p.error("need at least two source images")
    if args.region_ratio is not None and not 0.0 <= args.region_ratio <= 1.0:
        p.error(f"--region-ratio must be in [0, 1], got {args.region_ratio}")
    if args.gf_radius is not None and args.gf_radius < 0:
        p.error(f"--gf-radius must be >= 0, got {args.gf_radius}")
    if args.max_memory is not None and not args.max_memory > 0:
        p.error(f"--max-memory must be > 0, got {args.max_memory}")
    if args.gf_eps is not None and not args.gf_eps > 0:
        p.error(f"--gf-eps must be > 0, got {args.gf_eps}")
    if args.threads is not None and args.threads < 1:
        p.error(f"--threads must be >= 1, got {args.threads}")
    if args.backend is not None and args.backend not in BACKENDS:
        p.error(f"--backend {args.backend!r}: choose from {', '.join(BACKENDS)}")
    return args


def method_options(args) -> dict:
    """The method options given on the command line, as keywords of the method's fuse(); UserError for one it
    does not take."""
    given = [(flag, key, getattr(args, key)) for flag, key in METHOD_OPTIONS]
    given = [(f, k, int(v * 2**30) if k == "max_memory" and v is not None else v) for f, k, v in given]  # GB
    try:
        opts = options_of(args.method, given)
    except ValueError as e:
        raise UserError(str(e)) from None
    takes = method_takes(args.method)
    if "progress" in takes:
        opts["progress"] = sys.stderr.isatty()
    return opts


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
    spread = np.floor(index.astype(np.float64) * 255.0 / max(n - 1, 1) + 0.5).astype(np.uint8)
    colour = cv2.cvtColor(cv2.applyColorMap(spread, cv2.COLORMAP_VIRIDIS), cv2.COLOR_BGR2RGB)
    return colour, index


def _label_map_to_uint8(m, n: int):
    import numpy as np

    return np.floor(np.asarray(m, np.float64) * 255.0 / max(n - 1, 1) + 0.5).astype(np.uint8)


def _check_outputs(args, map_names=()) -> list[Path]:
    outs = [args.output]
    if args.depth is not None:
        outs += list(_depth_files(args.depth))
        if not args.depth.parent.is_dir() and str(args.depth.parent):
            raise UserError(f"--depth {args.depth}: directory {args.depth.parent} does not exist")
    if args.maps is not None:
        if args.maps.exists() and not args.maps.is_dir():
            raise UserError(f"--maps {args.maps}: exists and is not a directory")
        outs += [_map_file(args.maps, name) for name in map_names]
    if not args.force:
        for path in outs:
            if path.exists():
                raise UserError(f"{path}: already exists (use --force to overwrite)")
    if not args.output.parent.is_dir() and str(args.output.parent):
        raise UserError(f"{args.output}: directory {args.output.parent} does not exist")
    return outs


def run(args) -> int:
    impl = _method(args.method)
    _check_outputs(args, getattr(impl, "MAPS", ()))
    if args.model is not None:
        from pyfusion import models

        if args.model not in models.MODELS and not Path(args.model).is_file():
            raise UserError(f"--model {args.model}: neither a registered model ({', '.join(models.MODELS)}) nor a file")
    opts = method_options(args)
    if args.depth is not None:
        if args.method != "cnn":
            raise UserError(f"--depth does not apply to --method {args.method}")
        if args.series and len(args.sources) > 2:
            raise UserError("--depth needs the one-pass method: fusing three or more sources in series (--series) "
                            "makes no depth map")
        if args.depth.suffix.lower() != ".png":
            raise UserError(f"--depth {args.depth}: must be a .png file")
    images = [read_image(path) for path in args.sources]
    validate_images(images, names=args.sources, min_size=impl.MIN_SIZE, min_reason=impl.MIN_REASON)
    if args.verbose:
        h, w = images[0].shape[:2]
        channels = 1 if images[0].ndim == 2 else images[0].shape[2]
        print(f"sources      : {', '.join(args.sources)} ({w}x{h}, {channels} channel(s), {images[0].dtype})")
        print(f"method       : {args.method}")
        for key, value in opts.items():
            print(f"{key:<13}: {value}")
        if "backend" in method_takes(args.method) and args.backend is None:
            from pyfusion.backends import default_backend

            print(f"backend      : {default_backend(args.model)} (the fastest available)")
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
            print(f"{PROG}: warning: {name} left out: {why}", file=sys.stderr)
        if args.verbose:
            a = result.alignment
            for name in a.names:
                print(f"align        : {name} correlation {a.correlations[name]:.4f}")
            x, y, w, h = a.crop
            print(f"align crop   : {w}x{h} at ({x}, {y})" + (f", {a.filled:.1%} filled" if a.filled is not None else ""))
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
