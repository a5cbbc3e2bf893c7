"""pyfusion: multi-focus image fusion. The CNN of Liu, Chen, Peng, Wang (Information Fusion 36, 2017), wavelet-domain
CNN fusion, the survey's DWT baseline and focus stacks, with fast CPU inference and the survey's metrics.

``pyfusion.fuse(images, method=..., **options)`` fuses; ``pyfusion.evaluate(sources, fused, reference=None)``
measures; ``pyfusion.METHODS`` names the methods. The command line is ``pyfusion`` (``pyfusion --help``).

References
----------
.. [1] Y. Liu, X. Chen, H. Peng, Z. Wang, "Multi-focus image fusion with a deep convolutional neural network",
   Information Fusion 36 (2017) 191-207.
"""
__version__ = "0.2.0"

from pyfusion.fusion import METHODS, FusionResult, evaluate, fuse  # noqa: E402

__all__ = ["FusionResult", "fuse", "evaluate", "METHODS", "__version__"]
