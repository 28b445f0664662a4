"""Fast convolution: the same functions as `layers/conv.py`, with the same signatures and
answers (to rounding), and three tricks the readable version leaves out.

    conv_forward(x, w, b, *, stride, pad, groups)       = layers.conv_forward
    conv_relu_forward(x, w, b, *, stride, pad, groups)  = relu(layers.conv_forward(...))
    conv_backward(dout, cache, *, need_dx=True)         = layers.conv_backward
                                                          (+ relu_backward for a fused cache)

1. Winograd. Stride-1 layers with 3x3 or 5x5 filters and at least WINOGRAD_MIN_CHANNELS input
   channels per group (conv2 to conv5) go through `winograd.py`: Winograd's minimal
   filtering, 2.6-5.8x fewer multiplications; the cache keeps its transformed input tiles
   for the backward pass when they are small. Everything else takes im2col below.
2. Fused ReLU. In AlexNet every convolution is followed by a ReLU. `conv_relu_forward`
   applies it in the pass that adds the bias and lays the product out as NCHW (one pass over
   the output instead of two, one array instead of two); `conv_backward` on its cache applies
   the ReLU's backward (dout where out > 0) in the pass that lays dout out for the matrix
   products, and sums the bias gradient in that same pass.
3. Pieces of images. `cols` is KH*KW/stride^2 times larger than the input, so the batch goes
   through in pieces of a few images whose `cols` fits PIECE_COLS_BYTES (it stays in cache),
   and each piece runs im2col, its products (on one BLAS thread) and the layout pass from
   start to end on whichever thread takes it (`threads.share`): no thread waits for another
   inside the layer. The backward pass rebuilds `cols` piece by piece instead of keeping it,
   and sums the pieces' shares of dw in piece order.

Dimensions as in `layers/conv.py`: N batch, C, H, W input, F filters, G groups, KH, KW kernel,
OH, OW output, P = OH*OW, K = (C/G)*KH*KW. What each trick buys: docs/performance.md.
"""

from typing import NamedTuple, Optional

import numpy as np

from . import buffers, kernels, threads, winograd
from .._checks import check_conv_args, check_conv_dout
from ..reference import out_size

PIECE_COLS_BYTES = 2**20  # the im2col matrix of one piece of images (a few images: it stays in cache)
# Stride-1 convolutions with 3x3 or 5x5 filters and at least this many input channels per
# group take the Winograd route (winograd.py). With fewer (cifar's conv1 sees the 3
# colour channels) the matrix products are too thin for the saving to pay for the
# transforms.
WINOGRAD_MIN_CHANNELS = 8


def uses_winograd(w_shape, stride):
    """Whether a convolution with weights of shape (F, C/groups, KH, KW) and this stride runs
    through winograd.py (the same maths, 2.6-5.8x fewer multiplications)."""
    F, Cg, KH, KW = w_shape
    return KH == KW and KH in (3, 5) and stride == 1 and Cg >= WINOGRAD_MIN_CHANNELS


class ConvCache(NamedTuple):
    x: np.ndarray  # (N, C, H, W) the input, C-contiguous
    w: np.ndarray  # (F, C/G, KH, KW)
    stride: int
    pad: int
    groups: int
    relu_out: Optional[np.ndarray] = None  # the output, when a ReLU was fused in (its mask)
    tiles: Optional[dict] = None           # Winograd's transformed input, kept (winograd.forward)


def _image_pieces(x, KH, KW, P):
    """Cut the batch into consecutive [n0, n1) pieces of images whose im2col matrix fits
    PIECE_COLS_BYTES (at least one image a piece)."""
    N, C = x.shape[:2]
    per_piece = max(1, min(N, PIECE_COLS_BYTES // max(1, C * KH * KW * P * x.itemsize)))
    return [(n0, min(N, n0 + per_piece)) for n0 in range(0, N, per_piece)]


def conv_forward(x, w, b, *, stride=1, pad=0, groups=1):
    """Inputs: x (N, C, H, W), w (F, C/groups, KH, KW), b (F,); stride, pad, groups ints.
    Returns: out (N, F, OH, OW), cache (ConvCache) for conv_backward.
    """
    return _conv_forward(x, w, b, stride, pad, groups, relu=False)


def conv_relu_forward(x, w, b, *, stride=1, pad=0, groups=1):
    """relu(conv_forward(x, w, b, ...)), fused (see the module docstring); conv_backward
    differentiates both. Returns: out (N, F, OH, OW), cache (ConvCache)."""
    return _conv_forward(x, w, b, stride, pad, groups, relu=True)


def _conv_forward(x, w, b, stride, pad, groups, relu):
    check_conv_args(x, w, b, stride, pad, groups)
    x = np.ascontiguousarray(x)
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    G, K = groups, Cg * KH * KW
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    P = OH * OW
    if uses_winograd(w.shape, stride):
        out, tiles = winograd.forward(x, np.ascontiguousarray(w), b, pad, groups, relu)
        return out, ConvCache(x, w, stride, pad, groups, out if relu else None, tiles)

    w_g = np.ascontiguousarray(w).reshape(G, F // G, K)             # (G, F/G, K)
    out = buffers.empty((N, F, P), x.dtype)                          # (N, F, P)
    pieces = _image_pieces(x, KH, KW, P)

    def piece(i):   # one piece of images, start to end on one thread
        n0, n1 = pieces[i]
        NP = (n1 - n0) * P
        cols = kernels.im2col(x[n0:n1], KH, KW, stride, pad)        # (C*KH*KW, nb*P)
        mat = np.matmul(w_g, cols.reshape(G, K, NP),                 # out_g = w_g @ cols_g
                        out=buffers.empty((G, F // G, NP), x.dtype))
        kernels.mat_to_nchw(mat.reshape(F, NP), b, relu, out[n0:n1])  # + b (, ReLU), to (nb, F, P)
    threads.share_blas_work(piece, len(pieces))
    out = out.reshape(N, F, OH, OW)
    return out, ConvCache(x, w, stride, pad, groups, out if relu else None)


def conv_backward(dout, cache, *, need_dx=True):
    """Inputs: dout (N, F, OH, OW), cache from conv_forward.
    Returns: dx (N, C, H, W) (None when need_dx=False: the first layer's input is the image),
             dw (F, C/groups, KH, KW), db (F,).
    """
    x, w, stride, pad, G, relu_out, tiles = cache
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    K = Cg * KH * KW
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    check_conv_dout(dout, x, (N, F, OH, OW))
    P = OH * OW
    dout = np.ascontiguousarray(dout)
    if uses_winograd(w.shape, stride):
        return winograd.backward(dout, x, np.ascontiguousarray(w), pad, G, relu_out, need_dx, tiles)
    dout = dout.reshape(N, F, P)
    if relu_out is not None:
        # forward was out = relu(conv): dout first goes back through the ReLU (dout where
        # out > 0, else 0), fused into the layout pass below
        relu_out = relu_out.reshape(N, F, P)
    w_g = np.ascontiguousarray(w).reshape(G, F // G, K)              # (G, F/G, K)
    w_gT = w_g.transpose(0, 2, 1)                                    # (G, K, F/G)
    dx = buffers.empty_like(x) if need_dx else None
    image_sums = np.empty((N, F), dtype=np.float64)                  # sums[n, f] of dout[n, f]
    pieces = _image_pieces(x, KH, KW, P)
    dw_parts = np.empty((len(pieces), G, F // G, K), dtype=x.dtype)  # each piece's share of dw

    def piece(i):   # one piece of images, start to end on one thread
        n0, n1 = pieces[i]
        NP = (n1 - n0) * P
        cols = kernels.im2col(x[n0:n1], KH, KW, stride, pad).reshape(G, K, NP)
        dmat = buffers.empty((F, NP), x.dtype)
        # forward: out[n, f, :] = ... + b[f], so db[f] sums dout over images and positions;
        # the pass that lays dout out as (F, nb*P) also sums each image's row
        if relu_out is None:
            kernels.nchw_to_mat(dout[n0:n1], dout[n0:n1], False, image_sums[n0:n1], dmat)
        else:
            kernels.nchw_to_mat(dout[n0:n1], relu_out[n0:n1], True, image_sums[n0:n1], dmat)
        dmat = dmat.reshape(G, F // G, NP)                           # (G, F/G, nb*P)
        # forward: out_g = w_g @ cols_g, so dw_g = dout_g @ cols_g.T (summed over the pieces)
        np.matmul(dmat, cols.transpose(0, 2, 1), out=dw_parts[i])
        if need_dx:
            # and dcols_g = w_g.T @ dout_g; cols is spent, so its buffer takes dcols
            dcols = np.matmul(w_gT, dmat, out=cols)                  # (G, K, nb*P)
            kernels.col2im(dcols.reshape(C * KH * KW, NP), (n1 - n0, C, H, W),
                           KH, KW, stride, pad, out=dx[n0:n1])
    threads.share_blas_work(piece, len(pieces))
    dw = dw_parts.sum(axis=0)                 # in piece order: the same bits on any thread count
    return dx, dw.reshape(F, Cg, KH, KW), image_sums.sum(axis=0).astype(x.dtype)
