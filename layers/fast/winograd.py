"""Stride-1 convolution by Winograd's minimal filtering, F(4x4, 3x3) and F(4x4, 5x5): the fast
path for 3x3 and 5x5 filters (conv2 to conv5 of both models).

This computes the same convolution as `layers/conv.py` (and as the plain loops in
`layers/reference.py`, which stay the definition), with 2.6-5.8x fewer multiplications. In the
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
Convolutional Neural Networks", 2016). The tests check the identity numerically. A 5-tap
filter works the same way with eight points (0, 1, -1, 2, -2, 1/2, -1/2, infinity): four
outputs read eight inputs, and 8 multiplications replace 20.

In two dimensions the transforms act on rows and columns of a tile: an a x a input tile d
(a = 6 for a 3x3 filter, 8 for 5x5) gives a 4x4 output tile, with the filter g:

    Y = A^T [ (G g G^T) * (B^T d B) ] A          3x3: 36 products, not 144; 5x5: 64, not 400

A convolution layer sums this over input channels c, and the sum commutes with A^T . A: for
each of the a*a positions (i, j) of a transformed tile, the sum over c is a matrix product:

    U[ij] = (G w[f, c] G^T)[i, j]             (F, C)    transformed filters
    V[ij] = (B^T d[c, tile] B)[i, j]          (C, T)    transformed input tiles (T = N * tiles)
    M[ij] = U[ij] @ V[ij]                     (F, T)    a*a matrix products
    out[tile] = A^T M[.., tile] A             4x4 outputs per tile and filter

Groups work as in conv.py: each group's channels and filters are a block, so the products
are batched over (ij, group). Tiles overlap by K-1 pixels (a KxK filter needs an a x a input
for 4x4 outputs); the zero padding, and the part of a tile that hangs over the edge, read as 0.

Backward. Every step above is linear, so each has an adjoint (its transpose), and the backward
pass runs them in reverse order, with dY the output gradient of one tile:

    dM[.., tile] = A dY A^T                   (the adjoint of out = A^T M A)
    dU[ij] = dM[ij] @ V[ij].T                 dV[ij] = U[ij].T @ dM[ij]
    dw[f, c] = G^T dU[f, c] G                 dd[c, tile] = B dV[c, tile] B^T
    dx = the tiles' dd added where they overlap (and dropped where they lie in the padding)

The arithmetic differs from direct summation (the transforms add and subtract numbers of
different sizes), so results agree with the reference to rounding: a few 1e-6 of the largest
value in float32, 1e-15 in float64. The gradient checks run on this path.

Memory: V and M take a*a numbers per 4x4 output tile (the im2col matrix takes K*K per
output), so the batch is processed in chunks of images, like im2col, with buffers that are
reused. The backward pass needs V again (for dU); when V of the whole batch is small
(KEEP_BYTES) the forward pass keeps it in the cache, else the backward rebuilds it.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from . import buffers, gemm
from .kernels import _sum64, threaded_kernel


class Transforms(NamedTuple):
    """F(4x4, KxK): the matrices of one Winograd algorithm (a = 4 + K - 1 points)."""
    BT: np.ndarray     # (a, a) input transform B^T
    G: np.ndarray      # (a, K) filter transform
    AT: np.ndarray     # (4, a) output transform A^T


# F(4x4, 3x3): the points 0, 1, -1, 2, -2 and infinity
F43 = Transforms(
    BT=np.array([[4, 0, -5, 0, 1, 0],
                 [0, -4, -4, 1, 1, 0],
                 [0, 4, -4, -1, 1, 0],
                 [0, -2, -1, 2, 1, 0],
                 [0, 2, -1, -2, 1, 0],
                 [0, 4, 0, -5, 0, 1]], dtype=np.float64),
    G=np.array([[1 / 4, 0, 0],
                [-1 / 6, -1 / 6, -1 / 6],
                [-1 / 6, 1 / 6, -1 / 6],
                [1 / 24, 1 / 12, 1 / 6],
                [1 / 24, -1 / 12, 1 / 6],
                [0, 0, 1]], dtype=np.float64),
    AT=np.array([[1, 1, 1, 1, 1, 0],
                 [0, 1, -1, 2, -2, 0],
                 [0, 1, 1, 4, 4, 0],
                 [0, 1, -1, 8, -8, 1]], dtype=np.float64))

# F(4x4, 5x5): the points 0, 1, -1, 2, -2, 1/2, -1/2 and infinity
F45 = Transforms(
    BT=np.array([[-1, 0, 21 / 4, 0, -21 / 4, 0, 1, 0],
                 [0, 1, 1, -17 / 4, -17 / 4, 1, 1, 0],
                 [0, -1, 1, 17 / 4, -17 / 4, -1, 1, 0],
                 [0, 1 / 2, 1 / 4, -5 / 2, -5 / 4, 2, 1, 0],
                 [0, -1 / 2, 1 / 4, 5 / 2, -5 / 4, -2, 1, 0],
                 [0, 2, 4, -5 / 2, -5, 1 / 2, 1, 0],
                 [0, -2, 4, 5 / 2, -5, -1 / 2, 1, 0],
                 [0, -1, 0, 21 / 4, 0, -21 / 4, 0, 1]], dtype=np.float64),
    G=np.array([[-1, 0, 0, 0, 0],
                [-2 / 9, -2 / 9, -2 / 9, -2 / 9, -2 / 9],
                [-2 / 9, 2 / 9, -2 / 9, 2 / 9, -2 / 9],
                [1 / 90, 1 / 45, 2 / 45, 4 / 45, 8 / 45],
                [1 / 90, -1 / 45, 2 / 45, -4 / 45, 8 / 45],
                [32 / 45, 16 / 45, 8 / 45, 4 / 45, 2 / 45],
                [32 / 45, -16 / 45, 8 / 45, -4 / 45, 2 / 45],
                [0, 0, 0, 0, 1]], dtype=np.float64),
    AT=np.array([[1, 1, 1, 1, 1, 1, 1, 0],
                 [0, 1, -1, 2, -2, 1 / 2, -1 / 2, 0],
                 [0, 1, 1, 4, 4, 1 / 4, 1 / 4, 0],
                 [0, 1, -1, 8, -8, 1 / 8, -1 / 8, 1]], dtype=np.float64))

TRANSFORMS = {3: F43, 5: F45}   # by filter size K
M_OUT = 4                       # outputs per tile side, for both

CHUNK_BYTES = 64 * 2**20   # the largest transformed-tile buffer (V or M) a chunk of images may use
# The forward pass keeps V for the backward when V of the whole batch takes at most this
# (`cifar`'s four layers: 125 MB in all); larger ones are rebuilt in the backward, chunk by chunk.
KEEP_BYTES = 64 * 2**20


def transforms(K):
    """The Winograd algorithm for a KxK filter."""
    if K not in TRANSFORMS:
        raise ValueError(f"the Winograd route takes 3x3 and 5x5 filters, not {K}x{K}")
    return TRANSFORMS[K]


# The matrix-vector products of the kernels, written out (the matrices' zeros and ones cost
# nothing this way): each reads the vector s and writes d, 1-d views (often strided). The
# tests check each against its matrix above.
@njit(inline="always")
def _bt6(s, d):
    """d = B^T s, F(4x4, 3x3) (6 -> 6)."""
    s0, s1, s2, s3, s4, s5 = s[0], s[1], s[2], s[3], s[4], s[5]
    d[0] = 4 * s0 - 5 * s2 + s4
    d[1] = -4 * s1 - 4 * s2 + s3 + s4
    d[2] = 4 * s1 - 4 * s2 - s3 + s4
    d[3] = -2 * s1 - s2 + 2 * s3 + s4
    d[4] = 2 * s1 - s2 - 2 * s3 + s4
    d[5] = 4 * s1 - 5 * s3 + s5


@njit(inline="always")
def _b6(s, d):
    """d = B s (6 -> 6): the adjoint of _bt6."""
    s0, s1, s2, s3, s4, s5 = s[0], s[1], s[2], s[3], s[4], s[5]
    d[0] = 4 * s0
    d[1] = -4 * s1 + 4 * s2 - 2 * s3 + 2 * s4 + 4 * s5
    d[2] = -5 * s0 - 4 * s1 - 4 * s2 - s3 - s4
    d[3] = s1 - s2 + 2 * s3 - 2 * s4 - 5 * s5
    d[4] = s0 + s1 + s2 + s3 + s4
    d[5] = s5


@njit(inline="always")
def _at6(s, d):
    """d = A^T s (6 -> 4)."""
    s0, s1, s2, s3, s4, s5 = s[0], s[1], s[2], s[3], s[4], s[5]
    d[0] = s0 + s1 + s2 + s3 + s4
    d[1] = s1 - s2 + 2 * s3 - 2 * s4
    d[2] = s1 + s2 + 4 * s3 + 4 * s4
    d[3] = s1 - s2 + 8 * s3 - 8 * s4 + s5


@njit(inline="always")
def _a6(s, d):
    """d = A s (4 -> 6): the adjoint of _at6."""
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    d[0] = s0
    d[1] = s0 + s1 + s2 + s3
    d[2] = s0 - s1 + s2 - s3
    d[3] = s0 + 2 * s1 + 4 * s2 + 8 * s3
    d[4] = s0 - 2 * s1 + 4 * s2 - 8 * s3
    d[5] = s3


@njit(inline="always")
def _bt8(s, d):
    """d = B^T s, F(4x4, 5x5) (8 -> 8)."""
    s0, s1, s2, s3, s4, s5, s6, s7 = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
    d[0] = -s0 + 5.25 * (s2 - s4) + s6
    p, q = s1 + s5 - 4.25 * s3, s2 + s6 - 4.25 * s4
    d[1], d[2] = q + p, q - p
    p, q = 0.5 * s1 - 2.5 * s3 + 2 * s5, 0.25 * s2 - 1.25 * s4 + s6
    d[3], d[4] = q + p, q - p
    p, q = 2 * s1 - 2.5 * s3 + 0.5 * s5, 4 * s2 - 5 * s4 + s6
    d[5], d[6] = q + p, q - p
    d[7] = -s1 + 5.25 * (s3 - s5) + s7


@njit(inline="always")
def _b8(s, d):
    """d = B s (8 -> 8): the adjoint of _bt8."""
    s0, s1, s2, s3, s4, s5, s6, s7 = s[0], s[1], s[2], s[3], s[4], s[5], s[6], s[7]
    e1, o1 = s1 + s2, s1 - s2      # (the rows of B^T come in pairs that differ in odd signs)
    e3, o3 = s3 + s4, s3 - s4
    e5, o5 = s5 + s6, s5 - s6
    d[0] = -s0
    d[1] = o1 + 0.5 * o3 + 2 * o5 - s7
    d[2] = 5.25 * s0 + e1 + 0.25 * e3 + 4 * e5
    d[3] = -4.25 * o1 - 2.5 * o3 - 2.5 * o5 + 5.25 * s7
    d[4] = -5.25 * s0 - 4.25 * e1 - 1.25 * e3 - 5 * e5
    d[5] = o1 + 2 * o3 + 0.5 * o5 - 5.25 * s7
    d[6] = s0 + e1 + e3 + e5
    d[7] = s7


@njit(inline="always")
def _at8(s, d):
    """d = A^T s (8 -> 4)."""
    e1, o1 = s[1] + s[2], s[1] - s[2]
    e3, o3 = s[3] + s[4], s[3] - s[4]
    e5, o5 = s[5] + s[6], s[5] - s[6]
    d[0] = s[0] + e1 + e3 + e5
    d[1] = o1 + 2 * o3 + 0.5 * o5
    d[2] = e1 + 4 * e3 + 0.25 * e5
    d[3] = o1 + 8 * o3 + 0.125 * o5 + s[7]


@njit(inline="always")
def _a8(s, d):
    """d = A s (4 -> 8): the adjoint of _at8."""
    s0, s1, s2, s3 = s[0], s[1], s[2], s[3]
    e, o = s0 + s2, s1 + s3
    d[0] = s0
    d[1], d[2] = e + o, e - o
    e, o = s0 + 4 * s2, 2 * s1 + 8 * s3
    d[3], d[4] = e + o, e - o
    e, o = s0 + 0.25 * s2, 0.5 * s1 + 0.125 * s3
    d[5], d[6] = e + o, e - o
    d[7] = s3


# The kernels below serve both algorithms: these pick one by the length of the a-long vector.
@njit(inline="always")
def _bt(s, d):
    if s.shape[0] == 6:
        _bt6(s, d)
    else:
        _bt8(s, d)


@njit(inline="always")
def _b(s, d):
    if s.shape[0] == 6:
        _b6(s, d)
    else:
        _b8(s, d)


@njit(inline="always")
def _at(s, d):
    if s.shape[0] == 6:
        _at6(s, d)
    else:
        _at8(s, d)


@njit(inline="always")
def _a(s, d):
    if d.shape[0] == 6:
        _a6(s, d)
    else:
        _a8(s, d)


@threaded_kernel(lambda x, pad, TH, TW, V: x.shape[0] * x.shape[1])
def _input_transform(lo, hi, x, pad, TH, TW, V):
    """V[c, a*i + j, n*T + t] = (B^T d B)[i, j], d the a x a input tile t of image n, channel c
    (a = 6 or 8, from V's shape). Tile t = (th, tw) starts at row 4*th - pad, column 4*tw - pad."""
    N, C, H, W = x.shape
    T = TH * TW
    a = 6 if V.shape[1] == 36 else 8
    XH, XW = 4 * TH + a - 4, 4 * TW + a - 4
    xp = np.zeros((XH, XW))      # one plane with its zero border: no bounds tests below
    t = np.empty((a, XW))        # B^T applied down the columns of one row of tiles
    for cn in range(lo, hi):     # channel-major: consecutive steps write consecutive columns of V
        c = cn // N
        n = cn % N
        plane = x[n, c]
        for h in range(min(H, XH - pad)):      # (rows and columns no tile reads are left out)
            for w in range(min(W, XW - pad)):
                xp[pad + h, pad + w] = plane[h, w]
        for th in range(TH):
            h0 = 4 * th
            for w in range(XW):                  # columns: t[:, w] = B^T xp[h0:h0+a, w]
                _bt(xp[h0:h0 + a, w], t[:, w])
            for tw in range(TW):
                w0 = 4 * tw
                col = n * T + th * TW + tw
                for i in range(a):               # rows: V[i, :] = B^T t[i, w0:w0+a]
                    _bt(t[i, w0:w0 + a], V[c, a * i:a * i + a, col])


@threaded_kernel(lambda M, b, relu, out: out.shape[0] * out.shape[1])
def _output_transform(lo, hi, M, b, relu, out):
    """out[n, f, 4*th + i, 4*tw + j] = (A^T M A)[i, j] + b[f] for tile (th, tw) of image n, where
    M is the (a, a) block M[f, :, n*T + t]; with relu=True, max(that, 0). The part of the last
    tiles beyond the output's edge is dropped."""
    N, F, OH, OW = out.shape
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    T = TH * TW
    a = 6 if M.shape[1] == 36 else 8
    y = np.empty((4 * TH, 4 * TW))           # one output plane, whole tiles
    t = np.empty((4, a))                     # A^T M, one tile
    for fn in range(lo, hi):     # filter-major: consecutive steps read consecutive columns of M
        f = fn // N
        n = fn % N
        for th in range(TH):
            for tw in range(TW):
                col = n * T + th * TW + tw
                for j in range(a):               # columns: t[:, j] = A^T M[:, j]
                    _at(M[f, j::a, col], t[:, j])
                for i in range(4):               # rows: Y[i, :] = A^T t[i, :]
                    _at(t[i], y[4 * th + i, 4 * tw:4 * tw + 4])
        plane = out[n, f]
        bias = b[f]
        for h in range(OH):
            for w in range(OW):
                v = y[h, w] + bias
                plane[h, w] = max(v, 0) if relu else v


@threaded_kernel(lambda dout, y, relu, sums, dM: dout.shape[0] * dout.shape[1])
def _grad_transform(lo, hi, dout, y, relu, sums, dM):
    """dM[f, a*i + j, n*T + t] = (A e A^T)[i, j], e the 4x4 tile t of dout[n, f] (0 beyond the
    edge); sums[n, f] = the sum of dout[n, f] (the bias gradient's share of image n). With
    relu=True, dout goes through the ReLU's backward first: 0 where y (the ReLU's output) is 0."""
    N, F, OH, OW = dout.shape
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    T = TH * TW
    a = 6 if dM.shape[1] == 36 else 8
    e = np.zeros((4 * TH, 4 * TW))           # one plane of dout, whole tiles (0 beyond the edge)
    t = np.empty((a, 4 * TW))                # A applied down the columns of one row of tiles
    for fn in range(lo, hi):     # filter-major: consecutive steps write consecutive columns of dM
        f = fn // N
        n = fn % N
        g, mask = dout[n, f], y[n, f]
        for h in range(OH):      # (no running sum in this loop, so that it vectorises)
            row = e[h]
            for w in range(OW):  # both read before the test: a select, not a branch
                v, m = g[h, w], mask[h, w]
                row[w] = v if not relu or m > 0 else 0.0
        sums[n, f] = _sum64(e.ravel())
        for th in range(TH):
            h0 = 4 * th
            for w in range(4 * TW):              # columns: t[:, w] = A e[h0:h0+4, w]
                _a(e[h0:h0 + 4, w], t[:, w])
            for tw in range(TW):
                w0 = 4 * tw
                col = n * T + th * TW + tw
                for i in range(a):               # rows: dM[i, :] = A t[i, w0:w0+4]
                    _a(t[i, w0:w0 + 4], dM[f, a * i:a * i + a, col])


@threaded_kernel(lambda dV, pad, TH, TW, dx: dx.shape[0] * dx.shape[1])
def _input_grad(lo, hi, dV, pad, TH, TW, dx):
    """dx[n, c] = the sum over tiles of B dV B^T (dV the (a, a) block dV[c, :, n*T + t]), each
    added where _input_transform read its tile; what falls in the padding is dropped."""
    N, C, H, W = dx.shape
    T = TH * TW
    a = 6 if dV.shape[1] == 36 else 8
    XH, XW = 4 * TH + a - 4, 4 * TW + a - 4
    dxp = np.empty((XH, XW))     # one plane with its border, where the tiles add up
    t = np.empty((a, a))         # B dV, one tile
    r = np.empty(a)              # one row of B dV B^T
    for cn in range(lo, hi):     # channel-major: consecutive steps read consecutive columns of dV
        c = cn // N
        n = cn % N
        dxp[:] = 0.0
        for th in range(TH):
            h0 = 4 * th
            for tw in range(TW):
                w0 = 4 * tw
                col = n * T + th * TW + tw
                for j in range(a):               # columns: t[:, j] = B dV[:, j]
                    _b(dV[c, j::a, col], t[:, j])
                for i in range(a):               # rows: dd[i, :] = B t[i, :], added in place
                    _b(t[i], r)
                    out = dxp[h0 + i]
                    for k in range(a):
                        out[w0 + k] += r[k]
        plane = dx[n, c]
        for h in range(H):
            for w in range(W):
                plane[h, w] = dxp[pad + h, pad + w] if pad + h < XH and pad + w < XW else 0.0


def _filter_matrix(K, dtype):
    """(a*a, K*K): the 2-d filter transform G g G^T as one matrix acting on a filter's K*K
    numbers: (G g G^T)[i, j] = sum over k, l of G[i, k] G[j, l] g[k, l], and G[i, k] G[j, l]
    is entry (a*i + j, K*k + l) of the Kronecker product of G with itself."""
    G = transforms(K).G
    return np.kron(G, G).astype(dtype)


def filter_transform(w, groups):
    """U (a*a, G, F/G, C/G): U[a*i + j, g, f, c] = (G w[g*F/G + f, c] G^T)[i, j], every filter
    in one matrix product."""
    F, Cg, K = w.shape[:3]
    GG = _filter_matrix(K, w.dtype)
    U = gemm.matmul(GG, w.reshape(F * Cg, K * K).T, np.empty((GG.shape[0], F * Cg), w.dtype))
    return U.reshape(GG.shape[0], groups, F // groups, Cg)


def filter_grad(dU, shape):
    """dw (F, C/G, K, K) from dU (a*a, G, F/G, C/G): G^T dU G for every filter, the adjoint of
    filter_transform (its matrix transposed)."""
    F, Cg, K = shape[:3]
    GG = _filter_matrix(K, dU.dtype)
    flat = dU.reshape(GG.shape[0], F * Cg).T                                       # (F*Cg, a*a)
    return gemm.matmul(flat, GG, np.empty((F * Cg, K * K), dU.dtype)).reshape(shape)


def _tiles(OH, OW):
    return (OH + M_OUT - 1) // M_OUT, (OW + M_OUT - 1) // M_OUT


def _row_length(NT, itemsize):
    """The row length to give NT numbers in V and M: an odd number of 64-byte cache lines. The
    kernels read and write a*a rows at once, one number each; rows 2**k bytes apart would all
    fall in the same few cache sets and evict each other."""
    lines = -(-NT * itemsize // 64)
    return (lines + 1 - lines % 2) * 64 // itemsize


def _chunks(N, C, F, positions, T, dtype, fresh_V=False):
    """Yield (n0, n1, V, M): consecutive chunks [n0, n1) of images whose V (C, positions, nb*T)
    and M (F, positions, nb*T) each fit CHUNK_BYTES, with those two arrays as views of buffers
    that every chunk reuses (rows _row_length apart). fresh_V: each chunk's V in a buffer of
    its own instead, to be kept after the loop."""
    itemsize = np.dtype(dtype).itemsize
    per_chunk = max(1, min(N, CHUNK_BYTES // (positions * max(C, F) * T * itemsize)))
    row = _row_length(per_chunk * T, itemsize)
    V_buf = None if fresh_V else buffers.empty(C * positions * row, dtype)
    M_buf = buffers.empty(F * positions * row, dtype)
    for n0 in range(0, N, per_chunk):
        n1 = min(N, n0 + per_chunk)
        NT = (n1 - n0) * T
        row = _row_length(NT, itemsize)
        V = buffers.empty(C * positions * row, dtype) if fresh_V else V_buf[:C * positions * row]
        yield (n0, n1, V.reshape(C, positions, row)[:, :, :NT],
               M_buf[:F * positions * row].reshape(F, positions, row)[:, :, :NT])


def _by_tile_position(A, groups):
    """A (G*K, a*a, NT) array viewed as (a*a, G, K, NT): one (K, NT) matrix per tile position
    and group, for a batched product (no copy: the rows keep their stride)."""
    rows, positions, cols = A.shape
    return A.transpose(1, 0, 2).reshape(positions, groups, rows // groups, cols)


def forward(x, w, b, pad, groups, relu):
    """(out, tiles): out (N, F, OH, OW) of the stride-1 convolution with 3x3 or 5x5 filters
    (ReLU fused in when relu=True), and the transformed input tiles {(n0, n1): V} of each chunk
    of images, for the backward pass, when they take at most KEEP_BYTES (else None: the
    backward rebuilds them). x must be C-contiguous."""
    N, C, H, W = x.shape
    F, Cg, K = w.shape[:3]
    OH, OW = H + 2 * pad - K + 1, W + 2 * pad - K + 1
    TH, TW = _tiles(OH, OW)
    U = filter_transform(w, groups)                                    # (a*a, G, F/G, C/G)
    keep = C * U.shape[0] * N * TH * TW * x.itemsize <= KEEP_BYTES
    out = buffers.empty((N, F, OH, OW), x.dtype)
    tiles = {} if keep else None
    for n0, n1, V, M in _chunks(N, C, F, U.shape[0], TH * TW, x.dtype, fresh_V=keep):
        _input_transform(x[n0:n1], pad, TH, TW, V)
        gemm.batched(U, _by_tile_position(V, groups), _by_tile_position(M, groups))  # M[ij] = U[ij] @ V[ij]
        _output_transform(M, b, relu, out[n0:n1])
        if keep:
            tiles[(n0, n1)] = V
    return out, tiles


def backward(dout, x, w, pad, groups, relu_out, need_dx, tiles=None):
    """(dx or None, dw, db) of the stride-1 convolution with 3x3 or 5x5 filters; dout and x
    C-contiguous, relu_out the forward's output when a ReLU was fused in (else None), tiles
    what the forward kept of V (else None: rebuilt here). The kept tiles are only read."""
    N, C, H, W = x.shape
    F = w.shape[0]
    OH, OW = dout.shape[2:]
    TH, TW = _tiles(OH, OW)
    U = filter_transform(w, groups)                                    # (a*a, G, F/G, C/G)
    UT = U.transpose(0, 1, 3, 2)                                       # (a*a, G, C/G, F/G)
    dU = np.zeros(U.shape, dtype=x.dtype)
    db_sum = np.zeros(F)                                               # float64 accumulator
    dx = buffers.empty_like(x) if need_dx else None
    relu = relu_out is not None
    y = relu_out if relu else dout
    for n0, n1, dV, dM in _chunks(N, C, F, U.shape[0], TH * TW, x.dtype):
        V = tiles.get((n0, n1)) if tiles else None
        if V is None:                                  # rebuilt, as im2col is, in dV's place
            V = dV
            _input_transform(x[n0:n1], pad, TH, TW, V)
        image_sums = np.empty((n1 - n0, F))
        _grad_transform(dout[n0:n1], y[n0:n1], relu, image_sums, dM)
        db_sum += image_sums.sum(axis=0)
        V_ij, dM_ij = _by_tile_position(V, groups), _by_tile_position(dM, groups)
        gemm.batched(dM_ij, V_ij.transpose(0, 1, 3, 2), dU, accumulate=True)   # dU[ij] += dM[ij] @ V[ij].T
        if need_dx:
            gemm.batched(UT, dM_ij, _by_tile_position(dV, groups))    # dV[ij] = U[ij].T @ dM[ij]
            _input_grad(dV, pad, TH, TW, dx[n0:n1])
    return dx, filter_grad(dU, w.shape), db_sum.astype(x.dtype)
