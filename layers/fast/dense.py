"""Fast dense layer: `layers.dense_forward` / `dense_backward` with the same signatures, cache
and answers; the products write into recycled buffers (`buffers.py`) instead of fresh arrays,
cut into pieces that the threads share (`gemm.py`).
The readable version and the maths: `layers/dense.py`.
"""

import numpy as np

from . import buffers, gemm
from .._checks import check_dense_args, check_dense_dout
from ..dense import DenseCache


def dense_forward(x, w, b):
    """= layers.dense_forward. Returns: out (N, M), cache (DenseCache)."""
    check_dense_args(x, w, b)
    out = gemm.matmul(x, w.T, buffers.empty((x.shape[0], w.shape[0]), x.dtype))
    out += b
    return out, DenseCache(x, w)


def dense_backward(dout, cache):
    """= layers.dense_backward. Returns: dx (N, D), dw (M, D), db (M,)."""
    x, w = cache
    check_dense_dout(dout, x, w)
    dx = gemm.matmul(dout, w, buffers.empty(x.shape, x.dtype))
    dw = gemm.matmul(dout.T, x, buffers.empty(w.shape, x.dtype))
    return dx, dw, dout.sum(axis=0)
