#!/usr/bin/env python
"""Train the siamese CNN with Caffe's SGD solver, or evaluate a deploy model on a validation set.

    python tools/train.py --run runs/cpu [--max-iter 10000] [--max-hours 2] [--gpu 0]
    python tools/train.py --run runs/cpu --resume
    python tools/train.py --evaluate models/cnn_fusion.caffemodel --val data/patches/val/list.txt
    python tools/train.py --net wavelet_high --run runs/wavelet_high --max-hours 1.2

--net names a registered model (pyfusion.models): its net files and, unless --train/--val are given, its data
folder data/<recipe>/{train,val}/list.txt.
"""
import argparse
import json
import sys
from dataclasses import asdict, fields

from fusionlab.train import TrainConfig, data_lists, evaluate, train


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run", help="run folder (config, log.csv, curves.png, snapshots)")
    ap.add_argument("--resume", action="store_true", help="continue the run in --run from its last snapshot")
    ap.add_argument("--evaluate", metavar="MODEL", help="deploy caffemodel to evaluate on --val")
    ap.add_argument("--val", default="", help="validation list file (HDF5 shards; default: the net's data folder)")
    ap.add_argument("--train", default="", help="training list file (HDF5 shards; default: the net's data folder)")
    d = TrainConfig()
    for f in fields(TrainConfig):
        if f.name in ("train_list", "val_list", "extra"):
            continue
        ap.add_argument("--" + f.name.replace("_", "-"), type=type(getattr(d, f.name)), default=getattr(d, f.name))
    args = ap.parse_args(argv)
    if args.evaluate:
        val = args.val or data_lists(TrainConfig(net=args.net))[1]
        r = evaluate(args.evaluate, val, net=args.net)
        print(json.dumps(r, indent=2))
        return 0
    if not args.run:
        ap.error("--run is required for training")
    cfg = TrainConfig(train_list=args.train, val_list=args.val,
                      **{f.name: getattr(args, f.name) for f in fields(TrainConfig)
                         if f.name not in ("train_list", "val_list", "extra")})
    print(f"train: run={args.run} resume={args.resume} config={json.dumps(asdict(cfg))}")
    try:
        state = train(args.run, None if args.resume else cfg, resume=args.resume)
    except (FileExistsError, FileNotFoundError) as e:
        print(f"train: error: {e}", file=sys.stderr)
        return 2
    print(f"train: stopped at iter {state['iter']}, lr {state['lr']:g}, best val loss {state['best_val_loss']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
