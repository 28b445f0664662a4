"""Fast local response normalisation: `layers.lrn_forward` / `lrn_backward` with the same
signatures and answers, as fused Numba kernels (`kernels.lrn`, `kernels.lrn_grad`): one pass
over the activations each way, vectorised rows, threads, recycled buffers, and s^(-3/4) by
square roots for the paper's beta. The readable version and the derivation: `layers/lrn.py`.

The cache keeps x and b but not s: the forward pass is bound by memory, so not writing s saves
a third of its traffic, and the backward recomputes s (and b / s) image by image from x while
it is in cache, for about what reading s back cost. `cache.scale` still gives s, computed when
asked.
"""

from typing import NamedTuple

import numpy as np

from . import kernels
from .._checks import check_lrn_args, check_lrn_dout


class LRNCache(NamedTuple):
    x: np.ndarray      # (N, C, H, W) input a
    out: np.ndarray    # (N, C, H, W) output b
    size: int
    k: float
    alpha: float       # the coefficient of the sum (paper convention), after any /size
    beta: float

    @property
    def scale(self):
        """s = k + alpha * window sum of a^2, as layers.LRNCache keeps it."""
        return kernels.lrn(self.x, self.size, self.k, self.alpha, self.beta, keep_scale=True)[1]


def lrn_forward(x, *, size=5, k=2.0, alpha=1e-4, beta=0.75, alpha_over_n=False):
    """= layers.lrn_forward. Returns: out (N, C, H, W), cache (LRNCache)."""
    check_lrn_args(x, size, k, alpha, beta)
    coeff = alpha / size if alpha_over_n else alpha
    x = np.ascontiguousarray(x)
    out, _ = kernels.lrn(x, int(size), float(k), float(coeff), float(beta))
    return out, LRNCache(x, out, int(size), float(k), float(coeff), float(beta))


def lrn_backward(dout, cache):
    """= layers.lrn_backward. Returns: dx (N, C, H, W)."""
    check_lrn_dout(dout, cache.x)
    return kernels.lrn_grad(np.ascontiguousarray(dout), cache.x, cache.size, cache.k,
                            cache.alpha, cache.beta)
