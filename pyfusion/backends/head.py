"""The folded head: fc2 . fc1 of the siamese net as one filter and one bias (used by every backend and by the
lab's ONNX export): ``softmax(W2 (W1 x + b1) + b2)[1] = sigmoid(<fold_head(W1, W2), x> + fold_head_bias(W2, b1, b2))``.
"""
from __future__ import annotations

import numpy as np

from pyfusion.constants import FC1_KERNEL

__all__ = ["fold_head", "fold_head_bias"]


def fold_head(w1: np.ndarray, w2: np.ndarray, *, kernel: int | None = None) -> np.ndarray:
    """The folded head filter ``(W2[1] - W2[0]) @ W1`` reshaped to ``(1, C, K, K)``.

    Parameters
    ----------
    w1 : ndarray (H, C*K*K)
        fc1 weights (or fc1-conv weights (H, C, K, K), any shape with H rows).
    w2 : ndarray (2, H)
        fc2 weights.
    kernel : int, optional
        K (default: ``w1.shape[-1]`` for 4-D fc1-conv weights, else 8, the paper's head).

    Returns
    -------
    ndarray (1, C, K, K), float32
        ``sigmoid(<w, x>)`` equals ``softmax(W2 @ W1 @ x)[1]`` for every ``x`` (computed in float64); with fc
        biases add :func:`fold_head_bias` inside the sigmoid.
    """
    if kernel is None:
        kernel = np.shape(w1)[-1] if np.ndim(w1) == 4 else FC1_KERNEL
    w1 = np.asarray(w1, dtype=np.float64).reshape(np.shape(w1)[0], -1)
    w2 = np.asarray(w2, dtype=np.float64).reshape(2, -1)
    w = (w2[1] - w2[0]) @ w1
    return w.reshape(1, -1, kernel, kernel).astype(np.float32)


def fold_head_bias(w2: np.ndarray, b1=None, b2=None) -> np.float32:
    """The folded head's scalar bias ``(W2[1] - W2[0]) . b1 + b2[1] - b2[0]`` (float64, returned as float32).

    ``softmax(W2 (W1 x + b1) + b2)[1] = sigmoid(<fold_head(W1, W2), x> + fold_head_bias(W2, b1, b2))``; a missing
    bias counts as zero.
    """
    w2 = np.asarray(w2, dtype=np.float64).reshape(2, -1)
    beta = 0.0
    if b1 is not None:
        beta += float((w2[1] - w2[0]) @ np.asarray(b1, np.float64).reshape(-1))
    if b2 is not None:
        b2 = np.asarray(b2, np.float64).reshape(-1)
        beta += float(b2[1] - b2[0])
    return np.float32(beta)
