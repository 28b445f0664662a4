"""Keep NumPy's BLAS threads and Numba's threads from fighting over the cores.

tinyalex alternates BLAS matrix products with Numba parallel kernels many times per step.
After a product, OpenBLAS's worker threads by default spin (busy-wait) for a long while
before they sleep, so a Numba kernel started right after finds the cores taken: on two
cores this made a short kernel take 9 ms instead of 0.1 ms, and a training step a third
slower. A short spin (OPENBLAS_THREAD_TIMEOUT=4, i.e. 2^4 cycles) removes the fight.

OpenBLAS reads the variable when it loads, so this module must run before NumPy is first
imported: `tinyalex` and `layers` import it first thing. A value already set in the
environment is kept.
"""

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")
