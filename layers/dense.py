"""Dense (fully connected, affine) layer.

Dimensions: N batch, D inputs, M outputs. The weight is stored (M, D), as PyTorch's Linear does.

Forward:   out = x @ w.T + b                         (N, M)
Backward:  dx = dout @ w                             (N, D)
           dw = dout.T @ x                           (M, D)
           db = sum over the batch of dout           (M,)
"""

from typing import NamedTuple

import numpy as np

from . import buffers
from ._checks import check_float_array, check_same_dtype


class DenseCache(NamedTuple):
    x: np.ndarray  # (N, D)
    w: np.ndarray  # (M, D)


def dense_forward(x, w, b):
    """Inputs: x (N, D), w (M, D), b (M,). Returns: out (N, M), cache (DenseCache)."""
    check_float_array(x, "dense input x", 2, "(N, D)")
    check_float_array(w, "dense weight w", 2, "(M, D)")
    check_float_array(b, "dense bias b", 1, "(M,)")
    check_same_dtype(x=x, w=w, b=b)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"dense weight expects {w.shape[1]} inputs, x has {x.shape[1]}")
    if b.shape[0] != w.shape[0]:
        raise ValueError(f"dense bias has {b.shape[0]} entries for {w.shape[0]} outputs")
    out = np.matmul(x, w.T, out=buffers.empty((x.shape[0], w.shape[0]), x.dtype))
    out += b
    return out, DenseCache(x, w)


def dense_backward(dout, cache):
    """Inputs: dout (N, M), cache. Returns: dx (N, D), dw (M, D), db (M,)."""
    x, w = cache
    check_float_array(dout, "dense upstream gradient dout", 2, "(N, M)")
    check_same_dtype(dout=dout, x=x)
    if dout.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dout has shape {dout.shape}, the dense output is {(x.shape[0], w.shape[0])}")
    # forward: out = x @ w.T + b
    dx = np.matmul(dout, w, out=buffers.empty(x.shape, x.dtype))
    dw = np.matmul(dout.T, x, out=buffers.empty(w.shape, x.dtype))
    db = dout.sum(axis=0)
    return dx, dw, db
