#!/usr/bin/env python
"""Write the clear/blurred patch-pair training or validation set (HDF5 shards + list.txt + manifest.json).

    python tools/make_dataset.py --images DIR [DIR ...] --out data/patches/train --examples 2000000 --seed 1
    python tools/make_dataset.py --net wavelet_low --images DIR --out data/wavelet/train --examples 500000

--net picks a registered model's recipe (pyfusion.models): patch size, blur levels, sub-band pairs.

Paper setting: ~2,000,000 training examples from natural images, 10,000 validation examples.
"""
import argparse
import sys

from pyfusion import models
from pyfusion.data import SHARD_SIZE, make_dataset


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--images", nargs="+", required=True, help="folders of natural images (searched recursively)")
    ap.add_argument("--out", required=True, help="output folder (must not exist)")
    ap.add_argument("--examples", type=int, default=2_000_000, help="examples, half positive (default: paper's 2M)")
    ap.add_argument("--seed", type=int, default=1, help="seed of every random draw (default 1)")
    ap.add_argument("--shard-size", type=int, default=SHARD_SIZE, help=f"examples per shard (default {SHARD_SIZE})")
    ap.add_argument("--net", default="cnn", choices=sorted(models.MODELS), help="recipe of this model (default cnn)")
    ap.add_argument("--force", action="store_true", help="replace an existing output folder")
    args = ap.parse_args(argv)
    print(f"make_dataset: {vars(args)}")
    try:
        if args.force:
            import shutil
            from pathlib import Path
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
