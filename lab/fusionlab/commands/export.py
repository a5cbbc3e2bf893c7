#!/usr/bin/env python
"""Net surgery: export a trained snapshot as the deploy twin's caffemodel (+ side-car JSON), and/or the fast ONNX
model with the folded head (+ side-car ``<out>.onnx.json``).

    python tools/export.py --run runs/cpu --out models/cnn_fusion.caffemodel
    python tools/export.py --snapshot runs/cpu/snap_iter_10000.caffemodel --out models/x.caffemodel
    python tools/export.py --onnx --model models/cnn_fusion.caffemodel --out models/cnn_fusion.onnx
    python tools/export.py --onnx --run runs/cpu --out models/cnn_fusion.caffemodel   # both: .caffemodel, .onnx

With --onnx and --run/--snapshot the deploy caffemodel is written to --out first and the ONNX model beside it
(``--out`` with the suffix ``.onnx``; a registered model's caffemodel: the model's ONNX file, for a shipped net in
pyfusion/weights/). With --onnx --model the ONNX model is written to --out (default: as before).
"""
import argparse
import json
import sys
from pathlib import Path


from fusionlab.export import export_deploy  # noqa: E402
from fusionlab.train import snapshots  # noqa: E402


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--run", help="run folder: its latest snapshot, config and log go into the side-car")
    src.add_argument("--snapshot", help="a train_val caffemodel")
    src.add_argument("--model", help="a deploy caffemodel (with --onnx): export only the ONNX model")
    ap.add_argument("--out", help="deploy caffemodel to write (with --model --onnx: the ONNX model)")
    ap.add_argument("--onnx", action="store_true", help="also write the folded ONNX model and its side-car")
    ap.add_argument("--net", help="registered model of the snapshot (default: the run's config, else cnn)")
    ap.add_argument("--val", help="val list.txt (HDF5 shards): measure the exported model, record it in the side-car")
    args = ap.parse_args(argv)
    print(f"export: {vars(args)}")
    if args.model is not None:
        if not args.onnx:
            ap.error("--model needs --onnx")
        if not Path(args.model).is_file():
            print(f"export: error: model not found: {args.model}", file=sys.stderr)
            return 2
        return _onnx(args.model, args.out or onnx_path(args.model))
    extra = {}
    snap = args.snapshot
    net = args.net
    if args.run:
        run = Path(args.run)
        snaps = snapshots(run)
        if not snaps:
            print(f"export: error: no snapshot in {run}", file=sys.stderr)
            return 2
        snap = snaps[-1]
        state = json.loads((run / "run.json").read_text())
        extra["training"] = state
        net = net or state["config"].get("net")
        log = (run / "log.csv").read_text().splitlines()
        if len(log) > 1:
            last = dict(zip(log[0].split(","), log[-1].split(",")))
            extra["last_validation"] = last
    elif not Path(snap).is_file():
        print(f"export: error: snapshot not found: {snap}", file=sys.stderr)
        return 2
    from pyfusion import models

    net = net or "cnn"
    args.out = args.out or str(models.get(net).caffemodel)
    meta = export_deploy(snap, args.out, net=net, extra=extra)
    if args.val:
        from pyfusion.io import write_atomic
        from fusionlab.train import evaluate

        manifest = Path(args.val).parent / "manifest.json"
        meta["validation"] = evaluate(args.out, args.val, net=meta["net"])
        meta["validation"]["val_manifest"] = json.loads(manifest.read_text()) if manifest.exists() else None
        write_atomic(str(args.out) + ".json", json.dumps(meta, indent=2) + "\n")   # the side-car, now with the result
        print(f"export: validation accuracy {meta['validation']['accuracy']:.4f} on {meta['validation']['pairs']} pairs")
    print(f"export: {args.out} sha256 {meta['sha256']} from {snap}")
    if args.onnx:
        return _onnx(args.out, onnx_path(args.out))
    return 0


def onnx_path(caffemodel) -> Path:
    """Where the ONNX twin of ``caffemodel`` goes: a registered model's ONNX file (a shipped net's is the
    library's package data, pyfusion/weights/) when ``caffemodel`` is that model's caffemodel, else beside it."""
    from pyfusion import models

    target = Path(caffemodel).resolve()
    for m in models.MODELS.values():
        if m.caffemodel.resolve() == target:
            return m.onnx
    return Path(caffemodel).with_suffix(".onnx")


def _onnx(caffemodel, out) -> int:
    from fusionlab.onnx_export import export_onnx

    meta = export_onnx(caffemodel, out)
    print(f"export: {out} sha256 {meta['sha256']} (folded head) from {caffemodel}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
