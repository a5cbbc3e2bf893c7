"""Objective fusion metrics of the multi-focus image fusion survey (Liu et al., Information Fusion 2020).

``METRICS`` maps the survey's eight metric names to functions ``(a, b, f) -> float`` taking the two source
images and the fused image (2-D grey or (H, W, 3) RGB arrays on the 8-bit scale; colour is converted with
MATLAB's ``rgb2gray``). All are "higher is better" except ``QCV``. Full-reference ``psnr`` and ``ssim``
compare a fused image with a reference.

The implementations follow the conventions of Zheng Liu's MATLAB fusion-metric toolbox in the version
corrected by the survey's authors; see ``docs/metrics.md`` for each definition and for the agreement with
the published per-image values.

References
----------
.. [1] Y. Liu, L. Wang, J. Cheng, C. Li, X. Chen, "Multi-focus image fusion: a survey of the state of the
   art", Information Fusion 64, 2020, 71-91.
.. [2] Z. Liu, E. Blasch, Z. Xue, J. Zhao, R. Laganiere, W. Wu, "Objective assessment of multiresolution
   image fusion algorithms for context enhancement in night vision: a comparative study", IEEE TPAMI 34(1),
   2012, 94-109.
"""
from ._common import rgb2gray
from .gradient import qg
from .information import qmi, qncie
from .perceptual import qcb, qcv
from .phase import qp
from .reference import psnr
from .structural import qe, qy, ssim

#: survey metric name -> function (a, b, f) -> float, in the survey's column order
METRICS = {
    "QMI": qmi,
    "QNCIE": qncie,
    "QG": qg,
    "QP": qp,
    "QE": qe,
    "QY": qy,
    "QCB": qcb,
    "QCV": qcv,
}

#: metrics for which a lower value is better
LOWER_IS_BETTER = frozenset({"QCV"})

__all__ = ["METRICS", "LOWER_IS_BETTER", "psnr", "ssim", "rgb2gray",
           "qmi", "qncie", "qg", "qp", "qe", "qy", "qcb", "qcv"]
