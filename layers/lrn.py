"""Local response normalisation across channels (AlexNet, section 3.3).

Dimensions: N batch, C channels, H, W spatial size. Everything happens independently at each
(n, h, w); below, a_c is the input at channel c there and b_c the output.

Forward (the paper's formula, n = `size` neighbouring channels, clipped at the edges):

    s_c = k + alpha * sum_{j in win(c)} a_j^2            win(c) = c - size//2 ... c + (size-1)//2
    b_c = a_c * s_c^(-beta)

Paper values: k = 2, size = 5, alpha = 1e-4, beta = 0.75.

The alpha convention, which readers trip on: the paper multiplies the *sum* of squares by
alpha; PyTorch's `LocalResponseNorm(size, alpha, beta, k)` multiplies their *mean*, i.e. uses
alpha/size. So the paper's layer is PyTorch's LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2).
`alpha_over_n=True` here switches to PyTorch's convention.

Backward. a_j influences b_j directly and, through s_i, every b_i whose window contains j:

    db_i/da_j = [i == j] * s_j^(-beta)  +  a_i * (-beta) * s_i^(-beta-1) * 2 * alpha * a_j   (j in win(i))

so, with upstream gradient g_i = dL/db_i, and using a_i * s_i^(-beta) = b_i,

    dL/da_j = g_j * s_j^(-beta)  -  2 * alpha * beta * a_j * sum_{i : j in win(i)} g_i * b_i / s_i

The first term is the "diagonal" one a careless derivation stops at; the second, cross-channel
term is tiny at alpha = 1e-4 (so a wrong formula still passes a loose check: gradcheck.py also
checks a large alpha). The forward pass keeps s (`scale`) and b (`out`) for this.

The plain loops are `layers/reference.py`'s lrn and lrn_grad; the fast route's fused Numba
kernels are in `layers/fast/`.
"""

from typing import NamedTuple

import numpy as np

from ._checks import check_lrn_args, check_lrn_dout


class LRNCache(NamedTuple):
    x: np.ndarray      # (N, C, H, W) input a
    out: np.ndarray    # (N, C, H, W) output b
    scale: np.ndarray  # (N, C, H, W) s = k + alpha * window sum of a^2
    size: int
    alpha: float       # the coefficient of the sum (paper convention), after any /size
    beta: float


def channel_window_sum(a, before, after):
    """out[:, c] = a[:, c - before] + ... + a[:, c + after], channels clipped to [0, C)."""
    C = a.shape[1]
    out = np.empty_like(a)
    for c in range(C):
        out[:, c] = a[:, max(0, c - before):min(C, c + after + 1)].sum(axis=1)
    return out


def lrn_forward(x, *, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
    """Inputs: x (N, C, H, W); size (channels in a window), k, alpha, beta; alpha_over_n=True for
    PyTorch's convention (alpha divided by size).
    Returns: out (N, C, H, W), cache (LRNCache).
    """
    check_lrn_args(x, size, k, alpha, beta)
    alpha = alpha / size if alpha_over_n else alpha
    # s_c = k + alpha * sum_{j in win(c)} a_j^2,   win(c) = c - size//2 ... c + (size-1)//2
    scale = k + alpha * channel_window_sum(x * x, size // 2, (size - 1) // 2)
    out = x * scale ** -beta                                  # b_c = a_c * s_c^(-beta)
    return out, LRNCache(x, out, scale, int(size), float(alpha), float(beta))


def lrn_backward(dout, cache):
    """Inputs: dout (N, C, H, W), cache from lrn_forward. Returns: dx (N, C, H, W)."""
    x, out, scale, size, alpha, beta = cache
    check_lrn_dout(dout, x)
    # dL/da_j = g_j * s_j^(-beta)  -  2 * alpha * beta * a_j * sum_{i : j in win(i)} g_i * b_i / s_i
    diagonal = dout * scale ** -beta
    # j is in win(i) for i = j - (size-1)//2 ... j + size//2: the window turned around
    cross = channel_window_sum(dout * out / scale, (size - 1) // 2, size // 2)
    return diagonal - 2 * alpha * beta * x * cross
