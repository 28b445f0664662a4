"""Process settings that make a NumPy training loop fast. The entry points apply them
(`python train.py`, `python -m tinyalex ...`, `python gradcheck.py`) by calling `apply()`
before NumPy is first imported; importing tinyalex or layers changes nothing.

Threads. tinyalex alternates BLAS matrix products with multi-threaded Numba kernels many times
per step. After a product, OpenBLAS's worker threads by default spin (busy-wait) for a long
while before they sleep, so a Numba kernel started right after finds the cores taken. A short
spin (OPENBLAS_THREAD_TIMEOUT=4, i.e. 2^4 cycles) removes the fight. OpenBLAS reads the
variable when it loads.

Huge pages. On Linux NumPy asks the kernel to back every array of 4 MB or more with 2 MB
"transparent huge pages". Here that made the first training step of every new process slower
(the first touch of a huge page costs more) and no later step faster, so NUMPY_MADVISE_HUGEPAGE
is set to 0 (NumPy's own switch, read when NumPy is imported).

Memory. A training step allocates the same large arrays again and again. glibc serves every
block over 32 MB with a fresh mmap and returns it to the system when freed, so each step would
pay the page faults of touching new memory. `keep_freed_memory` tells malloc to serve large
blocks from its heap (M_MMAP_MAX = 0) and never to give freed memory back (M_TRIM_THRESHOLD =
the largest int), so the next step reuses it. Set TINYALEX_SYSTEM_MALLOC=1 to keep glibc's
defaults; elsewhere than glibc it does nothing. The measurements behind each setting are in
docs/performance.md.

A value already set in the environment is kept.

Threads, counted and set: `available_cores()` (the cores this process may run on: the default
thread count everywhere) and `set_threads(n)` (BLAS's and the fast route's, set before NumPy
loads where possible). This module imports nothing but the standard library, so that the
entry points can call it first.
"""

import ctypes
import os
import platform
import sys

SETTINGS = {"OPENBLAS_THREAD_TIMEOUT": "4", "NUMPY_MADVISE_HUGEPAGE": "0"}
M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4   # mallopt parameters, from glibc's malloc.h
INT_MAX = 2**31 - 1                      # mallopt takes a C int: the largest threshold there is


def keep_freed_memory():
    """Serve large blocks from malloc's heap and never hand freed memory back (glibc only).
    Returns whether both settings took."""
    if os.environ.get("TINYALEX_SYSTEM_MALLOC") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(M_MMAP_MAX, 0)) and bool(mallopt(M_TRIM_THRESHOLD, INT_MAX))


def apply():
    """Apply the settings to this process (call before NumPy is imported). Returns whether the
    malloc settings took."""
    for name, value in SETTINGS.items():
        os.environ.setdefault(name, value)
    return keep_freed_memory()


def available_cores():
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:        # not Linux
        return os.cpu_count() or 1


def set_threads(threads):
    """Use `threads` threads in BLAS and the fast route (before they load, where possible)."""
    if threads is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "numpy" in sys.modules:  # already loaded (python -m tinyalex after another import)
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(threads)
        except ImportError:
            pass
    if "layers.fast.threads" in sys.modules:
        sys.modules["layers.fast.threads"].set_num_threads(threads)
