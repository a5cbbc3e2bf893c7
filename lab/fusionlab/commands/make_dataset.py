#!/usr/bin/env python
"""Write the clear/blurred patch-pair training or validation set (HDF5 shards + list.txt + manifest.json).

    python tools/make_dataset.py --images DIR [DIR ...] --out data/patches/train --examples 2000000 --seed 1
    python tools/make_dataset.py --net wavelet_low --images DIR --out data/wavelet/train --examples 500000

--net picks a registered model's recipe (pyfusion.models): patch size, blur levels, sub-band pairs.

Paper setting: ~2,000,000 training examples from natural images, 10,000 validation examples.
"""
import argparse
import sys
from pathlib import Path

from fusionlab import ROOT
from pyfusion import models
from fusionlab.data import SHARD_SIZE, make_dataset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", required=True, help="folders of natural images (searched recursively)")
    ap.add_argument("--out", help="output folder (must not exist); default data/<the net's data folder>/<--split>")
    ap.add_argument("--split", choices=("train", "val"), help="with --out unset: which of the net's sets to write")
    ap.add_argument("--skip-existing", action="store_true", help="do nothing when the output folder is complete")
    ap.add_argument("--examples", type=int, default=2_000_000, help="examples, half positive (default: paper's 2M)")
    ap.add_argument("--seed", type=int, default=1, help="seed of every random draw (default 1)")
    ap.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"examples per shard (default {SHARD_SIZE})")
    ap.add_argument("--net", default="cnn", choices=sorted(models.MODELS), help="recipe of this model (default cnn)")
    ap.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = ap.parse_args(argv)
    if args.out is None:
        if args.split is None:
            ap.error("give --out or --split")
        args.out = str(ROOT / "data" / models.get(args.net).data / args.split)
    if args.skip_existing and (Path(args.out) / "list.txt").is_file():
        print(f"make_dataset: {args.out} exists, skipped")
        return 0
    print(f"make_dataset: {vars(args)}")
    try:
        if args.force:
            import shutil
            if Path(args.out).exists():
                shutil.rmtree(args.out)
        m = make_dataset(args.images, args.out, examples=args.examples, seed=args.seed, net=args.net,
                         shard_size=args.shard_size)
    except (FileExistsError, FileNotFoundError, ValueError) as e:
        print(f"make_dataset: error: {e}", file=sys.stderr)
        return 2
    print(f"make_dataset: {m['examples']} examples ({m['positives']} positive) from {m['images_used']} images "
          f"in {len(m['shards'])} shards -> {args.out}; skipped {m['images_skipped']} unreadable; "
          f"missing places {m['places_missing']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
