"""Process settings that make a NumPy training loop fast: imported first by `tinyalex`.

Threads. tinyalex alternates BLAS matrix products with multi-threaded Numba kernels many times
per step. After a product, OpenBLAS's worker threads by default spin (busy-wait) for a long
while before they sleep, so a Numba kernel started right after finds the cores taken: on two
cores this made a short kernel take 9 ms instead of 0.1 ms, and a training step a third
slower. A short spin (OPENBLAS_THREAD_TIMEOUT=4, i.e. 2^4 cycles) removes the fight.
OpenBLAS reads the variable when it loads, so this must run before NumPy is first imported.

Memory. A training step allocates the same large arrays (activations, im2col buffers, up to
150 MB each for the paper model) again and again. glibc serves every block over 32 MB with
a fresh mmap and returns it to the system when freed, so each step pays the page faults of
touching gigabytes of new memory, which on a virtual machine cost as much as the arithmetic:
the paper model trained at 13 img/s instead of 19.5. Telling malloc to keep freed memory in
its heap for the next step (no mmap, no trimming) removes that; the peak memory is the same.
Set TINYALEX_SYSTEM_MALLOC=1 to keep glibc's defaults. Elsewhere than glibc this does nothing.
Even so, memory malloc hands back out can be slow to write again on a virtual machine, so the
layers also recycle their large output arrays themselves (`layers/buffers.py`).

Huge pages. On Linux NumPy asks the kernel to back every array of 4 MB or more with 2 MB
"transparent huge pages" (when /sys/kernel/mm/transparent_hugepage/enabled says madvise, as
on many distributions). Here that made the first training step of every new process much
slower and no later step faster: on the project's 2-core VM the first touch of huge pages
cost 1-2.5 s of kernel time per GB, against about 0.6 s with ordinary 4 KB pages. The first
`cifar` step took 2.8-3.9 s with huge pages and 2.3-2.7 s without; the first `paper` step
10.0-11.5 s against 7.6-8.1 s. Steady steps, alternating processes with and without, 20
`cifar` steps and 6 `paper` steps each: `cifar` 1.84-2.15 s with, 1.86-1.97 s without;
`paper` 6.24-6.38 s with, 5.95-6.37 s without. So tinyalex sets NUMPY_MADVISE_HUGEPAGE=0
(NumPy's own switch, read when NumPy is imported); set it to 1 to keep NumPy's default.

A value already set in the environment is kept.
"""

import ctypes
import os
import platform

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4   # mallopt parameters, from glibc's malloc.h


def keep_freed_memory():
    """Serve large blocks from malloc's heap and never hand freed memory back (glibc only)."""
    if os.environ.get("TINYALEX_SYSTEM_MALLOC") or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(M_MMAP_MAX, 0)) and bool(libc.mallopt(M_TRIM_THRESHOLD, 2**62))
    except (OSError, AttributeError):
        return False


MALLOC_TUNED = keep_freed_memory()
