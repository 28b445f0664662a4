"""The optimizer's updates on the fast route: `tinyalex/optim.py`'s sgd_update and
average_update (plain NumPy, the definitions) as one threaded Numba pass each, instead of
several NumPy passes with their temporaries. The same float operations in the same order, so
the same bits; the tests hold each pair equal."""

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


@threaded_kernel(lambda decay, rest, w, a: a.shape[0])
def _average(lo, hi, decay, rest, w, a):
    for i in range(lo, hi):
        a[i] = decay * a[i] + rest * w[i]


def average_update(a, w, decay):
    """a (C-contiguous, updated in place) <- decay * a + (1 - decay) * w. As
    tinyalex.optim.average_update."""
    t = w.dtype.type
    _average(t(decay), t(1 - decay), np.ascontiguousarray(w).reshape(-1), a.reshape(-1))
