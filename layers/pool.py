"""Max-pooling, including AlexNet's overlapping 3x3 windows with stride 2.

Dimensions: N batch, C channels, H, W input size, KH, KW window size, OH, OW output size.

    OH = (H - KH) // stride + 1        OW = (W - KW) // stride + 1     (no padding; a last
                                                                     partial window is dropped)
Forward:  out[n, c, oh, ow] = max_{i < KH, j < KW} x[n, c, oh*stride + i, ow*stride + j]

Backward: the max passes the gradient to the one input that won and zero to the others:

    dx[n, c, h, w] = sum over the windows whose winner is (h, w) of dout[n, c, oh, ow]

With stride < window (AlexNet's "overlapping pooling", 3/2) one pixel can win two or more
neighbouring windows, so its gradient is *accumulated* (+=), not assigned. The forward pass keeps
the winner of every window (`argmax`, its flat index h*W + w in the plane), so the backward pass
never searches the windows again.

Ties: the first maximum in row-major order inside the window wins (a later equal value does not
replace it); this is also what PyTorch's CPU max_pool2d does. Exact ties are rare with real
activations, except at ReLU's zeros, where any choice is a valid subgradient.

Kernels: `layers.kernels.maxpool` / `maxpool_grad`; plain references in `layers.reference`.
"""

from typing import NamedTuple

import numpy as np

from . import kernels
from ._checks import check_float_array, check_positive_int, pair


class PoolCache(NamedTuple):
    x_shape: tuple   # (N, C, H, W)
    dtype: np.dtype
    argmax: np.ndarray  # (N, C, OH, OW) int32 flat index h*W + w of each window's winner


def maxpool_forward(x, *, size=3, stride=2):
    """Inputs: x (N, C, H, W); size int or (KH, KW); stride int.
    Returns: out (N, C, OH, OW), cache (PoolCache).
    """
    check_float_array(x, "max-pool input x", 4, "(N, C, H, W)")
    KH, KW = pair(size, "pool size")
    check_positive_int(stride, "pool stride")
    N, C, H, W = x.shape
    if KH > H or KW > W:
        raise ValueError(f"pool window {KH}x{KW} is larger than the input {H}x{W}")
    out, argmax = kernels.maxpool(np.ascontiguousarray(x), KH, KW, stride)
    return out, PoolCache(x.shape, x.dtype, argmax)


def maxpool_backward(dout, cache):
    """Inputs: dout (N, C, OH, OW), cache from maxpool_forward. Returns: dx (N, C, H, W)."""
    check_float_array(dout, "max-pool upstream gradient dout", 4, "(N, C, OH, OW)")
    if dout.dtype != cache.dtype:
        raise ValueError(f"dtypes must match: dout {dout.dtype}, x {cache.dtype}")
    if dout.shape != cache.argmax.shape:
        raise ValueError(f"dout has shape {dout.shape}, the pool's output is {cache.argmax.shape}")
    return kernels.maxpool_grad(np.ascontiguousarray(dout), cache.argmax, cache.x_shape)
