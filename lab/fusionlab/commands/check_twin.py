#!/usr/bin/env python
"""Dense deploy-twin scores vs isolated 16x16 patch scores on real images.

Every conv layer zero-pads by 1, so on an isolated 16x16 patch the border pixels see zeros while in the dense
score map they see their true neighbours: the two scores differ. This measures by how much.

    python -m fusionlab check-twin --model models/cnn_fusion.caffemodel --pairs 5 --crop 128
"""
import argparse
import json
import sys

import numpy as np

from pyfusion.io import to_gray
from pyfusion.io import read_image, to_unit
from fusionlab.reproduce import survey_pairs


def isolated_scores(net, a, b, sh, sw, batch=512):
    """P(A in focus) of every 16x16 patch at stride 2, each patch run alone through the deploy net."""
    ys, xs = np.meshgrid(np.arange(sh) * 2, np.arange(sw) * 2, indexing="ij")
    ys, xs = ys.ravel(), xs.ravel()
    out = np.empty(len(ys), np.float32)
    for i in range(0, len(ys), batch):
        y, x = ys[i:i + batch], xs[i:i + batch]
        pa = np.stack([a[v:v + 16, u:u + 16] for v, u in zip(y, x)])[:, None]
        pb = np.stack([b[v:v + 16, u:u + 16] for v, u in zip(y, x)])[:, None]
        net.blobs["a"].reshape(*pa.shape)
        net.blobs["b"].reshape(*pb.shape)
        net.blobs["a"].data[...] = pa
        net.blobs["b"].data[...] = pb
        out[i:i + len(y)] = net.forward()["prob"][:, 1, 0, 0]
    return out.reshape(sh, sw)


def main(argv=None):
    import caffe

    from pyfusion import models

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=str(models.get("cnn").caffemodel))
    ap.add_argument("--data", default="../shared/data/mfif")
    ap.add_argument("--pairs", type=int, default=5, help="first N survey pairs")
    ap.add_argument("--crop", type=int, default=128, help="centre crop size")
    args = ap.parse_args(argv)
    print(f"check_twin: {vars(args)}")
    caffe.set_mode_cpu()
    net = caffe.Net(str(models.get("cnn").deploy), args.model, caffe.TEST)
    rows = []
    for name, pa, pb, _ in survey_pairs(args.data)[: args.pairs]:
        a, b = (to_gray(to_unit(read_image(p))).astype(np.float32) for p in (pa, pb))
        h, w = a.shape
        y0, x0 = (h - args.crop) // 2 & ~1, (w - args.crop) // 2 & ~1
        a, b = a[y0:y0 + args.crop, x0:x0 + args.crop], b[y0:y0 + args.crop, x0:x0 + args.crop]
        net.blobs["a"].reshape(1, 1, *a.shape)
        net.blobs["b"].reshape(1, 1, *b.shape)
        net.blobs["a"].data[0, 0] = a
        net.blobs["b"].data[0, 0] = b
        dense = net.forward()["prob"][0, 1].copy()
        iso = isolated_scores(net, a, b, *dense.shape)
        d = np.abs(dense - iso)
        rows.append({"image": name, "scores": int(d.size), "max_abs_diff": float(d.max()),
                     "mean_abs_diff": float(d.mean()),
                     "decision_flips": float(((dense > 0.5) != (iso > 0.5)).mean())})
        print(json.dumps(rows[-1]))
    print(json.dumps({"mean_abs_diff": float(np.mean([r["mean_abs_diff"] for r in rows])),
                      "max_abs_diff": float(np.max([r["max_abs_diff"] for r in rows])),
                      "decision_flips": float(np.mean([r["decision_flips"] for r in rows]))}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
