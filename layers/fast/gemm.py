"""The fast route's large matrix products, cut into pieces that `threads.share` deals out,
each run by NumPy's BLAS on one thread (why: `threads.py`).

    matmul(a, b, out)       out = a @ b              a (m, k), b (k, n), out (m, n)
    batched(a, b, out)      out[i] = a[i] @ b[i]     over the leading axes of 4-d arrays
    batched(..., accumulate=True)   out[i] += a[i] @ b[i]
    batched_together((a, b, out, accumulate), ...)   several batched products in one pass

A 2-d product is cut along the longer side of `out`: rows of out are rows of a, columns of out
are columns of b, so each piece reads its own part of the larger operand once and all of the
other. A batched product is cut between its matrices. Pieces are views with a row stride
(BLAS's leading dimension): nothing is copied. The cuts depend on the shapes alone, so a
product gives the same bits on any number of threads.
"""

import numpy as np

from . import threads

PIECE_FLOPS = 16_000_000    # the smallest piece worth handing out (about 0.2 ms on one core)
MAX_PIECES = 32             # enough for even shares on a busy machine, few enough to cost nothing
# The narrowest piece of a 2-d product. Every piece packs all of the other operand into BLAS's
# own layout again, so narrow pieces repeat that copy: the dense layers' products run 1.2x
# slower cut 64 wide than 512 wide (docs/performance.md).
MIN_SIDE = 512


def _pieces(flops, side):
    return int(max(1, min(flops // PIECE_FLOPS, side // MIN_SIDE, MAX_PIECES)))


def matmul(a, b, out):
    """out = a @ b (2-d), cut into pieces along out's longer side; returns out."""
    m, n = out.shape
    pieces = _pieces(2 * m * n * a.shape[1], max(m, n))
    if pieces == 1 or not threads.can_limit_blas():
        return np.matmul(a, b, out=out)
    c = threads.cuts(max(m, n), pieces)
    if m >= n:
        def run(i):
            np.matmul(a[c[i]:c[i + 1]], b, out=out[c[i]:c[i + 1]])
    else:
        def run(i):
            np.matmul(a, b[:, c[i]:c[i + 1]], out=out[:, c[i]:c[i + 1]])
    threads.share_blas_work(run, pieces)
    return out


def batched(a, b, out, accumulate=False):
    """out[i, j] = a[i, j] @ b[i, j] (or +=, with accumulate) for 4-d a (I, J, m, k),
    b (I, J, k, n), out (I, J, m, n), one piece per run of consecutive matrices; returns out."""
    if not accumulate and not threads.can_limit_blas():
        return np.matmul(a, b, out=out)
    batched_together((a, b, out, accumulate))
    return out


def batched_together(*products):
    """batched(a, b, out, accumulate) for each (a, b, out, accumulate) in products, all over the
    same (I, J) matrices, in one pass: a piece runs matrix (i, j) of every product in turn, so
    an operand they share is read from memory once and from the cache after (the Winograd
    backward's dM, 134 MB in `cifar`'s conv2, feeds two products)."""
    I, J = products[0][2].shape[:2]
    count = I * J
    flops = sum(2 * count * out.shape[2] * out.shape[3] * a.shape[3] for a, b, out, _ in products)
    pieces = int(max(1, min(count, flops // PIECE_FLOPS, MAX_PIECES)))
    c = threads.cuts(count, pieces)

    def run(p):
        for ij in range(c[p], c[p + 1]):
            i, j = divmod(ij, J)
            for a, b, out, accumulate in products:
                if accumulate:
                    out[i, j] += np.matmul(a[i, j], b[i, j])
                else:
                    np.matmul(a[i, j], b[i, j], out=out[i, j])
    threads.share_blas_work(run, pieces)
