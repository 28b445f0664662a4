"""Dropout, "inverted": scaled at training time so that evaluation is the identity.

`drop_prob` is the probability that a unit is *zeroed* (PyTorch's `p`; the paper's 0.5).
The keep-probability is 1 - drop_prob.

Training:   mask_i ~ Bernoulli(1 - drop_prob)          (True = keep)
            out_i  = x_i * mask_i / (1 - drop_prob)      so E[out_i] = x_i
Evaluation: out = x                                      (the paper instead halved the outputs
                                                          at test time; scaling during training
                                                          is equivalent and keeps eval free)
Backward:   dx_i = dout_i * mask_i / (1 - drop_prob)     (the same linear map)

The mask comes from an explicit `np.random.Generator` (or is given), so a run is reproducible
and a gradient check can hold the mask fixed between evaluations.
"""

from typing import NamedTuple, Optional

import numpy as np

from ._checks import check_float_array


class DropoutCache(NamedTuple):
    mask: Optional[np.ndarray]  # boolean keep-mask, None in eval mode (identity)
    scale: float                # 1 / (1 - drop_prob)
    shape: tuple                # x's shape


def dropout_forward(x, *, drop_prob=0.5, train=True, rng=None, mask=None):
    """Inputs: x (any shape); drop_prob in [0, 1); train; rng (np.random.Generator) or an
    explicit boolean keep-mask of x's shape.
    Returns: out (x's shape), cache (DropoutCache).
    """
    check_float_array(x, "dropout input x", x.ndim if isinstance(x, np.ndarray) else 2, "array")
    if not 0.0 <= drop_prob < 1.0:
        raise ValueError(f"drop_prob (the probability of zeroing a unit) must be in [0, 1), got {drop_prob}")
    if not train or drop_prob == 0.0:
        return x, DropoutCache(None, 1.0, x.shape)
    if mask is None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError("training-mode dropout needs an rng (np.random.Generator) or a mask")
        mask = rng.random(x.shape, dtype=np.float32) >= drop_prob
    elif not isinstance(mask, np.ndarray) or mask.shape != x.shape or mask.dtype != np.bool_:
        raise ValueError(f"dropout mask must be a boolean array of shape {x.shape}, "
                         f"got {getattr(mask, 'dtype', type(mask).__name__)} {getattr(mask, 'shape', '')}")
    scale = 1.0 / (1.0 - drop_prob)
    out = x * mask
    out *= x.dtype.type(scale)
    return out, DropoutCache(mask, scale, x.shape)


def dropout_backward(dout, cache):
    """Inputs: dout (the output's shape), cache. Returns: dx."""
    if not isinstance(dout, np.ndarray) or dout.shape != cache.shape:
        raise ValueError(f"dout has shape {getattr(dout, 'shape', None)}, the dropout's output is {cache.shape}")
    if cache.mask is None:
        return dout
    dx = dout * cache.mask
    dx *= dout.dtype.type(cache.scale)
    return dx
