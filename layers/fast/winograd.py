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
    V[ij] = (B^T d[c, tile] B)[i, j]          (T, C)    transformed input tiles (T = N * tiles)
    M[ij] = V[ij] @ U[ij].T                   (T, F)    a*a matrix products
    out[tile] = A^T M[tile, ..] A             4x4 outputs per tile and filter

Groups work as in conv.py: each group's channels and filters are a block, so the products
are batched over (ij, group). Tiles overlap by K-1 pixels (a KxK filter needs an a x a input
for 4x4 outputs); the zero padding, and the part of a tile that hangs over the edge, read as 0.

Backward. Every step above is linear, so each has an adjoint (its transpose), and the backward
pass runs them in reverse order, with dY the output gradient of one tile:

    dM[tile, ..] = A dY A^T                   (the adjoint of out = A^T M A)
    dU[ij] = dM[ij].T @ V[ij]                 dV[ij] = dM[ij] @ U[ij]
    dw[f, c] = G^T dU[f, c] G                 dd[c, tile] = B dV[c, tile] B^T
    dx = the tiles' dd added where they overlap (and dropped where they lie in the padding)

The arithmetic differs from direct summation (the transforms add and subtract numbers of
different sizes), so results agree with the reference to rounding: a few 1e-6 of the largest
value in float32, 1e-15 in float64. The gradient checks run on this path.

Layout: V, M and their gradients are arrays (a*a, T, C), the channel (or filter) index
innermost. The kernels transform one image at a time, all its channels at once: every
written-out transform below runs along a row of C numbers (the compiler vectorises it), and
each tile's a*a results go out as runs of C consecutive numbers.

Memory: V and M take a*a numbers per 4x4 output tile (the im2col matrix takes K*K per
output), so the batch is processed in parts, with buffers that are reused, in one of two
ways. Layers with many channels per group (conv3-5: 192-384) have thick products that
BLAS runs near its best: chunks of images, each transform a threaded pass over the chunk
and the products cut between their matrices (gemm.py). Layers with few (conv2: 48) have
products too thin for their arithmetic to hide writing M, 134 MB in `cifar`'s conv2: pieces
of a few images, each run start to end (transform, products, inverse transform) on one
thread, while its V and M of a few MB are still in cache. The backward pass needs V again
(for dU); when V of the whole batch is small (KEEP_BYTES) the forward pass keeps it in the
cache, else the backward rebuilds it.
"""

from typing import NamedTuple

import numpy as np
from numba import njit

from . import buffers, gemm, threads
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
# Layers with fewer input channels per group than this run in pieces of images (see Memory
# above), each piece's M at most PIECE_BYTES (whole images: `cifar`'s conv2 8, `paper`'s 2).
PIECE_CHANNELS = 64
PIECE_BYTES = 8 * 2**20


def transforms(K):
    """The Winograd algorithm for a KxK filter."""
    if K not in TRANSFORMS:
        raise ValueError(f"the Winograd route takes 3x3 and 5x5 filters, not {K}x{K}")
    return TRANSFORMS[K]


# The matrix-vector products of the kernels, written out (the matrices' zeros and ones cost
# nothing this way). Each transforms many vectors at once, one per column of a 2-d array:
# the vector v of column c is v[m] = s[si + m*ss, c] (rows ss apart), and its transform goes
# to the rows di + k*ds of d. The loop runs along the rows, over the channels (or filters) of
# a tile, so it vectorises. The tests check each against its matrix above.
#
# (A loop runs over the columns both arrays have: the kernels' one-image buffers have longer
# rows, see _row_length.)
#
# The transforms' constants as float32 numbers: a float32 times a Python literal is a float64
# in Numba, so with literals the float32 tiles would be transformed in float64 (half as many
# numbers per vector instruction, and conversions both ways). A float64 times these is a
# float64, so the gradient checks' float64 tiles stay float64; every one is exact in float32.
_0, _0_125, _0_25, _0_5, _1_25, _2 = (np.float32(v) for v in (0, 0.125, 0.25, 0.5, 1.25, 2))
_2_5, _4, _4_25, _5, _5_25, _8 = (np.float32(v) for v in (2.5, 4, 4.25, 5, 5.25, 8))


@njit(inline="always")
def _bt6(s, si, ss, d, di, ds):
    """B^T v, F(4x4, 3x3) (6 -> 6)."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2 = s[si, c], s[si + ss, c], s[si + 2 * ss, c]
        s3, s4, s5 = s[si + 3 * ss, c], s[si + 4 * ss, c], s[si + 5 * ss, c]
        d[di, c] = _4 * s0 - _5 * s2 + s4
        d[di + ds, c] = -_4 * s1 - _4 * s2 + s3 + s4
        d[di + 2 * ds, c] = _4 * s1 - _4 * s2 - s3 + s4
        d[di + 3 * ds, c] = -_2 * s1 - s2 + _2 * s3 + s4
        d[di + 4 * ds, c] = _2 * s1 - s2 - _2 * s3 + s4
        d[di + 5 * ds, c] = _4 * s1 - _5 * s3 + s5


@njit(inline="always")
def _b6(s, si, ss, d, di, ds):
    """B v (6 -> 6): the adjoint of _bt6."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2 = s[si, c], s[si + ss, c], s[si + 2 * ss, c]
        s3, s4, s5 = s[si + 3 * ss, c], s[si + 4 * ss, c], s[si + 5 * ss, c]
        d[di, c] = _4 * s0
        d[di + ds, c] = -_4 * s1 + _4 * s2 - _2 * s3 + _2 * s4 + _4 * s5
        d[di + 2 * ds, c] = -_5 * s0 - _4 * s1 - _4 * s2 - s3 - s4
        d[di + 3 * ds, c] = s1 - s2 + _2 * s3 - _2 * s4 - _5 * s5
        d[di + 4 * ds, c] = s0 + s1 + s2 + s3 + s4
        d[di + 5 * ds, c] = s5


@njit(inline="always")
def _at6(s, si, ss, d, di, ds):
    """A^T v (6 -> 4)."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2 = s[si, c], s[si + ss, c], s[si + 2 * ss, c]
        s3, s4, s5 = s[si + 3 * ss, c], s[si + 4 * ss, c], s[si + 5 * ss, c]
        d[di, c] = s0 + s1 + s2 + s3 + s4
        d[di + ds, c] = s1 - s2 + _2 * s3 - _2 * s4
        d[di + 2 * ds, c] = s1 + s2 + _4 * s3 + _4 * s4
        d[di + 3 * ds, c] = s1 - s2 + _8 * s3 - _8 * s4 + s5


@njit(inline="always")
def _a6(s, si, ss, d, di, ds):
    """A v (4 -> 6): the adjoint of _at6."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2, s3 = s[si, c], s[si + ss, c], s[si + 2 * ss, c], s[si + 3 * ss, c]
        d[di, c] = s0
        d[di + ds, c] = s0 + s1 + s2 + s3
        d[di + 2 * ds, c] = s0 - s1 + s2 - s3
        d[di + 3 * ds, c] = s0 + _2 * s1 + _4 * s2 + _8 * s3
        d[di + 4 * ds, c] = s0 - _2 * s1 + _4 * s2 - _8 * s3
        d[di + 5 * ds, c] = s3


@njit(inline="always")
def _bt8(s, si, ss, d, di, ds):
    """B^T v, F(4x4, 5x5) (8 -> 8)."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2, s3 = s[si, c], s[si + ss, c], s[si + 2 * ss, c], s[si + 3 * ss, c]
        s4, s5, s6, s7 = s[si + 4 * ss, c], s[si + 5 * ss, c], s[si + 6 * ss, c], s[si + 7 * ss, c]
        d[di, c] = -s0 + _5_25 * (s2 - s4) + s6
        p, q = s1 + s5 - _4_25 * s3, s2 + s6 - _4_25 * s4
        d[di + ds, c], d[di + 2 * ds, c] = q + p, q - p
        p, q = _0_5 * s1 - _2_5 * s3 + _2 * s5, _0_25 * s2 - _1_25 * s4 + s6
        d[di + 3 * ds, c], d[di + 4 * ds, c] = q + p, q - p
        p, q = _2 * s1 - _2_5 * s3 + _0_5 * s5, _4 * s2 - _5 * s4 + s6
        d[di + 5 * ds, c], d[di + 6 * ds, c] = q + p, q - p
        d[di + 7 * ds, c] = -s1 + _5_25 * (s3 - s5) + s7


@njit(inline="always")
def _b8(s, si, ss, d, di, ds):
    """B v (8 -> 8): the adjoint of _bt8."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2, s3 = s[si, c], s[si + ss, c], s[si + 2 * ss, c], s[si + 3 * ss, c]
        s4, s5, s6, s7 = s[si + 4 * ss, c], s[si + 5 * ss, c], s[si + 6 * ss, c], s[si + 7 * ss, c]
        e1, o1 = s1 + s2, s1 - s2      # (the rows of B^T come in pairs that differ in odd signs)
        e3, o3 = s3 + s4, s3 - s4
        e5, o5 = s5 + s6, s5 - s6
        d[di, c] = -s0
        d[di + ds, c] = o1 + _0_5 * o3 + _2 * o5 - s7
        d[di + 2 * ds, c] = _5_25 * s0 + e1 + _0_25 * e3 + _4 * e5
        d[di + 3 * ds, c] = -_4_25 * o1 - _2_5 * o3 - _2_5 * o5 + _5_25 * s7
        d[di + 4 * ds, c] = -_5_25 * s0 - _4_25 * e1 - _1_25 * e3 - _5 * e5
        d[di + 5 * ds, c] = o1 + _2 * o3 + _0_5 * o5 - _5_25 * s7
        d[di + 6 * ds, c] = s0 + e1 + e3 + e5
        d[di + 7 * ds, c] = s7


@njit(inline="always")
def _at8(s, si, ss, d, di, ds):
    """A^T v (8 -> 4)."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2, s3 = s[si, c], s[si + ss, c], s[si + 2 * ss, c], s[si + 3 * ss, c]
        s4, s5, s6, s7 = s[si + 4 * ss, c], s[si + 5 * ss, c], s[si + 6 * ss, c], s[si + 7 * ss, c]
        e1, o1 = s1 + s2, s1 - s2
        e3, o3 = s3 + s4, s3 - s4
        e5, o5 = s5 + s6, s5 - s6
        d[di, c] = s0 + e1 + e3 + e5
        d[di + ds, c] = o1 + _2 * o3 + _0_5 * o5
        d[di + 2 * ds, c] = e1 + _4 * e3 + _0_25 * e5
        d[di + 3 * ds, c] = o1 + _8 * o3 + _0_125 * o5 + s7


@njit(inline="always")
def _a8(s, si, ss, d, di, ds):
    """A v (4 -> 8): the adjoint of _at8."""
    for c in range(min(s.shape[1], d.shape[1])):
        s0, s1, s2, s3 = s[si, c], s[si + ss, c], s[si + 2 * ss, c], s[si + 3 * ss, c]
        e, o = s0 + s2, s1 + s3
        d[di, c] = s0
        d[di + ds, c], d[di + 2 * ds, c] = e + o, e - o
        e, o = s0 + _4 * s2, _2 * s1 + _8 * s3
        d[di + 3 * ds, c], d[di + 4 * ds, c] = e + o, e - o
        e, o = s0 + _0_25 * s2, _0_5 * s1 + _0_125 * s3
        d[di + 5 * ds, c], d[di + 6 * ds, c] = e + o, e - o
        d[di + 7 * ds, c] = s3


# The kernels below serve both algorithms: these pick one by a, the points per tile side.
@njit(inline="always")
def _bt(a, s, si, ss, d, di, ds):
    if a == 6:
        _bt6(s, si, ss, d, di, ds)
    else:
        _bt8(s, si, ss, d, di, ds)


@njit(inline="always")
def _b(a, s, si, ss, d, di, ds):
    if a == 6:
        _b6(s, si, ss, d, di, ds)
    else:
        _b8(s, si, ss, d, di, ds)


@njit(inline="always")
def _at(a, s, si, ss, d, di, ds):
    if a == 6:
        _at6(s, si, ss, d, di, ds)
    else:
        _at8(s, si, ss, d, di, ds)


@njit(inline="always")
def _a(a, s, si, ss, d, di, ds):
    if a == 6:
        _a6(s, si, ss, d, di, ds)
    else:
        _a8(s, si, ss, d, di, ds)


# The four kernels ("Layout" above): each step of the outer loop is one image, copied with its
# channel index innermost into a buffer of a few hundred kB that stays in cache.
@njit(inline="always")
def _row_length(C):
    """Row length of a one-image buffer of C channels: C rounded up to whole 16-number lines and
    to an odd number of them. The copy into (or out of) channel-innermost order goes down a
    column, one number per row; with rows of 256 or 384 numbers (1 or 1.5 kB) those fall in a
    few of the L1 cache's 64 sets and evict each other (docs/performance.md)."""
    lines = (C + 15) // 16
    return 16 * (lines + 1 - lines % 2)


@threaded_kernel(lambda x, pad, TH, TW, V: x.shape[0])
def _input_transform(lo, hi, x, pad, TH, TW, V):
    """V[a*i + j, n*T + t, c] = (B^T d B)[i, j], d the a x a input tile t of image n, channel c
    (a = 6 or 8, from V's shape). Tile t = (th, tw) starts at row 4*th - pad, column 4*tw - pad."""
    N, C, H, W = x.shape
    T = TH * TW
    a = 6 if V.shape[0] == 36 else 8
    NT = V.shape[1]
    rows = V.reshape(a * a * NT, C)
    XH, XW = 4 * TH + a - 4, 4 * TW + a - 4
    xp = np.zeros((XH * XW, _row_length(C)), x.dtype)  # one image, xp[h*XW + w, c], zero border
    t = np.empty((a * XW, C), x.dtype)    # B^T applied down the columns of one row of tiles
    for n in range(lo, hi):
        for c in range(C):
            plane = x[n, c]
            for h in range(min(H, XH - pad)):      # (rows and columns no tile reads are left out)
                for w in range(min(W, XW - pad)):
                    xp[(pad + h) * XW + pad + w, c] = plane[h, w]
        for th in range(TH):
            for w in range(XW):                   # columns: t[k*XW + w] = (B^T xp[4*th.., w])[k]
                _bt(a, xp, 4 * th * XW + w, XW, t, w, XW)
            for tw in range(TW):
                col = n * T + th * TW + tw
                for i in range(a):                # rows: V[a*i + j, col] = (B^T t[i, 4*tw..])[j]
                    _bt(a, t, i * XW + 4 * tw, 1, rows, a * i * NT + col, NT)


@threaded_kernel(lambda M, b, relu, out: out.shape[0])
def _output_transform(lo, hi, M, b, relu, out):
    """out[n, f, 4*th + i, 4*tw + j] = (A^T M A)[i, j] + b[f] for tile (th, tw) of image n, where
    M is the (a, a) block M[:, n*T + t, f]; with relu=True, max(that, 0). The part of the last
    tiles beyond the output's edge is dropped."""
    N, F, OH, OW = out.shape
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    T = TH * TW
    a = 6 if M.shape[0] == 36 else 8
    NT = M.shape[1]
    rows = M.reshape(a * a * NT, F)
    YW = 4 * TW
    y = np.empty((4 * TH * YW, _row_length(F)), M.dtype)  # one image's output tiles, y[h*YW + w, f]
    t = np.empty((4 * a, F), M.dtype)         # A^T M, one tile
    for n in range(lo, hi):
        for th in range(TH):
            for tw in range(TW):
                col = n * T + th * TW + tw
                for j in range(a):               # columns: t[k*a + j] = (A^T M[:, j])[k]
                    _at(a, rows, j * NT + col, a * NT, t, j, a)
                for i in range(4):               # rows: y[4*th + i, 4*tw + k] = (A^T t[i])[k]
                    _at(a, t, i * a, 1, y, (4 * th + i) * YW + 4 * tw, 1)
        for f in range(F):
            plane = out[n, f]
            bias = b[f]
            for h in range(OH):
                for w in range(OW):
                    v = y[h * YW + w, f] + bias
                    plane[h, w] = max(v, _0) if relu else v


@threaded_kernel(lambda dout, y, relu, sums, dM: dout.shape[0])
def _grad_transform(lo, hi, dout, y, relu, sums, dM):
    """dM[a*i + j, n*T + t, f] = (A e A^T)[i, j], e the 4x4 tile t of dout[n, f] (0 beyond the
    edge); sums[n, f] = the sum of dout[n, f] (the bias gradient's share of image n). With
    relu=True, dout goes through the ReLU's backward first: 0 where y (the ReLU's output) is 0."""
    N, F, OH, OW = dout.shape
    TH, TW = (OH + 3) // 4, (OW + 3) // 4
    T = TH * TW
    a = 6 if dM.shape[0] == 36 else 8
    NT = dM.shape[1]
    rows = dM.reshape(a * a * NT, F)
    EW = 4 * TW
    plane = np.zeros((4 * TH, EW), dM.dtype)   # one plane of dout, whole tiles (0 beyond the edge)
    e = np.empty((4 * TH * EW, _row_length(F)), dM.dtype)  # one image's dout, e[h*EW + w, f]
    t = np.empty((a * EW, F), dM.dtype)        # A applied down the columns of one row of tiles
    for n in range(lo, hi):
        for f in range(F):
            g, mask = dout[n, f], y[n, f]
            for h in range(OH):      # (no running sum in this loop, so that it vectorises)
                row = plane[h]
                for w in range(OW):  # both read before the test: a select, not a branch
                    v, m = g[h, w], mask[h, w]
                    row[w] = v if not relu or m > 0 else _0
            sums[n, f] = _sum64(plane.ravel())
            for h in range(4 * TH):
                for w in range(EW):
                    e[h * EW + w, f] = plane[h, w]
        for th in range(TH):
            for w in range(EW):                  # columns: t[k*EW + w] = (A e[4*th.., w])[k]
                _a(a, e, 4 * th * EW + w, EW, t, w, EW)
            for tw in range(TW):
                col = n * T + th * TW + tw
                for i in range(a):               # rows: dM[a*i + j, col] = (A t[i, 4*tw..])[j]
                    _a(a, t, i * EW + 4 * tw, 1, rows, a * i * NT + col, NT)


@threaded_kernel(lambda dV, pad, TH, TW, dx: dx.shape[0])
def _input_grad(lo, hi, dV, pad, TH, TW, dx):
    """dx[n, c] = the sum over tiles of B dV B^T (dV the (a, a) block dV[:, n*T + t, c]), each
    added where _input_transform read its tile; what falls in the padding is dropped."""
    N, C, H, W = dx.shape
    T = TH * TW
    a = 6 if dV.shape[0] == 36 else 8
    NT = dV.shape[1]
    rows = dV.reshape(a * a * NT, C)
    XH, XW = 4 * TH + a - 4, 4 * TW + a - 4
    dxp = np.empty((XH * XW, _row_length(C)), dV.dtype)  # one image and border: the tiles add up here
    t = np.empty((a * a, C), dV.dtype)      # B dV, one tile
    r = np.empty((a, C), dV.dtype)          # one row of B dV B^T
    for n in range(lo, hi):
        dxp[:] = 0.0
        for th in range(TH):
            for tw in range(TW):
                col = n * T + th * TW + tw
                for j in range(a):               # columns: t[k*a + j] = (B dV[:, j])[k]
                    _b(a, rows, j * NT + col, a * NT, t, j, a)
                for i in range(a):               # rows: dd[i] = B t[i], added in place
                    _b(a, t, i * a, 1, r, 0, 1)
                    at = (4 * th + i) * XW + 4 * tw
                    for k in range(a):
                        for c in range(C):
                            dxp[at + k, c] += r[k, c]
        for c in range(C):
            plane = dx[n, c]
            for h in range(H):
                for w in range(W):
                    inside = pad + h < XH and pad + w < XW
                    plane[h, w] = dxp[(pad + h) * XW + pad + w, c] if inside else _0


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


def _chunks(N, C, F, positions, T, dtype, fresh_V=False):
    """Yield (n0, n1, V, M): consecutive chunks [n0, n1) of images whose V (positions, nb*T, C)
    and M (positions, nb*T, F) each fit CHUNK_BYTES, with those two arrays as views of buffers
    that every chunk reuses. fresh_V: each chunk's V in a buffer of its own instead, to be kept
    after the loop."""
    itemsize = np.dtype(dtype).itemsize
    per_chunk = max(1, min(N, CHUNK_BYTES // (positions * max(C, F) * T * itemsize)))
    V_buf = None if fresh_V else buffers.empty(positions * per_chunk * T * C, dtype)
    M_buf = buffers.empty(positions * per_chunk * T * F, dtype)
    for n0 in range(0, N, per_chunk):
        n1 = min(N, n0 + per_chunk)
        NT = (n1 - n0) * T
        V = buffers.empty(positions * NT * C, dtype) if fresh_V else V_buf[:positions * NT * C]
        M = M_buf[:positions * NT * F]
        yield n0, n1, V.reshape(positions, NT, C), M.reshape(positions, NT, F)


def _by_tile_position(A, groups):
    """A (a*a, NT, G*K) array viewed as (a*a, G, NT, K): one (NT, K) matrix per tile position
    and group, for a batched product (no copy: each group is a block of columns)."""
    positions, NT, cols = A.shape
    return A.reshape(positions, NT, groups, cols // groups).transpose(0, 2, 1, 3)


def in_pieces(w_shape):
    """Whether a layer with weights of shape (F, C/G, K, K) runs in pieces (else in chunks)."""
    return w_shape[1] < PIECE_CHANNELS


def _pieces(N, F, positions, T, itemsize):
    """Consecutive [n0, n1) pieces of images whose M (positions, nb*T, F) fits PIECE_BYTES (at
    least one image a piece): from the shapes alone, so the same on any number of threads."""
    per_piece = max(1, min(N, PIECE_BYTES // (positions * T * F * itemsize)))
    return [(n0, min(N, n0 + per_piece)) for n0 in range(0, N, per_piece)]


def forward(x, w, b, pad, groups, relu):
    """(out, tiles): out (N, F, OH, OW) of the stride-1 convolution with 3x3 or 5x5 filters
    (ReLU fused in when relu=True), and the transformed input tiles {(n0, n1): V} of each chunk
    or piece of images, for the backward pass, when they take at most KEEP_BYTES (else None:
    the backward rebuilds them). x must be C-contiguous."""
    N, C, H, W = x.shape
    F, Cg, K = w.shape[:3]
    OH, OW = H + 2 * pad - K + 1, W + 2 * pad - K + 1
    TH, TW = _tiles(OH, OW)
    U = filter_transform(w, groups)                                    # (a*a, G, F/G, C/G)
    UT = U.transpose(0, 1, 3, 2)                                       # (a*a, G, C/G, F/G)
    keep = C * U.shape[0] * N * TH * TW * x.itemsize <= KEEP_BYTES
    out = buffers.empty((N, F, OH, OW), x.dtype)
    tiles = {} if keep else None
    if in_pieces(w.shape):
        _forward_pieces(x, UT, b, pad, groups, relu, out, tiles)
        return out, tiles
    for n0, n1, V, M in _chunks(N, C, F, U.shape[0], TH * TW, x.dtype, fresh_V=keep):
        _input_transform(x[n0:n1], pad, TH, TW, V)
        # M[ij] = V[ij] @ U[ij].T
        gemm.batched(_by_tile_position(V, groups), UT, _by_tile_position(M, groups))
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
    dx = buffers.empty_like(x) if need_dx else None
    relu = relu_out is not None
    y = relu_out if relu else dout
    if in_pieces(w.shape):
        return _backward_pieces(dout, x, w, U, pad, groups, y, relu, dx, tiles)
    dU = np.empty(U.shape, dtype=x.dtype)                              # (set by the first chunk)
    db_sum = np.zeros(F)                                               # float64 accumulator
    for n0, n1, dV, dM in _chunks(N, C, F, U.shape[0], TH * TW, x.dtype):
        V = tiles.get((n0, n1)) if tiles else None
        if V is None:                                  # rebuilt, as im2col is, in dV's place
            V = dV
            _input_transform(x[n0:n1], pad, TH, TW, V)
        image_sums = np.empty((n1 - n0, F))
        _grad_transform(dout[n0:n1], y[n0:n1], relu, image_sums, dM)
        db_sum += image_sums.sum(axis=0)
        V_ij, dM_ij = _by_tile_position(V, groups), _by_tile_position(dM, groups)
        # dU[ij] = dM[ij].T @ V[ij] (+= after the first chunk) and dV[ij] = dM[ij] @ U[ij], in one
        # pass, so that dM is read from memory once
        products = [(dM_ij.transpose(0, 1, 3, 2), V_ij, dU, n0 > 0)]
        if need_dx:
            products.append((dM_ij, U, _by_tile_position(dV, groups), False))
        gemm.batched_together(*products)
        if need_dx:
            _input_grad(dV, pad, TH, TW, dx[n0:n1])
    return dx, filter_grad(dU, w.shape), db_sum.astype(x.dtype)


def _forward_pieces(x, UT, b, pad, groups, relu, out, tiles):
    """forward() for a layer that runs in pieces (in_pieces): each piece of images start to
    end on one thread, into out; each piece's V kept in tiles unless tiles is None."""
    N, C = x.shape[:2]
    positions, F = UT.shape[0], out.shape[1]
    TH, TW = _tiles(*out.shape[2:])
    pieces = _pieces(N, F, positions, TH * TW, x.itemsize)

    def piece(i):   # one piece of images, start to end on one thread
        n0, n1 = pieces[i]
        NT = (n1 - n0) * TH * TW
        V = buffers.empty((positions, NT, C), x.dtype)
        M = buffers.empty((positions, NT, F), x.dtype)
        _input_transform(x[n0:n1], pad, TH, TW, V)
        np.matmul(_by_tile_position(V, groups), UT, out=_by_tile_position(M, groups))  # V[ij] @ U[ij].T
        _output_transform(M, b, relu, out[n0:n1])
        if tiles is not None:
            tiles[(n0, n1)] = V
    threads.share_blas_work(piece, len(pieces))


def _backward_pieces(dout, x, w, U, pad, groups, y, relu, dx, tiles):
    """backward() for a layer that runs in pieces (in_pieces): each piece of images start to
    end on one thread; its share of dU is summed with the others' in piece order."""
    N, C, H, W = x.shape
    F = w.shape[0]
    TH, TW = _tiles(*dout.shape[2:])
    positions = U.shape[0]
    pieces = _pieces(N, F, positions, TH * TW, x.itemsize)      # the forward's, so the kept tiles'
    dU_parts = np.empty((len(pieces),) + U.shape, dtype=x.dtype)
    image_sums = np.empty((N, F))                                # float64, the bias gradient's

    def piece(i):   # one piece of images, start to end on one thread
        n0, n1 = pieces[i]
        NT = (n1 - n0) * TH * TW
        V = tiles.get((n0, n1)) if tiles else None
        if V is None:                                  # rebuilt, as im2col is
            V = buffers.empty((positions, NT, C), x.dtype)
            _input_transform(x[n0:n1], pad, TH, TW, V)
        dM = buffers.empty((positions, NT, F), x.dtype)
        _grad_transform(dout[n0:n1], y[n0:n1], relu, image_sums[n0:n1], dM)
        V_ij, dM_ij = _by_tile_position(V, groups), _by_tile_position(dM, groups)
        np.matmul(dM_ij.transpose(0, 1, 3, 2), V_ij, out=dU_parts[i])   # dU[ij] = dM[ij].T @ V[ij]
        if dx is not None:
            dV = buffers.empty((positions, NT, C), x.dtype)
            np.matmul(dM_ij, U, out=_by_tile_position(dV, groups))       # dV[ij] = dM[ij] @ U[ij]
            _input_grad(dV, pad, TH, TW, dx[n0:n1])
    threads.share_blas_work(piece, len(pieces))
    dU = dU_parts.sum(axis=0)                 # in piece order: the same bits on any thread count
    return dx, filter_grad(dU, w.shape), image_sums.sum(axis=0).astype(x.dtype)
