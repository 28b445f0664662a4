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
