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

Kernels: `layers.kernels.lrn` / `lrn_grad` (fused, one pass each); plain references in
`layers.reference`.
"""

from typing import NamedTuple

import numpy as np

from . import kernels
from ._checks import check_float_array, check_positive_int, check_same_dtype


class LRNCache(NamedTuple):
    x: np.ndarray      # (N, C, H, W) input a
    out: np.ndarray    # (N, C, H, W) output b
    scale: np.ndarray  # (N, C, H, W) s = k + alpha * window sum of a^2
    size: int
    alpha: float       # the coefficient of the sum (paper convention), after any /size
    beta: float


def lrn_forward(x, *, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
    """Inputs: x (N, C, H, W); size (channels in a window), k, alpha, beta; alpha_over_n=True for
    PyTorch's convention (alpha divided by size).
    Returns: out (N, C, H, W), cache (LRNCache).
    """
    check_float_array(x, "LRN input x", 4, "(N, C, H, W)")
    check_positive_int(size, "LRN size")
    if not (k > 0 and alpha >= 0 and beta >= 0):   # also refuses NaN
        raise ValueError(f"LRN needs k > 0, alpha >= 0 and beta >= 0, got k={k}, alpha={alpha}, beta={beta}")
    coeff = alpha / size if alpha_over_n else alpha
    x = np.ascontiguousarray(x)
    out, scale = kernels.lrn(x, int(size), float(k), float(coeff), float(beta))
    return out, LRNCache(x, out, scale, int(size), float(coeff), float(beta))


def lrn_backward(dout, cache):
    """Inputs: dout (N, C, H, W), cache from lrn_forward. Returns: dx (N, C, H, W)."""
    check_float_array(dout, "LRN upstream gradient dout", 4, "(N, C, H, W)")
    check_same_dtype(dout=dout, x=cache.x)
    if dout.shape != cache.x.shape:
        raise ValueError(f"dout has shape {dout.shape}, the LRN's output is {cache.x.shape}")
    return kernels.lrn_grad(np.ascontiguousarray(dout), cache.x, cache.out, cache.scale,
                            cache.size, cache.alpha, cache.beta)
