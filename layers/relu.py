"""Rectified linear unit: out = max(x, 0).

Backward: dx = dout where the unit was active (out > 0), 0 elsewhere. At exactly x = 0 the
derivative is taken as 0 (a valid subgradient; PyTorch does the same).
"""

from typing import NamedTuple

import numpy as np

from ._checks import check_float_array


class ReluCache(NamedTuple):
    out: np.ndarray  # the output; out > 0 marks the active units


def relu_forward(x):
    """Inputs: x (any shape). Returns: out (x's shape), cache (ReluCache)."""
    check_float_array(x, "ReLU input x", x.ndim if isinstance(x, np.ndarray) else 1, "array")
    out = np.maximum(x, 0)
    return out, ReluCache(out)


def relu_backward(dout, cache):
    """Inputs: dout, cache. Returns: dx (dout's shape)."""
    check_float_array(dout, "ReLU upstream gradient dout", cache.out.ndim, "array")
    if dout.dtype != cache.out.dtype:
        raise ValueError(f"dtypes must match: dout {dout.dtype}, x {cache.out.dtype}")
    if dout.shape != cache.out.shape:
        raise ValueError(f"dout has shape {dout.shape}, the ReLU's output is {cache.out.shape}")
    return dout * (cache.out > 0)
