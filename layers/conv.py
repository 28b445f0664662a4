"""Convolution (strided, zero-padded, grouped) as im2col + one matrix product per group.

Dimensions: N batch, C input channels, H, W input size, F filters (output channels),
G groups, KH, KW kernel size, OH, OW output size, P = OH*OW, K = (C/G)*KH*KW.

    OH = (H + 2*pad - KH) // stride + 1        OW = (W + 2*pad - KW) // stride + 1

Forward. Each output pixel is a dot product between a filter and the receptive field under it:

    out[n, f, oh, ow] = b[f] + sum_{c in group(f), i, j} w[f, c', i, j] * xpad[n, c, oh*stride + i, ow*stride + j]

(the loops of `layers/reference.py`, conv_forward_loops, say exactly this). im2col copies every
receptive field into a column of `cols` (C*KH*KW, N*P), so the whole convolution becomes a
matrix product: out (F, N*P) = w (F, K) @ cols (K, N*P).

Groups (the paper's two GPUs). Filters f in group g see only input channels
g*C/G ... (g+1)*C/G - 1. Because the rows of `cols` are ordered by channel first, group g's
rows are one contiguous block, so `cols.reshape(G, K, N*P)` hands each group its slice without
copying the input, and one batched product does all groups:

    out_g (F/G, N*P) = w_g (F/G, K) @ cols_g (K, N*P)          for g = 0 .. G-1

Backward. With dout_g (F/G, N*P) the output gradient of group g laid out like out_g:

    forward:  out_g = w_g @ cols_g + b
    so:       dw_g    = dout_g @ cols_g.T        (F/G, K)
              dcols_g = w_g.T @ dout_g           (K, N*P)
              db[f]   = sum over n, oh, ow of dout[n, f, oh, ow]
              dx      = col2im(dcols)            (the adjoint of im2col: overlapping receptive
                                                  fields add their gradients into one pixel)

The fast route (`layers/fast/conv.py`) computes the same with Winograd's algorithm for the
3x3 and 5x5 layers, a fused ReLU and recycled buffers; the tests hold the two equal.
"""

from typing import NamedTuple

import numpy as np

from ._checks import check_conv_args, check_conv_dout
from .im2col import col2im, im2col
from .reference import out_size


class ConvCache(NamedTuple):
    x_shape: tuple      # (N, C, H, W)
    cols: np.ndarray    # (C*KH*KW, N*P) the receptive fields, from im2col
    w: np.ndarray       # (F, C/G, KH, KW)
    stride: int
    pad: int
    groups: int


def conv_forward(x, w, b, *, stride=1, pad=0, groups=1):
    """Inputs: x (N, C, H, W), w (F, C/groups, KH, KW), b (F,); stride, pad, groups ints.
    Returns: out (N, F, OH, OW), cache (ConvCache) for conv_backward.
    """
    check_conv_args(x, w, b, stride, pad, groups)
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    G, K = groups, Cg * KH * KW
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    cols = im2col(x, KH, KW, stride, pad)                      # (C*KH*KW, N*P)
    w_g = w.reshape(G, F // G, K)                               # (G, F/G, K)
    out = w_g @ cols.reshape(G, K, N * OH * OW)                 # (G, F/G, N*P): out_g = w_g @ cols_g
    out = out.reshape(F, N, OH, OW).transpose(1, 0, 2, 3)       # (N, F, OH, OW)
    out = out + b.reshape(1, F, 1, 1)
    return out, ConvCache(x.shape, cols, w, stride, pad, groups)


def conv_backward(dout, cache, *, need_dx=True):
    """Inputs: dout (N, F, OH, OW), cache from conv_forward.
    Returns: dx (N, C, H, W) (None when need_dx=False: the first layer's input is the image),
             dw (F, C/groups, KH, KW), db (F,).
    """
    x_shape, cols, w, stride, pad, G = cache
    N, C, H, W = x_shape
    F, Cg, KH, KW = w.shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    check_conv_dout(dout, cols, (N, F, OH, OW))
    K, NP = Cg * KH * KW, N * OH * OW
    dout_g = dout.transpose(1, 0, 2, 3).reshape(G, F // G, NP)  # (G, F/G, N*P), laid out like out_g
    cols_g = cols.reshape(G, K, NP)                             # (G, K, N*P)
    # forward: out_g = w_g @ cols_g + b
    dw = dout_g @ cols_g.transpose(0, 2, 1)                     # (G, F/G, K)  dw_g = dout_g @ cols_g.T
    db = dout.sum(axis=(0, 2, 3))                               # (F,)
    if not need_dx:
        return None, dw.reshape(w.shape), db
    dcols = w.reshape(G, F // G, K).transpose(0, 2, 1) @ dout_g  # (G, K, N*P)  dcols_g = w_g.T @ dout_g
    dx = col2im(dcols.reshape(G * K, NP), x_shape, KH, KW, stride, pad)
    return dx, dw.reshape(w.shape), db
