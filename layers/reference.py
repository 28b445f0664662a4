"""Plain loops that read like the formulas: the slowest and plainest statement of each layer.

Each function computes one output element at a time, with no tricks. They are slow (pure
Python loops) and run only on tiny inputs: the tests hold the readable layers, the Numba
kernels under them (`layers/im2col.py`) and the fast route's kernels (`layers/fast/kernels.py`)
to exactly these answers, forward and backward, on awkward shapes. Follow a convolution from
conv_forward_loops (the formula) to im2col (the same sums as one matrix product) to
`layers/conv.py` (that product, grouped).

    conv_forward_loops(x, w, b, stride, pad, groups) -> out (N, F, OH, OW)
    conv_backward_loops(dout, x, w, stride, pad, groups) -> dx, dw, db

    im2col(x, KH, KW, stride, pad)            -> cols (C*KH*KW, N*OH*OW)
    col2im(cols, x_shape, KH, KW, stride, pad) -> dx (N, C, H, W)
    maxpool(x, KH, KW, stride)                 -> out (N, C, OH, OW), argmax (N, C, OH, OW)
    maxpool_grad(dout, argmax, x_shape)        -> dx (N, C, H, W)
    lrn(x, size, k, alpha, beta)               -> out, scale (both N, C, H, W)
    lrn_grad(dout, x, out, scale, size, alpha, beta) -> dx (N, C, H, W)

Dimensions: N batch, C channels, H, W input height and width, KH, KW kernel (window) size,
OH, OW output size. `alpha` in the LRN kernels is the coefficient that multiplies the sum of
squares (the paper's alpha; PyTorch's alpha/size), see `layers.lrn`.
"""

import numpy as np
from numba.extending import register_jitable


@register_jitable   # (callable from Python and from Numba kernels alike)
def out_size(size, k, stride, pad):
    """Output length of a window of length k sliding with `stride` over `size + 2*pad`: the one
    statement of OH = (H + 2*pad - KH) // stride + 1 that every layer and kernel uses."""
    return (size + 2 * pad - k) // stride + 1


def conv_forward_loops(x, w, b, stride, pad, groups):
    """out[n, f, oh, ow] = b[f] + sum_{c, i, j} w[f, c, i, j] * xpad[n, g*C/G + c, oh*stride + i, ow*stride + j]

    for the group g = f // (F/G) of filter f, c over that group's C/G input channels."""
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    out = np.zeros((N, F, OH, OW), dtype=x.dtype)
    for n in range(N):
        for f in range(F):
            g = f // (F // groups)
            for oh in range(OH):
                for ow in range(OW):
                    total = b[f]
                    for c in range(Cg):
                        for i in range(KH):
                            for j in range(KW):
                                total += w[f, c, i, j] * xpad[n, g * Cg + c, oh * stride + i, ow * stride + j]
                    out[n, f, oh, ow] = total
    return out


def conv_backward_loops(dout, x, w, stride, pad, groups):
    """The same loops run backwards: each term w * xpad of an output sends dout * xpad to dw
    and dout * w to dxpad (+=, since every weight and most pixels serve many outputs); db sums
    dout. The padding's gradient is dropped at the end."""
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    OH, OW = dout.shape[2:]
    xpad = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    dxpad, dw, db = np.zeros_like(xpad), np.zeros_like(w), np.zeros(F, dtype=dout.dtype)
    for n in range(N):
        for f in range(F):
            g = f // (F // groups)
            for oh in range(OH):
                for ow in range(OW):
                    d = dout[n, f, oh, ow]
                    db[f] += d
                    for c in range(Cg):
                        for i in range(KH):
                            for j in range(KW):
                                ih, iw = oh * stride + i, ow * stride + j
                                dw[f, c, i, j] += d * xpad[n, g * Cg + c, ih, iw]
                                dxpad[n, g * Cg + c, ih, iw] += d * w[f, c, i, j]
    return dxpad[:, :, pad:pad + H, pad:pad + W], dw, db


def im2col(x, KH, KW, stride, pad):
    """Unfold every KH x KW receptive field of x into a column.

    Row r = (c*KH + i)*KW + j holds input channel c at kernel offset (i, j); column
    q = (n*OH + oh)*OW + ow is output position (oh, ow) of image n. Positions that fall in the
    zero padding read as 0.
    """
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    cols = np.zeros((C * KH * KW, N * OH * OW), dtype=x.dtype)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for n in range(N):
                    for oh in range(OH):
                        for ow in range(OW):
                            ih = oh * stride - pad + i
                            iw = ow * stride - pad + j
                            if 0 <= ih < H and 0 <= iw < W:
                                cols[r, (n * OH + oh) * OW + ow] = x[n, c, ih, iw]
    return cols


def col2im(cols, x_shape, KH, KW, stride, pad):
    """The adjoint of im2col: add every column entry back onto the input pixel it was read from.

    A pixel read by several receptive fields (kernel larger than stride) receives the sum of
    their gradients, hence `+=`. Entries that were read from the padding are dropped.
    """
    N, C, H, W = x_shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    dx = np.zeros(x_shape, dtype=cols.dtype)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for n in range(N):
                    for oh in range(OH):
                        for ow in range(OW):
                            ih = oh * stride - pad + i
                            iw = ow * stride - pad + j
                            if 0 <= ih < H and 0 <= iw < W:
                                dx[n, c, ih, iw] += cols[r, (n * OH + oh) * OW + ow]
    return dx


def maxpool(x, KH, KW, stride):
    """out[n, c, oh, ow] = max of the KH x KW window at (oh*stride, ow*stride).

    argmax holds the winner's flat index ih*W + iw in its (H, W) plane. Ties go to the first
    maximum met in row-major order inside the window (a later equal value does not replace it).
    """
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, stride, 0), out_size(W, KW, stride, 0)
    out = np.empty((N, C, OH, OW), dtype=x.dtype)
    argmax = np.empty((N, C, OH, OW), dtype=np.int32)
    for n in range(N):
        for c in range(C):
            for oh in range(OH):
                for ow in range(OW):
                    best, best_at = -np.inf, -1
                    for i in range(KH):
                        for j in range(KW):
                            ih, iw = oh * stride + i, ow * stride + j
                            if x[n, c, ih, iw] > best:
                                best, best_at = x[n, c, ih, iw], ih * W + iw
                    out[n, c, oh, ow] = best
                    argmax[n, c, oh, ow] = best_at
    return out, argmax


def maxpool_grad(dout, argmax, x_shape):
    """Send each output gradient to its window's winner; overlapping windows accumulate (+=)."""
    N, C, H, W = x_shape
    dx = np.zeros(x_shape, dtype=dout.dtype)
    for n in range(N):
        for c in range(C):
            for oh in range(dout.shape[2]):
                for ow in range(dout.shape[3]):
                    ih, iw = divmod(int(argmax[n, c, oh, ow]), W)
                    dx[n, c, ih, iw] += dout[n, c, oh, ow]
    return dx


def lrn_window(c, C, size):
    """Channels summed for channel c: c - size//2 ... c + (size-1)//2, clipped to [0, C)."""
    return range(max(0, c - size // 2), min(C, c + (size - 1) // 2 + 1))


def lrn(x, size, k, alpha, beta):
    """scale_c = k + alpha * sum_{j in window(c)} x_j^2 ;  out_c = x_c * scale_c^(-beta)."""
    N, C, H, W = x.shape
    scale = np.empty_like(x)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    sum_sq = 0.0
                    for j in lrn_window(c, C, size):
                        sum_sq += x[n, j, h, w] ** 2
                    scale[n, c, h, w] = k + alpha * sum_sq
    out = x * scale ** (-beta)
    return out, scale


def lrn_grad(dout, x, out, scale, size, alpha, beta):
    """dx_j = dout_j * scale_j^(-beta) - 2*alpha*beta * x_j * sum_{i: j in window(i)} dout_i * out_i / scale_i.

    (Derivation in `layers.lrn`.) The window relation is not symmetric when size is even, so
    the inner sum runs over the channels i whose window contains j.
    """
    N, C, H, W = x.shape
    dx = np.empty_like(x)
    for n in range(N):
        for j in range(C):
            for h in range(H):
                for w in range(W):
                    cross = 0.0
                    for i in range(C):
                        if j in lrn_window(i, C, size):
                            cross += dout[n, i, h, w] * out[n, i, h, w] / scale[n, i, h, w]
                    dx[n, j, h, w] = (dout[n, j, h, w] * scale[n, j, h, w] ** (-beta)
                                      - 2.0 * alpha * beta * x[n, j, h, w] * cross)
    return dx
