"""im2col and col2im: the two short Numba kernels the readable convolution stands on.

    im2col(x, KH, KW, stride, pad)             -> cols (C*KH*KW, N*OH*OW)
    col2im(cols, x_shape, KH, KW, stride, pad) -> dx (N, C, H, W)

Row r = (c*KH + i)*KW + j of `cols` holds input channel c seen at kernel offset (i, j);
column q = (n*OH + oh)*OW + ow is output position (oh, ow) of image n:

    cols[r, q] = x[n, c, oh*stride - pad + i, ow*stride - pad + j]     (0 in the padding)

col2im is its adjoint (transpose): every entry goes back to the pixel it was read from, and
a pixel read by several receptive fields (kernel larger than stride) receives the sum,
hence `+=`. These are the loops of `layers/reference.py` themselves, compiled by Numba
(`njit`) so that a model built on the readable layers trains at a usable speed; the tests hold
the compiled loops equal to the interpreted ones. The threaded, chunked versions are in
`layers/fast/kernels.py`.
"""

from numba import njit

from . import reference

im2col = njit(cache=True)(reference.im2col)
col2im = njit(cache=True)(reference.col2im)
