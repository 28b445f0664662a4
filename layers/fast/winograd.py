"""Stride-1 convolution by Winograd's minimal filtering, F(4x4, 3x3): the fast path for 3x3
and 5x5 filters (conv2 to conv5 of both models).

This computes the same convolution as `layers/conv.py` (and as the plain loops in
`layers/reference.py`, which stay the definition), with 2.4-3x fewer multiplications. In the
`cifar` model the matrix products of those four layers were most of a training step. Read
conv.py first.

The idea, in one dimension. Four outputs of a 3-tap correlation read six inputs:

    y[i] = d[i] g[0] + d[i+1] g[1] + d[i+2] g[2]          for i = 0..3: 12 multiplications

Winograd's algorithm does it with 6. Transform the six inputs (B^T d) and the three taps
(G g) into six numbers each, multiply them elementwise, and transform the six products back:

    y = A^T [ (G g) * (B^T d) ]                                     (* elementwise)

The transforms are fixed matrices of small numbers (below): they come from evaluating the
polynomials d(x) and g(x) at the points 0, 1, -1, 2, -2 and infinity, multiplying the
values (a polynomial product), and interpolating back (Lavin and Gray, "Fast Algorithms for
Convolutional Neural Networks", 2016). The tests check the identity numerically.

In two dimensions the transforms act on rows and columns of a tile: a 6x6 input tile d gives
a 4x4 output tile, with the 3x3 filter g:

    Y = A^T [ (G g G^T) * (B^T d B) ] A                              36 products, not 144

A convolution layer sums this over input channels c, and the sum commutes with A^T . A: for
each of the 36 positions (i, j) of a transformed tile, the sum over c is a matrix product:

    U[ij] = (G w[f, c] G^T)[i, j]             (F, C)    transformed filters
    V[ij] = (B^T d[c, tile] B)[i, j]          (C, T)    transformed input tiles (T = N * tiles)
    M[ij] = U[ij] @ V[ij]                     (F, T)    36 matrix products
    out[tile] = A^T M[.., tile] A             4x4 outputs per tile and filter

Groups work as in conv.py: each group's channels and filters are a block, so the products
are batched over (ij, group). Tiles overlap by two pixels (a 3x3 filter needs a 6x6 input for
4x4 outputs); the zero padding, and the part of a tile that hangs over the edge, read as 0.

Backward. Every step above is linear, so each has an adjoint (its transpose), and the backward
pass runs them in reverse order, with dY the output gradient of one tile:

    dM[.., tile] = A dY A^T                   (the adjoint of out = A^T M A)
    dU[ij] = dM[ij] @ V[ij].T                 dV[ij] = U[ij].T @ dM[ij]
    dw[f, c] = G^T dU[f, c] G                 dd[c, tile] = B dV[c, tile] B^T
    dx = the tiles' dd added where they overlap (and dropped where they lie in the padding)

The arithmetic differs from direct summation (the transforms add and subtract numbers of
different sizes), so results agree with the reference to rounding: about 1e-6 of the
largest value in float32, 1e-15 in float64. The gradient checks run on this path.

5x5 filters. Zero-padded to 6x6, a 5x5 filter is a 2x2 grid of 3x3 pieces, at rows and
columns 0 and 3, and the convolution is the sum of the four pieces' 3x3 convolutions, each
reading the input 0 or 3 pixels further down and right. So V gets four rows per channel, one
per piece (tiles read at the piece's offset), U four columns per channel, and the sum over
pieces happens inside the same matrix products: 4 x 36 = 144 multiplications per 4x4 output
tile and channel where direct summation does 16 x 25 = 400. The backward pass adds the
four pieces' tiles back at their offsets, and joins the pieces' gradients into dw.

Memory: V and M take 36 numbers per 4x4 output tile and piece (the im2col matrix takes 9 or
25 per output), so the batch is processed in chunks of images, like im2col, with buffers
that are reused.
"""

import numpy as np
from numba import njit

from . import buffers, gemm
from .kernels import _sum64, threaded_kernel

# F(4x4, 3x3): the points 0, 1, -1, 2, -2 and infinity
BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], dtype=np.float64)          # (6, 6) input transform
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)                      # (6, 3) filter transform
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)          # (4, 6) output transform
M_OUT, ALPHA = 4, 6                 # outputs per tile side; tile side (M_OUT + 3 - 1)

CHUNK_BYTES = 64 * 2**20   # the largest transformed-tile buffer (V or M) a chunk of images may use


# The four small matrix-vector products, written out: the matrices' zeros and ones cost
# nothing this way. The tests check each against its matrix above.
@njit(inline="always")
def _bt(d0, d1, d2, d3, d4, d5):
    """B^T d (6 -> 6)."""
    return (4 * d0 - 5 * d2 + d4,
            -4 * d1 - 4 * d2 + d3 + d4,
            4 * d1 - 4 * d2 - d3 + d4,
            -2 * d1 - d2 + 2 * d3 + d4,
            2 * d1 - d2 - 2 * d3 + d4,
            4 * d1 - 5 * d3 + d5)


@njit(inline="always")
def _b(v0, v1, v2, v3, v4, v5):
    """B v (6 -> 6): the adjoint of _bt."""
    return (4 * v0,
            -4 * v1 + 4 * v2 - 2 * v3 + 2 * v4 + 4 * v5,
            -5 * v0 - 4 * v1 - 4 * v2 - v3 - v4,
            v1 - v2 + 2 * v3 - 2 * v4 - 5 * v5,
            v0 + v1 + v2 + v3 + v4,
            v5)


@njit(inline="always")
def _at(m0, m1, m2, m3, m4, m5):
    """A^T m (6 -> 4)."""
    return (m0 + m1 + m2 + m3 + m4,
            m1 - m2 + 2 * m3 - 2 * m4,
            m1 + m2 + 4 * m3 + 4 * m4,
            m1 - m2 + 8 * m3 - 8 * m4 + m5)


@njit(inline="always")
def _a(e0, e1, e2, e3):
    """A e (4 -> 6): the adjoint of _at."""
    return (e0,
            e0 + e1 + e2 + e3,
            e0 - e1 + e2 - e3,
            e0 + 2 * e1 + 4 * e2 + 8 * e3,
            e0 - 2 * e1 + 4 * e2 - 8 * e3,
            e3)


@threaded_kernel(lambda x, pad, S, TH, TW, V: x.shape[0] * x.shape[1])
def _input_transform(lo, hi, x, pad, S, TH, TW, V):
    """V[(c*S + a)*S + b, 6*i + j, n*T + t] = (B^T d B)[i, j], d the 6x6 input tile t of image n,
    channel c, for the 3x3 piece (a, b) of an S x S grid of pieces (S = 1 for a 3x3 filter, 2
    for 5x5). Tile t = (th, tw) starts at row 4*th + 3*a - pad, column 4*tw + 3*b - pad."""
    N, C, H, W = x.shape
    T = TH * TW
    XH, XW = 4 * TH + 3 * S - 1, 4 * TW + 3 * S - 1
    xp = np.zeros((XH, XW))      # one plane with its zero border: no bounds tests below
    t = np.empty((6, XW))        # B^T applied down the columns of one row of tiles
    for cn in range(lo, hi):     # channel-major: consecutive steps write consecutive columns of V
        c = cn // N
        n = cn % N
        plane = x[n, c]
        for h in range(min(H, XH - pad)):      # (rows and columns no tile reads are left out)
            for w in range(min(W, XW - pad)):
                xp[pad + h, pad + w] = plane[h, w]
        for a in range(S):
            for th in range(TH):
                h0 = 4 * th + 3 * a
                for w in range(XW):              # columns: t[:, w] = B^T xp[h0:h0+6, w]
                    t[0, w], t[1, w], t[2, w], t[3, w], t[4, w], t[5, w] = _bt(
                        xp[h0, w], xp[h0 + 1, w], xp[h0 + 2, w], xp[h0 + 3, w], xp[h0 + 4, w], xp[h0 + 5, w])
                for b in range(S):
                    row = (c * S + a) * S + b
                    for tw in range(TW):
                        w0 = 4 * tw + 3 * b
                        col = n * T + th * TW + tw
                        for i in range(6):       # rows: V[i, :] = B^T t[i, w0:w0+6]
                            r = _bt(t[i, w0], t[i, w0 + 1], t[i, w0 + 2], t[i, w0 + 3], t[i, w0 + 4], t[i, w0 + 5])
                            V[row, 6 * i, col], V[row, 6 * i + 1, col], V[row, 6 * i + 2, col] = r[0], r[1], r[2]
                            V[row, 6 * i + 3, col], V[row, 6 * i + 4, col], V[row, 6 * i + 5, col] = r[3], r[4], r[5]


@threaded_kernel(lambda M, b, relu, out: out.shape[0] * out.shape[1])
def _output_transform(lo, hi, M, b, relu, out):
    """out[n, f, 4*th + i, 4*tw + j] = (A^T M A)[i, j] + b[f] for tile (th, tw) of image n, where
    M is the (6, 6) block M[f, :, n*T + t]; with relu=True, max(that, 0). The part of the last
    tiles beyond the output's edge is dropped."""
    N, F, OH, OW = out.shape
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    T = TH * TW
    y = np.empty((4 * TH, 4 * TW))           # one output plane, whole tiles
    t = np.empty((4, 6))                     # A^T M, one tile
    for fn in range(lo, hi):     # filter-major: consecutive steps read consecutive columns of M
        f = fn // N
        n = fn % N
        for th in range(TH):
            for tw in range(TW):
                col = n * T + th * TW + tw
                for j in range(6):               # columns: t[:, j] = A^T M[:, j]
                    t[0, j], t[1, j], t[2, j], t[3, j] = _at(
                        M[f, j, col], M[f, 6 + j, col], M[f, 12 + j, col],
                        M[f, 18 + j, col], M[f, 24 + j, col], M[f, 30 + j, col])
                for i in range(4):               # rows: Y[i, :] = A^T t[i, :]
                    h = 4 * th + i
                    y[h, 4 * tw], y[h, 4 * tw + 1], y[h, 4 * tw + 2], y[h, 4 * tw + 3] = _at(
                        t[i, 0], t[i, 1], t[i, 2], t[i, 3], t[i, 4], t[i, 5])
        plane = out[n, f]
        bias = b[f]
        for h in range(OH):
            for w in range(OW):
                v = y[h, w] + bias
                plane[h, w] = max(v, 0) if relu else v


@threaded_kernel(lambda dout, y, relu, sums, dM: dout.shape[0] * dout.shape[1])
def _grad_transform(lo, hi, dout, y, relu, sums, dM):
    """dM[f, 6*i + j, n*T + t] = (A e A^T)[i, j], e the 4x4 tile t of dout[n, f] (0 beyond the
    edge); sums[n, f] = the sum of dout[n, f] (the bias gradient's share of image n). With
    relu=True, dout goes through the ReLU's backward first: 0 where y (the ReLU's output) is 0."""
    N, F, OH, OW = dout.shape
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    T = TH * TW
    e = np.zeros((4 * TH, 4 * TW))           # one plane of dout, whole tiles (0 beyond the edge)
    t = np.empty((6, 4 * TW))                # A applied down the columns of one row of tiles
    for fn in range(lo, hi):     # filter-major: consecutive steps write consecutive columns of dM
        f = fn // N
        n = fn % N
        g, mask = dout[n, f], y[n, f]
        for h in range(OH):      # (no running sum in this loop, so that it vectorises)
            row = e[h]
            for w in range(OW):
                row[w] = g[h, w] if not relu or mask[h, w] > 0 else 0.0
        sums[n, f] = _sum64(e.ravel())
        for th in range(TH):
            h0 = 4 * th
            for w in range(4 * TW):              # columns: t[:, w] = A e[h0:h0+4, w]
                t[0, w], t[1, w], t[2, w], t[3, w], t[4, w], t[5, w] = _a(
                    e[h0, w], e[h0 + 1, w], e[h0 + 2, w], e[h0 + 3, w])
            for tw in range(TW):
                w0 = 4 * tw
                col = n * T + th * TW + tw
                for i in range(6):               # rows: dM[i, :] = A t[i, w0:w0+4]
                    r = _a(t[i, w0], t[i, w0 + 1], t[i, w0 + 2], t[i, w0 + 3])
                    dM[f, 6 * i, col], dM[f, 6 * i + 1, col], dM[f, 6 * i + 2, col] = r[0], r[1], r[2]
                    dM[f, 6 * i + 3, col], dM[f, 6 * i + 4, col], dM[f, 6 * i + 5, col] = r[3], r[4], r[5]


@threaded_kernel(lambda dV, pad, S, TH, TW, dx: dx.shape[0] * dx.shape[1])
def _input_grad(lo, hi, dV, pad, S, TH, TW, dx):
    """dx[n, c] = the sum over tiles and pieces of B dV B^T (dV the (6, 6) block
    dV[(c*S + a)*S + b, :, n*T + t]), each added where _input_transform read its tile; what
    falls in the padding is dropped."""
    N, C, H, W = dx.shape
    T = TH * TW
    XH, XW = 4 * TH + 3 * S - 1, 4 * TW + 3 * S - 1
    dxp = np.empty((XH, XW))     # one plane with its border, where the tiles add up
    t = np.empty((6, 6))         # B dV, one tile
    for cn in range(lo, hi):     # channel-major: consecutive steps read consecutive columns of dV
        c = cn // N
        n = cn % N
        dxp[:] = 0.0
        for a in range(S):
            for b in range(S):
                row = (c * S + a) * S + b
                for th in range(TH):
                    h0 = 4 * th + 3 * a
                    for tw in range(TW):
                        w0 = 4 * tw + 3 * b
                        col = n * T + th * TW + tw
                        for j in range(6):       # columns: t[:, j] = B dV[:, j]
                            t[0, j], t[1, j], t[2, j], t[3, j], t[4, j], t[5, j] = _b(
                                dV[row, j, col], dV[row, 6 + j, col], dV[row, 12 + j, col],
                                dV[row, 18 + j, col], dV[row, 24 + j, col], dV[row, 30 + j, col])
                        for i in range(6):       # rows: dd[i, :] = B t[i, :], added in place
                            r = _b(t[i, 0], t[i, 1], t[i, 2], t[i, 3], t[i, 4], t[i, 5])
                            out = dxp[h0 + i]
                            out[w0] += r[0]
                            out[w0 + 1] += r[1]
                            out[w0 + 2] += r[2]
                            out[w0 + 3] += r[3]
                            out[w0 + 4] += r[4]
                            out[w0 + 5] += r[5]
        plane = dx[n, c]
        for h in range(H):
            for w in range(W):
                plane[h, w] = dxp[pad + h, pad + w] if pad + h < XH and pad + w < XW else 0.0


# The 2-d transform of a 3x3 filter, G g G^T, as one (36, 9) matrix acting on the filter's 9
# numbers: (G g G^T)[i, j] = sum over k, l of G[i, k] G[j, l] g[k, l], and G[i, k] G[j, l] is
# entry (6*i + j, 3*k + l) of the Kronecker product of G with itself.
GG = np.kron(G, G)


def pieces(K):
    """S: a KxK filter is an S x S grid of 3x3 pieces (K = 3: S = 1; K = 5: S = 2, the 5x5 filter
    zero-padded to 6x6)."""
    if K not in (3, 5):
        raise ValueError(f"the Winograd route takes 3x3 and 5x5 filters, not {K}x{K}")
    return (K + 1) // 3


def _split(w):
    """(F, C, K, K) filters as their (F*C*S*S, 9) 3x3 pieces, row (f*C + c)*S*S + a*S + b for
    the piece at rows 3a.., columns 3b.. of the filter zero-padded to 3S x 3S."""
    F, Cg, K = w.shape[:3]
    S = pieces(K)
    if S == 1:
        return w.reshape(F * Cg, 9)
    padded = np.zeros((F, Cg, 3 * S, 3 * S), dtype=w.dtype)
    padded[:, :, :K, :K] = w
    return padded.reshape(F, Cg, S, 3, S, 3).transpose(0, 1, 2, 4, 3, 5).reshape(F * Cg * S * S, 9)


def _join(pieces_, shape):
    """The adjoint of _split: (F*C*S*S, 9) pieces back to (F, C, K, K) filters (the padding
    dropped)."""
    F, Cg, K = shape[:3]
    S = pieces(K)
    if S == 1:
        return pieces_.reshape(shape)
    grid = pieces_.reshape(F, Cg, S, S, 3, 3).transpose(0, 1, 2, 4, 3, 5).reshape(F, Cg, 3 * S, 3 * S)
    return np.ascontiguousarray(grid[:, :, :K, :K])


def filter_transform(w, groups):
    """U (36, G, F/G, C/G*S*S): U[6*i + j, g, f, c*S*S + a*S + b] = (G p G^T)[i, j], p the 3x3
    piece (a, b) of filter g*F/G + f, channel c; every piece in one matrix product."""
    F, Cg, K = w.shape[:3]
    S = pieces(K)
    pieces_ = _split(w)
    U = gemm.matmul(GG.astype(w.dtype), pieces_.T,                   # (36, F*Cg*S*S)
                    np.empty((ALPHA * ALPHA, pieces_.shape[0]), w.dtype))
    return U.reshape(ALPHA * ALPHA, groups, F // groups, Cg * S * S)


def filter_grad(dU, shape):
    """dw (F, C/G, K, K) from dU (36, G, F/G, C/G*S*S): G^T dU G for every piece, the adjoint of
    filter_transform (its matrix transposed), the pieces joined back into filters."""
    flat = dU.reshape(ALPHA * ALPHA, -1).T                            # (F*Cg*S*S, 36)
    return _join(gemm.matmul(flat, GG.astype(dU.dtype), np.empty((flat.shape[0], 9), dU.dtype)), shape)


def _tiles(OH, OW):
    return (OH + M_OUT - 1) // M_OUT, (OW + M_OUT - 1) // M_OUT


def _chunks(N, rows, F, T, dtype):
    """Yield (n0, n1, V, M): consecutive chunks [n0, n1) of images whose V (rows, 36, nb*T),
    rows = channels x pieces, and M (F, 36, nb*T) each fit CHUNK_BYTES, with those two arrays
    as views of buffers that every chunk reuses."""
    itemsize = np.dtype(dtype).itemsize
    per_chunk = max(1, min(N, CHUNK_BYTES // (ALPHA * ALPHA * max(rows, F) * T * itemsize)))
    V_buf = buffers.empty(rows * ALPHA * ALPHA * per_chunk * T, dtype)
    M_buf = buffers.empty(F * ALPHA * ALPHA * per_chunk * T, dtype)
    for n0 in range(0, N, per_chunk):
        n1 = min(N, n0 + per_chunk)
        NT = (n1 - n0) * T
        yield (n0, n1, V_buf[:rows * ALPHA * ALPHA * NT].reshape(rows, ALPHA * ALPHA, NT),
               M_buf[:F * ALPHA * ALPHA * NT].reshape(F, ALPHA * ALPHA, NT))


def _by_tile_position(A, groups):
    """A (G*K, 36, NT) array viewed as (36, G, K, NT): one (K, NT) matrix per tile position and
    group, for a batched product (no copy: the rows keep their stride)."""
    rows, positions, cols = A.shape
    return A.transpose(1, 0, 2).reshape(positions, groups, rows // groups, cols)


def forward(x, w, b, pad, groups, relu):
    """out (N, F, OH, OW) of the stride-1 convolution with 3x3 or 5x5 filters (ReLU fused in
    when relu=True); x must be C-contiguous."""
    N, C, H, W = x.shape
    F, Cg, K = w.shape[:3]
    S = pieces(K)
    OH, OW = H + 2 * pad - K + 1, W + 2 * pad - K + 1
    TH, TW = _tiles(OH, OW)
    T = TH * TW
    U = filter_transform(w, groups)                                    # (36, G, F/G, C/G*S*S)
    out = buffers.empty((N, F, OH, OW), x.dtype)
    for n0, n1, V, M in _chunks(N, C * S * S, F, T, x.dtype):
        _input_transform(x[n0:n1], pad, S, TH, TW, V)
        gemm.batched(U, _by_tile_position(V, groups), _by_tile_position(M, groups))  # M[ij] = U[ij] @ V[ij]
        _output_transform(M, b, relu, out[n0:n1])
    return out


def backward(dout, x, w, pad, groups, relu_out, need_dx):
    """(dx or None, dw, db) of the stride-1 convolution with 3x3 or 5x5 filters; dout and x
    C-contiguous, relu_out the forward's output when a ReLU was fused in (else None)."""
    N, C, H, W = x.shape
    F, Cg, K = w.shape[:3]
    S = pieces(K)
    OH, OW = dout.shape[2:]
    TH, TW = _tiles(OH, OW)
    T = TH * TW
    U = filter_transform(w, groups)                                    # (36, G, F/G, C/G*S*S)
    UT = U.transpose(0, 1, 3, 2)                                       # (36, G, C/G*S*S, F/G)
    dU = np.zeros(U.shape, dtype=x.dtype)
    db_sum = np.zeros(F)                                               # float64 accumulator
    dx = buffers.empty_like(x) if need_dx else None
    relu = relu_out is not None
    y = relu_out if relu else dout
    for n0, n1, V, dM in _chunks(N, C * S * S, F, T, x.dtype):
        _input_transform(x[n0:n1], pad, S, TH, TW, V)                  # rebuilt, as im2col is
        image_sums = np.empty((n1 - n0, F))
        _grad_transform(dout[n0:n1], y[n0:n1], relu, image_sums, dM)
        db_sum += image_sums.sum(axis=0)
        V_ij, dM_ij = _by_tile_position(V, groups), _by_tile_position(dM, groups)
        gemm.batched(dM_ij, V_ij.transpose(0, 1, 3, 2), dU, accumulate=True)   # dU[ij] += dM[ij] @ V[ij].T
        if need_dx:
            gemm.batched(UT, dM_ij, V_ij)                              # dV[ij] = U[ij].T @ dM[ij], in V's place
            _input_grad(V, pad, S, TH, TW, dx[n0:n1])
    return dx, filter_grad(dU, w.shape), db_sum.astype(x.dtype)
