"""Argument checks shared by the layers: a clear ValueError before any kernel sees bad input."""

import numpy as np

FLOAT_DTYPES = (np.float32, np.float64)


def check_float_array(a, name, ndim, layout):
    """`a` must be a float32/float64 ndarray with `ndim` dimensions laid out as `layout`."""
    if not isinstance(a, np.ndarray):
        raise ValueError(f"{name} must be a numpy array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise ValueError(f"{name} must be float32 or float64, got dtype {a.dtype}")
    if a.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D {layout}, got shape {a.shape}")


def check_same_dtype(**arrays):
    """All named arrays share one dtype (no silent float32/float64 mixing)."""
    dtypes = {name: a.dtype for name, a in arrays.items()}
    if len(set(dtypes.values())) > 1:
        listed = ", ".join(f"{name} {dt}" for name, dt in dtypes.items())
        raise ValueError(f"dtypes must match: {listed}")


def check_positive_int(value, name):
    if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def pair(value, name):
    """An int or a pair of ints -> (int, int)."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair of ints, got {value!r}")
        check_positive_int(value[0], name)
        check_positive_int(value[1], name)
        return int(value[0]), int(value[1])
    check_positive_int(value, name)
    return int(value), int(value)


# One check per layer, shared by the readable layers and the fast route (`layers/fast/`), so
# both refuse the same bad input with the same message.

def check_conv_args(x, w, b, stride, pad, groups):
    check_float_array(x, "conv input x", 4, "(N, C, H, W)")
    check_float_array(w, "conv weight w", 4, "(F, C/groups, KH, KW)")
    check_float_array(b, "conv bias b", 1, "(F,)")
    check_same_dtype(x=x, w=w, b=b)
    check_positive_int(stride, "stride")
    check_positive_int(groups, "groups")
    if isinstance(pad, bool) or not isinstance(pad, (int, np.integer)) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    N, C, H, W = x.shape
    F, Cg, KH, KW = w.shape
    if N == 0:
        raise ValueError("conv input x holds no images (N = 0)")
    if C % groups or F % groups:
        raise ValueError(f"input channels ({C}) and filters ({F}) must both be divisible by groups ({groups})")
    if Cg != C // groups:
        raise ValueError(f"weight expects {Cg} channels per group but the input has {C} channels "
                         f"in {groups} group(s), i.e. {C // groups} per group")
    if b.shape[0] != F:
        raise ValueError(f"bias has {b.shape[0]} entries for {F} filters")
    if KH > H + 2 * pad or KW > W + 2 * pad:
        raise ValueError(f"kernel {KH}x{KW} is larger than the padded input {H + 2 * pad}x{W + 2 * pad}")


def check_conv_dout(dout, x, out_shape):
    check_float_array(dout, "conv upstream gradient dout", 4, "(N, F, OH, OW)")
    check_same_dtype(dout=dout, x=x)
    if dout.shape != tuple(out_shape):
        raise ValueError(f"dout has shape {dout.shape}, the convolution's output is {tuple(out_shape)}")


def check_pool_args(x, size, stride):
    """Returns (KH, KW)."""
    check_float_array(x, "max-pool input x", 4, "(N, C, H, W)")
    KH, KW = pair(size, "pool size")
    check_positive_int(stride, "pool stride")
    H, W = x.shape[2:]
    if KH > H or KW > W:
        raise ValueError(f"pool window {KH}x{KW} is larger than the input {H}x{W}")
    return KH, KW


def check_pool_dout(dout, dtype, out_shape):
    check_float_array(dout, "max-pool upstream gradient dout", 4, "(N, C, OH, OW)")
    if dout.dtype != dtype:
        raise ValueError(f"dtypes must match: dout {dout.dtype}, x {dtype}")
    if dout.shape != tuple(out_shape):
        raise ValueError(f"dout has shape {dout.shape}, the pool's output is {tuple(out_shape)}")


def check_lrn_args(x, size, k, alpha, beta):
    check_float_array(x, "LRN input x", 4, "(N, C, H, W)")
    check_positive_int(size, "LRN size")
    if not (k > 0 and alpha >= 0 and beta >= 0):   # also refuses NaN
        raise ValueError(f"LRN needs k > 0, alpha >= 0 and beta >= 0, got k={k}, alpha={alpha}, beta={beta}")


def check_lrn_dout(dout, x):
    check_float_array(dout, "LRN upstream gradient dout", 4, "(N, C, H, W)")
    check_same_dtype(dout=dout, x=x)
    if dout.shape != x.shape:
        raise ValueError(f"dout has shape {dout.shape}, the LRN's output is {x.shape}")


def check_dense_args(x, w, b):
    check_float_array(x, "dense input x", 2, "(N, D)")
    check_float_array(w, "dense weight w", 2, "(M, D)")
    check_float_array(b, "dense bias b", 1, "(M,)")
    check_same_dtype(x=x, w=w, b=b)
    if w.shape[1] != x.shape[1]:
        raise ValueError(f"dense weight expects {w.shape[1]} inputs, x has {x.shape[1]}")
    if b.shape[0] != w.shape[0]:
        raise ValueError(f"dense bias has {b.shape[0]} entries for {w.shape[0]} outputs")


def check_dense_dout(dout, x, w):
    check_float_array(dout, "dense upstream gradient dout", 2, "(N, M)")
    check_same_dtype(dout=dout, x=x)
    if dout.shape != (x.shape[0], w.shape[0]):
        raise ValueError(f"dout has shape {dout.shape}, the dense output is {(x.shape[0], w.shape[0])}")
