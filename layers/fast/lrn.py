"""Fast local response normalisation: `layers.lrn_forward` / `lrn_backward` with the same
signatures, cache and answers, as fused Numba kernels (`kernels.lrn`, `kernels.lrn_grad`):
one pass over the activations each way, vectorised rows, threads, recycled buffers, and
s^(-3/4) by square roots for the paper's beta. The readable version and the derivation:
`layers/lrn.py`.
"""

import numpy as np

from . import kernels
from .._checks import check_lrn_args, check_lrn_dout
from ..lrn import LRNCache


def lrn_forward(x, *, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
    """= layers.lrn_forward. Returns: out (N, C, H, W), cache (LRNCache)."""
    check_lrn_args(x, size, k, alpha, beta)
    coeff = alpha / size if alpha_over_n else alpha
    x = np.ascontiguousarray(x)
    out, scale = kernels.lrn(x, int(size), float(k), float(coeff), float(beta))
    return out, LRNCache(x, out, scale, int(size), float(coeff), float(beta))


def lrn_backward(dout, cache):
    """= layers.lrn_backward. Returns: dx (N, C, H, W)."""
    check_lrn_dout(dout, cache.x)
    return kernels.lrn_grad(np.ascontiguousarray(dout), cache.x, cache.out, cache.scale,
                            cache.size, cache.alpha, cache.beta)
