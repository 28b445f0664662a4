"""Fast max-pooling: `layers.maxpool_forward` / `maxpool_backward` with the same signatures,
cache and answers, as Numba kernels (`kernels.maxpool`, `kernels.maxpool_grad`) that run on
threads and write into recycled buffers. The readable version and the maths: `layers/pool.py`.
"""

import numpy as np

from . import kernels
from .._checks import check_pool_args, check_pool_dout
from ..pool import PoolCache


def maxpool_forward(x, *, size=3, stride=2):
    """= layers.maxpool_forward. Returns: out (N, C, OH, OW), cache (PoolCache)."""
    KH, KW = check_pool_args(x, size, stride)
    out, argmax = kernels.maxpool(np.ascontiguousarray(x), KH, KW, stride)
    return out, PoolCache(x.shape, x.dtype, argmax)


def maxpool_backward(dout, cache):
    """= layers.maxpool_backward. Returns: dx (N, C, H, W)."""
    check_pool_dout(dout, cache.dtype, cache.argmax.shape)
    return kernels.maxpool_grad(np.ascontiguousarray(dout), cache.argmax, cache.x_shape)
