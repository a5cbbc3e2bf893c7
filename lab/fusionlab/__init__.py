"""fusionlab: pyfusion's research lab. Training data, training and export of the nets, the papers' reproduction,
ablations, benchmarks, figures, synthetic benchmarks with ground truth and tuning searches.

It imports the library (:mod:`pyfusion`); the library never imports it. It runs from a checkout of the repository
(its data, runs and docs folders are the checkout's): ``python -m fusionlab --help`` lists its commands, and the
design card's entry points are thin scripts in ``tools/``.
"""
from pathlib import Path

#: The repository checkout the lab works in (its prototxt/, models/, data/, runs/ and docs/ folders).
ROOT = Path(__file__).resolve().parents[2]
#: The shared data folder beside the checkout (the survey's images, BSDS500, the focus stacks).
SHARED = ROOT.parent / "shared" / "data"

__all__ = ["ROOT", "SHARED"]
