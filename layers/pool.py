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

The plain loops are `layers/reference.py`'s maxpool and maxpool_grad; the fast route's Numba
kernels are in `layers/fast/`.
"""

from typing import NamedTuple

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ._checks import check_pool_args, check_pool_dout
from .reference import out_size


class PoolCache(NamedTuple):
    x_shape: tuple   # (N, C, H, W)
    dtype: np.dtype
    argmax: np.ndarray  # (N, C, OH, OW) int32 flat index h*W + w of each window's winner


def maxpool_forward(x, *, size=3, stride=2):
    """Inputs: x (N, C, H, W); size int or (KH, KW); stride int.
    Returns: out (N, C, OH, OW), cache (PoolCache).
    """
    KH, KW = check_pool_args(x, size, stride)
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, stride, 0), out_size(W, KW, stride, 0)
    # windows[n, c, oh, ow] = x[n, c, oh*stride : oh*stride + KH, ow*stride : ow*stride + KW]
    windows = sliding_window_view(x, (KH, KW), axis=(2, 3))[:, :, ::stride, ::stride]
    windows = windows.reshape(N, C, OH, OW, KH * KW)            # (N, C, OH, OW, KH*KW)
    k = windows.argmax(axis=-1)               # the winner's place in its window (first max wins)
    out = np.take_along_axis(windows, k[..., None], axis=-1)[..., 0]   # (N, C, OH, OW)
    ih = np.arange(OH).reshape(OH, 1) * stride + k // KW        # the winner's row in the plane
    iw = np.arange(OW) * stride + k % KW                        # and column
    return out, PoolCache(x.shape, x.dtype, (ih * W + iw).astype(np.int32))


def maxpool_backward(dout, cache):
    """Inputs: dout (N, C, OH, OW), cache from maxpool_forward. Returns: dx (N, C, H, W)."""
    check_pool_dout(dout, cache.dtype, cache.argmax.shape)
    N, C, H, W = cache.x_shape
    dx = np.zeros((N * C, H * W), dtype=dout.dtype)             # one row per (n, c) plane
    # forward: out[n, c, o] = x[n, c, argmax[n, c, o]], so dout[n, c, o] goes to that pixel;
    # overlapping windows can share a winner, so add.at accumulates (+=) where indexing would
    # keep only one of them
    planes = np.arange(N * C).reshape(N * C, 1)
    np.add.at(dx, (planes, cache.argmax.reshape(N * C, -1)), dout.reshape(N * C, -1))
    return dx.reshape(N, C, H, W)
