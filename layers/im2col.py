"""im2col and col2im: the two short Numba kernels the readable convolution stands on.

    im2col(x, KH, KW, stride, pad)             -> cols (C*KH*KW, N*OH*OW)
    col2im(cols, x_shape, KH, KW, stride, pad) -> dx (N, C, H, W)

Row r = (c*KH + i)*KW + j of `cols` holds input channel c seen at kernel offset (i, j);
column q = (n*OH + oh)*OW + ow is output position (oh, ow) of image n:

    cols[r, q] = x[n, c, oh*stride - pad + i, ow*stride - pad + j]     (0 in the padding)

col2im is its adjoint (transpose): every entry goes back to the pixel it was read from, and
a pixel read by several receptive fields (kernel larger than stride) receives the sum,
hence `+=`. These are the loops of `layers/reference.py`, compiled by Numba (`@njit`) so that
a model built on the readable layers trains at a usable speed; the tests hold them equal to
the reference. The threaded, chunked versions are in `layers/fast/kernels.py`.
"""

import numpy as np
from numba import njit


@njit(cache=True)
def im2col(x, KH, KW, stride, pad):
    N, C, H, W = x.shape
    OH = (H + 2 * pad - KH) // stride + 1
    OW = (W + 2 * pad - KW) // stride + 1
    cols = np.zeros((C * KH * KW, N * OH * OW), dtype=x.dtype)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for n in range(N):
                    for oh in range(OH):
                        ih = oh * stride - pad + i
                        if 0 <= ih < H:
                            for ow in range(OW):
                                iw = ow * stride - pad + j
                                if 0 <= iw < W:
                                    cols[r, (n * OH + oh) * OW + ow] = x[n, c, ih, iw]
    return cols


@njit(cache=True)
def col2im(cols, x_shape, KH, KW, stride, pad):
    N, C, H, W = x_shape
    OH = (H + 2 * pad - KH) // stride + 1
    OW = (W + 2 * pad - KW) // stride + 1
    dx = np.zeros((N, C, H, W), dtype=cols.dtype)
    for c in range(C):
        for i in range(KH):
            for j in range(KW):
                r = (c * KH + i) * KW + j
                for n in range(N):
                    for oh in range(OH):
                        ih = oh * stride - pad + i
                        if 0 <= ih < H:
                            for ow in range(OW):
                                iw = ow * stride - pad + j
                                if 0 <= iw < W:
                                    dx[n, c, ih, iw] += cols[r, (n * OH + oh) * OW + ow]
    return dx
