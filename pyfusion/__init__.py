"""pyfusion: CNN multi-focus image fusion (Liu, Chen, Peng, Wang, Information Fusion 36, 2017) in Caffe.

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
__version__ = "0.1.0"

from pyfusion.fusion import FusionResult, fuse  # noqa: E402

__all__ = ["FusionResult", "fuse", "__version__"]
