"""Dense (fully connected, affine) layer.

Dimensions: N batch, D inputs, M outputs. The weight is stored (M, D), as PyTorch's Linear does.

Forward:   out = x @ w.T + b                         (N, M)
Backward:  dx = dout @ w                             (N, D)
           dw = dout.T @ x                           (M, D)
           db = sum over the batch of dout           (M,)
"""

from typing import NamedTuple

import numpy as np

from ._checks import check_dense_args, check_dense_dout


class DenseCache(NamedTuple):
    x: np.ndarray  # (N, D)
    w: np.ndarray  # (M, D)


def dense_forward(x, w, b):
    """Inputs: x (N, D), w (M, D), b (M,). Returns: out (N, M), cache (DenseCache)."""
    check_dense_args(x, w, b)
    out = x @ w.T + b
    return out, DenseCache(x, w)


def dense_backward(dout, cache):
    """Inputs: dout (N, M), cache. Returns: dx (N, D), dw (M, D), db (M,)."""
    x, w = cache
    check_dense_dout(dout, x, w)
    # forward: out = x @ w.T + b
    dx = dout @ w
    dw = dout.T @ x
    db = dout.sum(axis=0)
    return dx, dw, db
