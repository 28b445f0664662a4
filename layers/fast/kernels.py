"""Numba kernels: the fast versions of the loops in `layers.reference`.

Every kernel here computes exactly what its namesake in `layers.reference` computes (the tests
assert it on awkward shapes); only the loop order, the parallelism and the bookkeeping differ.
Read the reference first: it is the formula. This module is where speed is allowed to cost
readability.

    fast (this module)                       plain reference (layers.reference)
    im2col(x, KH, KW, stride, pad, out=None) im2col(x, KH, KW, stride, pad)
    col2im(cols, x_shape, KH, KW, stride, pad) col2im(...)
    maxpool(x, KH, KW, stride)               maxpool(...)
    maxpool_grad(dout, argmax, x_shape)      maxpool_grad(...)
    lrn(x, size, k, alpha, beta)             lrn(...) (out; scale only if asked)
    lrn_grad(dout, x, size, k, alpha, beta)  lrn_grad(dout, x, out, scale, ...) (recomputes s, b)
    mat_to_nchw(mat, b, relu, out)           (conv helper: out[n, f, p] = mat[f, n*P + p] + b[f], ReLU if asked)
    (_pad and _crop: the zero border im2col reads and col2im writes, so their loops need no bounds tests)
    nchw_to_mat(a, y, relu, sums, out)       (conv helper: out[f, n*P + p] = a[n, f, p], sums[n, f] = row sums,
                                              ReLU's backward if asked: layers.conv_relu_forward)

Dimensions: N batch, C channels, H, W input size, KH, KW kernel size, OH, OW output size,
P = OH*OW output positions per image, F filters.

All kernels are compiled on first use for the dtypes they meet (float32 in training, float64
in gradient checks) and cached on disk (`cache=True`): see `layers/__init__.py` for where.

Threads. Each kernel's outermost loop runs over independent pieces of work (rows of cols,
channels, images, planes) that write disjoint parts of the output; every kernel takes that
loop's range as its first two arguments, `lo, hi`. On a large output the range is cut into
pieces that the threads take one at a time from a shared counter (`threads.py`: a thread the
machine does not schedule only holds up its current piece). Each kernel is compiled once,
without Numba's parallel passes (a short cold start), and idle workers sleep. The thread count:
`threads.set_num_threads(n)`.
"""

import numpy as np
from numba import njit

from . import buffers, threads
from ..reference import out_size

_JIT = dict(cache=True, nogil=True)
# For the kernels that divide in their loops (LRN's): a float division by zero gives inf or
# nan, as in NumPy, instead of raising, so a division loop carries no test and vectorises.
# (Not for all kernels: max-pooling, which does not divide, runs 10% slower compiled so.)
DIVIDES = dict(error_model="numpy")
# A large kernel's outer loop is cut into pieces of at least this many output elements (fewer
# would cost more in hand-over than they save), and at most MAX_PIECES of them.
PIECE_WORK = 1 << 16
MAX_PIECES = 32


def threaded_kernel(extent, **jit_options):
    """Compile a kernel `fn(lo, hi, *args)` whose outer loop is `for i in range(lo, hi)`, and
    return `call(*args)`, which runs the whole range 0..extent(*args): cut into pieces by the
    size of the output (the last argument of every kernel) and shared between the threads
    (`threads.share`) when it is large, in one call on one thread or inside another piece.
    jit_options: Numba's, added to _JIT (DIVIDES)."""
    def wrap(fn):
        jitted = njit(**_JIT, **jit_options)(fn)

        def call(*args):
            n = extent(*args)
            pieces = min(n, args[-1].size // PIECE_WORK, MAX_PIECES)
            if pieces <= 1 or not threads.parallel_here():
                return jitted(0, n, *args)
            c = threads.cuts(n, pieces)
            threads.share(lambda i: jitted(c[i], c[i + 1], *args), pieces)
        call.__name__, call.__doc__ = fn.__name__, fn.__doc__
        return call
    return wrap


@threaded_kernel(lambda x, pad, xp: x.shape[0] * x.shape[1])
def _pad(lo, hi, x, pad, xp):
    """xp = x with `pad` zeros around every (H, W) plane."""
    N, C, H, W = x.shape
    for nc in range(lo, hi):
        n = nc // C
        c = nc % C
        xp[n, c] = 0
        for h in range(H):  # explicit loops: a slice assignment compiles slowly
            dst = xp[n, c, pad + h]
            src = x[n, c, h]
            for w in range(W):
                dst[pad + w] = src[w]


def _padded(x, pad):
    if pad == 0:
        return x
    N, C, H, W = x.shape
    xp = buffers.empty((N, C, H + 2 * pad, W + 2 * pad), x.dtype)
    _pad(x, pad, xp)
    return xp


@threaded_kernel(lambda xp, KH, KW, stride, OH, OW, cols: cols.shape[0])
def _im2col(lo, hi, xp, KH, KW, stride, OH, OW, cols):
    # Reads the zero-padded input, so the inner loop needs no bounds tests. The input is read
    # as one flat array with the offsets worked out here, and copied by an explicit loop:
    # both are faster than a 4-d row view or a slice copy per (short) output row.
    N, C, Hp, Wp = xp.shape
    xf = xp.reshape(-1)
    P = OH * OW
    for r in range(lo, hi):  # rows of cols: no two write the same element
        c = r // (KH * KW)
        i = (r // KW) % KH
        j = r % KW
        row = cols[r]
        for n in range(N):
            q = n * P                                   # this image's columns in cols
            s = ((n * C + c) * Hp + i) * Wp + j         # xp[n, c, i, j], the first element read
            for oh in range(OH):
                if stride == 1:
                    for ow in range(OW):
                        row[q + ow] = xf[s + ow]
                else:
                    for ow in range(OW):
                        row[q + ow] = xf[s + ow * stride]
                q += OW
                s += stride * Wp                        # down `stride` input rows


def im2col(x, KH, KW, stride, pad, out=None):
    """Fast `reference.im2col`; writes into `out` (C*KH*KW, N*OH*OW) when given."""
    N, C, H, W = x.shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    cols = buffers.empty((C * KH * KW, N * OH * OW), x.dtype) if out is None else out
    _im2col(_padded(np.ascontiguousarray(x), pad), KH, KW, stride, OH, OW, cols)
    return cols


@threaded_kernel(lambda cols, KH, KW, stride, OH, OW, dxp: dxp.shape[1])
def _col2im(lo, hi, cols, KH, KW, stride, OH, OW, dxp):
    # Accumulates into a zero-padded gradient (no bounds tests); the caller crops the padding.
    # Loops in the reference's order: each row of cols is read once, front to back (faster
    # than image by image, jumping between rows), and scattered into the planes of its
    # channel, which stay in cache. Flat offsets, as in _im2col.
    N, C, Hp, Wp = dxp.shape
    df = dxp.reshape(-1)
    P = OH * OW
    for c in range(lo, hi):  # channels: the rows of channel c write only its planes
        for n in range(N):
            dxp[n, c] = 0
        for i in range(KH):
            for j in range(KW):
                row = cols[(c * KH + i) * KW + j]
                for n in range(N):
                    q = n * P
                    s = ((n * C + c) * Hp + i) * Wp + j
                    for oh in range(OH):
                        if stride == 1:
                            for ow in range(OW):
                                df[s + ow] += row[q + ow]
                        else:
                            for ow in range(OW):
                                df[s + ow * stride] += row[q + ow]
                        q += OW
                        s += stride * Wp


@threaded_kernel(lambda xp, pad, x: x.shape[0] * x.shape[1])
def _crop(lo, hi, xp, pad, x):
    N, C, H, W = x.shape
    for nc in range(lo, hi):
        n = nc // C
        c = nc % C
        for h in range(H):
            dst = x[n, c, h]
            src = xp[n, c, pad + h]
            for w in range(W):
                dst[w] = src[pad + w]


def col2im(cols, x_shape, KH, KW, stride, pad, out=None):
    """Fast `reference.col2im`; writes into `out` (N, C, H, W) when given."""
    N, C, H, W = x_shape
    OH, OW = out_size(H, KH, stride, pad), out_size(W, KW, stride, pad)
    dx = buffers.empty(x_shape, cols.dtype) if out is None else out
    if pad == 0 and dx.flags.c_contiguous:     # (the kernel reads its output as one flat array)
        _col2im(cols, KH, KW, stride, OH, OW, dx)
    else:
        dxp = buffers.empty((N, C, H + 2 * pad, W + 2 * pad), cols.dtype)
        _col2im(cols, KH, KW, stride, OH, OW, dxp)
        _crop(dxp, pad, dx)
    return dx


@njit(inline="always")
def _pool_3x3_stride_2(p, W, o, am, col_max, col_row):
    """One plane p of the paper's 3x3 windows with stride 2, as _maxpool below, the window
    written out: each output row's three input rows compared in one pass, then each window's
    three columns (selects, no branches; the fixed taps let the compiler vectorise both)."""
    OH, OW = o.shape
    for oh in range(OH):
        h0 = 2 * oh
        r0, r1, r2 = p[h0], p[h0 + 1], p[h0 + 2]
        for w in range(2 * OW + 1):                    # column maxima
            a, b, c = r0[w], r1[w], r2[w]
            second = b > a                             # strict: the earlier row wins ties
            v = b if second else a
            h = h0 + 1 if second else h0
            third = c > v
            col_max[w] = c if third else v
            col_row[w] = h0 + 2 if third else h
        orow, arow = o[oh], am[oh]
        for ow in range(OW):                           # windows: the earliest row, then leftmost
            w0 = 2 * ow
            v0, h0_, v1, h1 = col_max[w0], col_row[w0], col_max[w0 + 1], col_row[w0 + 1]
            v2, h2 = col_max[w0 + 2], col_row[w0 + 2]
            wins = (v1 > v0) | ((v1 == v0) & (h1 < h0_))
            best, best_h, best_w = (v1, h1, w0 + 1) if wins else (v0, h0_, w0)
            wins = (v2 > best) | ((v2 == best) & (h2 < best_h))
            best, best_h, best_w = (v2, h2, w0 + 2) if wins else (best, best_h, best_w)
            orow[ow] = best
            arow[ow] = best_h * W + best_w


@threaded_kernel(lambda x, KH, KW, stride, out, argmax: x.shape[0] * x.shape[1])
def _maxpool(lo, hi, x, KH, KW, stride, out, argmax):
    # Separably, one output row at a time: first down each column of its KH input rows (the
    # column's maximum and the first row holding it, for whole rows at once: vectorised, no
    # branches), then across each window's KW columns. The winner is the reference's, the
    # first maximum in row-major order: of the columns holding the window's maximum, the one
    # whose maximum comes in the earliest row, then the leftmost.
    N, C, H, W = x.shape
    OH, OW = out.shape[2], out.shape[3]
    used = (OW - 1) * stride + KW                      # the columns some window reads
    col_max = np.empty(used, x.dtype)
    col_row = np.empty(used, np.int32)
    written_out = KH == 3 and KW == 3 and stride == 2   # the paper's windows
    for nc in range(lo, hi):
        n = nc // C
        c = nc % C
        if written_out:
            _pool_3x3_stride_2(x[n, c], W, out[n, c], argmax[n, c], col_max, col_row)
            continue
        for oh in range(OH):
            h0 = oh * stride
            top = x[n, c, h0]
            for w in range(used):
                col_max[w] = top[w]
                col_row[w] = h0
            for i in range(1, KH):
                row = x[n, c, h0 + i]
                for w in range(used):
                    v = row[w]
                    higher = v > col_max[w]            # strict: the first row wins ties
                    col_row[w] = h0 + i if higher else col_row[w]
                    col_max[w] = v if higher else col_max[w]
            for ow in range(OW):
                w0 = ow * stride
                best, best_h, best_w = col_max[w0], col_row[w0], w0
                for j in range(1, KW):                 # selects, not branches: no mispredictions
                    v, h = col_max[w0 + j], col_row[w0 + j]
                    wins = (v > best) | ((v == best) & (h < best_h))
                    best = v if wins else best
                    best_h = h if wins else best_h
                    best_w = w0 + j if wins else best_w
                out[n, c, oh, ow] = best
                argmax[n, c, oh, ow] = best_h * W + best_w


def maxpool(x, KH, KW, stride):
    """Fast `reference.maxpool`: (out, argmax), argmax an int32 flat index into the (H, W) plane."""
    N, C, H, W = x.shape
    shape = (N, C, out_size(H, KH, stride, 0), out_size(W, KW, stride, 0))
    out = buffers.empty(shape, x.dtype)
    argmax = buffers.empty(shape, np.int32)
    _maxpool(x, KH, KW, stride, out, argmax)
    return out, argmax


@threaded_kernel(lambda dout, argmax, dx: dx.shape[0] * dx.shape[1])
def _maxpool_grad(lo, hi, dout, argmax, dx):
    N, C, OH, OW = dout.shape
    H, W = dx.shape[2], dx.shape[3]
    for nc in range(lo, hi):
        n = nc // C
        c = nc % C
        for ih in range(H):
            for iw in range(W):
                dx[n, c, ih, iw] = 0
        for oh in range(OH):
            for ow in range(OW):
                a = argmax[n, c, oh, ow]
                dx[n, c, a // W, a % W] += dout[n, c, oh, ow]  # overlapping windows accumulate


def maxpool_grad(dout, argmax, x_shape):
    """Fast `reference.maxpool_grad`."""
    dx = buffers.empty(x_shape, dout.dtype)
    _maxpool_grad(dout, argmax, dx)
    return dx


@njit(inline="always")
def _neg_pow_rows(s, beta, out):
    """out[p] = s[p] ** -beta over a row; the paper's beta = 0.75 by square roots, which
    vectorise (pow does not), with the branch outside the loop."""
    if beta == 0.75:
        for p in range(s.shape[0]):
            r = np.sqrt(s[p])
            out[p] = r * np.sqrt(r)
        for p in range(s.shape[0]):
            out[p] = 1 / out[p]
    else:
        for p in range(s.shape[0]):
            out[p] = s[p] ** -beta


@njit(inline="always")
def _window_scale(a, c, size, k, alpha, s):
    """s = k + alpha * (sum of a[j]^2 over channel c's window), over a row of pixels; a is
    one image's (C, P). A whole window of five (the paper's) in one pass over the row."""
    C, P = a.shape
    j0, j1 = max(0, c - size // 2), min(C - 1, c + (size - 1) // 2) + 1
    if j1 - j0 == 5:
        a0, a1, a2, a3, a4 = a[j0], a[j0 + 1], a[j0 + 2], a[j0 + 3], a[j0 + 4]
        for p in range(P):   # the same sum, in the same order, as the loop below
            s[p] = k + alpha * ((((a0[p] * a0[p] + a1[p] * a1[p]) + a2[p] * a2[p])
                                 + a3[p] * a3[p]) + a4[p] * a4[p])
        return
    s[:] = 0
    for j in range(j0, j1):
        aj = a[j]
        for p in range(P):
            s[p] += aj[p] * aj[p]
    for p in range(P):
        s[p] = k + alpha * s[p]


@threaded_kernel(lambda x, size, k, alpha, beta, scale, out: x.shape[0], **DIVIDES)
def _lrn(lo, hi, x, size, k, alpha, beta, scale, out):
    # One image per task, whole rows of P = H*W pixels at a time (vectorisable). s is kept in
    # `scale` only when it has the images (scale.shape[0] == N): the fast route does not keep it.
    N, C, H, W = x.shape
    P = H * W
    xf, of, sf = x.reshape(N, C, P), out.reshape(N, C, P), scale.reshape(scale.shape[0], C, P)
    s = np.empty(P, x.dtype)
    for n in range(lo, hi):
        for c in range(C):
            _window_scale(xf[n], c, size, k, alpha, s)
            if sf.shape[0] == N:
                kept = sf[n, c]
                for p in range(P):                     # (a loop: a slice copy compiles slowly)
                    kept[p] = s[p]
            a, b = xf[n, c], of[n, c]
            _neg_pow_rows(s, beta, b)                  # b = s^-beta
            for p in range(P):
                b[p] *= a[p]                           # b = a * s^-beta


def lrn(x, size, k, alpha, beta, keep_scale=False):
    """Fast `reference.lrn`: (out, scale); scale is None unless keep_scale (`lrn_grad`
    recomputes it: writing it and reading it back costs more than the arithmetic)."""
    out = buffers.empty_like(x)
    scale = np.empty_like(x) if keep_scale else np.empty((0,) + x.shape[1:], x.dtype)
    t = x.dtype.type  # scalars in x's dtype, so float32 maths stays float32 (and vectorises)
    _lrn(x, size, t(k), t(alpha), t(beta), scale, out)
    return out, (scale if keep_scale else None)


@threaded_kernel(lambda dout, x, size, k, alpha, beta, dx: x.shape[0], **DIVIDES)
def _lrn_grad(lo, hi, dout, x, size, k, alpha, beta, dx):
    N, C, H, W = x.shape
    P = H * W
    gf, xf, df = dout.reshape(N, C, P), x.reshape(N, C, P), dx.reshape(N, C, P)
    # channel j is in the window of channel i for i in [j - (size-1)//2, j + size//2]
    lo_off, hi_off = (size - 1) // 2, size // 2
    two_alpha_beta = (alpha + alpha) * beta            # in x's dtype (2 * alpha would be float64)
    t = np.empty((C, P), dtype=x.dtype)               # t_i = g_i * b_i / s_i
    q = np.empty((C, P), dtype=x.dtype)               # q_i = s_i^-beta
    s = np.empty(P, dtype=x.dtype)
    for n in range(lo, hi):
        for i in range(C):                             # s, b = a * s^-beta as in the forward
            _window_scale(xf[n], i, size, k, alpha, s)
            qi, g, a = q[i], gf[n, i], xf[n, i]
            _neg_pow_rows(s, beta, qi)
            for p in range(P):
                t[i, p] = g[p] * (a[p] * qi[p]) / s[p]
        for j in range(C):
            d = df[n, j]
            g, a, qj = gf[n, j], xf[n, j], q[j]
            i0, i1 = max(0, j - lo_off), min(C - 1, j + hi_off) + 1
            if i1 - i0 == 5:                           # a whole window of five in one pass
                t0, t1, t2, t3, t4 = t[i0], t[i0 + 1], t[i0 + 2], t[i0 + 3], t[i0 + 4]
                for p in range(P):
                    d[p] = g[p] * qj[p] - two_alpha_beta * a[p] * ((((t0[p] + t1[p]) + t2[p])
                                                                    + t3[p]) + t4[p])
                continue
            d[:] = 0
            for i in range(i0, i1):
                for p in range(P):
                    d[p] += t[i, p]
            for p in range(P):
                d[p] = g[p] * qj[p] - two_alpha_beta * a[p] * d[p]


def lrn_grad(dout, x, size, k, alpha, beta):
    """Fast `reference.lrn_grad`, from the input alone: s and b are recomputed."""
    dx = buffers.empty_like(x)
    t = x.dtype.type
    _lrn_grad(dout, x, size, t(k), t(alpha), t(beta), dx)
    return dx


@threaded_kernel(lambda mat, b, relu, out: out.shape[0] * out.shape[1])
def mat_to_nchw(lo, hi, mat, b, relu, out):
    """out[n, f, p] = mat[f, n*P + p] + b[f]: a GEMM result (F, N*P) back to NCHW, plus bias;
    with relu=True, max(that, 0): the ReLU in the same pass."""
    N, F, P = out.shape
    for nf in range(lo, hi):
        n = nf // F
        f = nf % F
        for p in range(P):
            v = mat[f, n * P + p] + b[f]
            out[n, f, p] = max(v, 0) if relu else v


@njit(inline="always")
def _sum64(row):
    """The sum of a row in float64 (a long float32 sum would lose digits), kept as four
    partial sums over interleaved elements: four independent additions the CPU overlaps,
    where one running sum makes each addition wait for the one before."""
    s0 = s1 = s2 = s3 = 0.0
    P = row.shape[0]
    p = 0
    while p + 4 <= P:
        s0 += row[p]
        s1 += row[p + 1]
        s2 += row[p + 2]
        s3 += row[p + 3]
        p += 4
    while p < P:
        s0 += row[p]
        p += 1
    return (s0 + s1) + (s2 + s3)


@threaded_kernel(lambda a, y, relu, sums, out: a.shape[0] * a.shape[1])
def nchw_to_mat(lo, hi, a, y, relu, sums, out):
    """out[f, n*P + p] = a[n, f, p]: NCHW gradients laid out as the GEMM's (F, N*P) operand, and
    sums[n, f] = the sum of image n's row (summed over n, the bias gradient), in the same pass.
    With relu=True, the ReLU's backward too: a[n, f, p] where y[n, f, p] > 0 (y is the ReLU's
    output), else 0; y is not read when relu=False."""
    N, F, P = a.shape
    zero = np.float32(0)    # (the smallest float type: the select below stays in a's type)
    for nf in range(lo, hi):
        n = nf // F
        f = nf % F
        src, dst = a[n, f], out[f, n * P:(n + 1) * P]
        if relu:   # a copy loop without a running sum in it, so that it vectorises
            mask = y[n, f]
            for p in range(P):
                dst[p] = src[p] if mask[p] > 0 else zero
        else:
            for p in range(P):
                dst[p] = src[p]
        sums[n, f] = _sum64(dst)
