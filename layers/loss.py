"""Softmax cross-entropy, averaged over the batch.

Dimensions: N batch, M classes. For logits z (N, M) and integer labels y (N,):

    p_nm = exp(z_nm) / sum_k exp(z_nk)              (softmax)
    L    = -(1/N) * sum_n log p_{n, y_n}            (mean cross-entropy)

Numerical stability: softmax is unchanged by subtracting a constant from a row, so each row's
maximum is subtracted first (no overflow in exp), and log p is computed as
z - max - log(sum exp(z - max)) rather than log(p) (no log of an underflowed 0).

Gradient: dL/dz_nm = (p_nm - [m == y_n]) / N. (d/dz of -log p_y = -(1[m==y] - p_m).)

Label smoothing (Szegedy et al., 2016) with strength e replaces the one-hot target by

    q_nm = (1 - e) * [m == y_n] + e / M             (still sums to 1 over m)
    L    = -(1/N) * sum_n sum_m q_nm log p_nm

so the model is asked for 1 - e + e/M on the true class rather than certainty. The gradient
keeps its form: dL/dz_nm = (p_nm - q_nm) / N. With e = 0 this is the plain loss above. (It is
PyTorch's cross_entropy(..., label_smoothing=e).)
"""

import numpy as np

from ._checks import check_float_array


def softmax(logits):
    """Inputs: logits (N, M). Returns: p (N, M) float64, each row's class probabilities
    (the row's maximum subtracted first, as above: no overflow in exp)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def softmax_cross_entropy(logits, y, smoothing=0.0):
    """Inputs: logits (N, M) float, y (N,) integer labels in [0, M), smoothing e in [0, 1].
    Returns: loss (a Python float, mean over the batch), dlogits (N, M).
    """
    check_float_array(logits, "logits", 2, "(N, M)")
    y = np.asarray(y)
    N, M = logits.shape
    if y.shape != (N,) or not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"labels must be {N} integers, got {y.dtype} array of shape {y.shape}")
    if N == 0:
        raise ValueError("logits hold no examples (N = 0)")
    if y.min() < 0 or y.max() >= M:
        raise ValueError(f"labels must be in [0, {M}), got values from {y.min()} to {y.max()}")
    if not 0.0 <= smoothing <= 1.0:
        raise ValueError(f"label smoothing must be in [0, 1], got {smoothing}")
    shifted = logits - logits.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    log_p = shifted - log_sum                                   # (N, M) log-softmax
    q = np.full_like(log_p, smoothing / M)                      # (N, M) targets
    q[np.arange(N), y] += 1 - smoothing                         # (one-hot when e = 0)
    loss = -(q * log_p).sum(axis=1).mean()
    dlogits = (np.exp(log_p) - q) / N                           # (p - q) / N
    return float(loss), dlogits
