"""The optimizer's update on the fast route: `tinyalex/optim.py`'s sgd_update (plain NumPy,
the definition) as one threaded Numba pass over w, g and v instead of five NumPy passes with
their temporaries. The same float operations in the same order, so the same bits; the tests
hold the two equal."""

import numpy as np

from .kernels import threaded_kernel


@threaded_kernel(lambda nesterov, momentum, decay_lr, lr, g, w, v: v.shape[0])
def _update(lo, hi, nesterov, momentum, decay_lr, lr, g, w, v):
    if nesterov:
        for i in range(lo, hi):
            step = -decay_lr * w[i] - lr * g[i]
            v[i] = momentum * v[i] + step
            w[i] += momentum * v[i] + step
    else:
        for i in range(lo, hi):
            v[i] = momentum * v[i] - decay_lr * w[i] - lr * g[i]
            w[i] += v[i]


def sgd_update(w, g, v, lr, *, momentum, weight_decay, nesterov):
    """Inputs: w, v (C-contiguous, updated in place) and g, of one shape; lr, momentum,
    weight_decay floats; nesterov bool. As tinyalex.optim.sgd_update."""
    t = w.dtype.type  # the scalars in the parameters' dtype, as NumPy would use them
    _update(bool(nesterov), t(momentum), t(weight_decay * lr), t(lr),
            np.ascontiguousarray(g, dtype=w.dtype).reshape(-1), w.reshape(-1), v.reshape(-1))
