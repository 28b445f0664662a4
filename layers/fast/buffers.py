"""Recycled arrays for the layers' large outputs (a speed measure; the maths does not see it).

A training step allocates the same large arrays every time: each layer's output, its
gradient, im2col buffers (up to 150 MB each for the paper model). Writing into freshly
allocated memory is slow: the operating system hands out pages only when they are first
written, and on a virtual machine even memory that malloc keeps and reuses can cost that
again (docs/performance.md has the figures).

`empty(shape, dtype)` works like np.empty. Arrays of at least MIN_BYTES are views of blocks
from a pool: the smallest block that nothing references any more (no variable, cache or view
holds it: Python's reference count says so) and that is large enough but not more than twice
too large. A new block is allocated only when none fits. So a block is never handed out twice
while in use, and batches of another size (the last, partial batch of an epoch) reuse the
blocks of full batches instead of adding their own. Smaller arrays are plain np.empty.
"""

import sys
import threading

import numpy as np

MIN_BYTES = 1 << 20
_blocks = []                  # flat uint8 arrays owned by the pool
_lock = threading.Lock()


def _free_refcount():
    """sys.getrefcount of a block nothing else holds, seen from inside the loop in `empty`
    (the pool's list, the loop variable, getrefcount's argument: 3 in CPython 3.11, but
    measured rather than assumed)."""
    probe = [np.empty(0, np.uint8)]
    for block in probe:
        return sys.getrefcount(block)


_FREE = _free_refcount()


def empty(shape, dtype=np.float64):
    """An uninitialised array, as np.empty(shape, dtype); large ones are recycled."""
    shape = tuple(int(n) for n in shape) if np.iterable(shape) else (int(shape),)
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize * int(np.prod(shape))
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    with _lock:
        best = None
        for block in _blocks:
            if (nbytes <= block.size <= 2 * nbytes and (best is None or block.size < best.size)
                    and sys.getrefcount(block) == _FREE):
                best = block
        if best is None:
            best = np.empty(nbytes, np.uint8)
            _blocks.append(best)
        return best[:nbytes].view(dtype).reshape(shape)   # a view: it keeps the block in use


def empty_like(x):
    """empty(x.shape, x.dtype)."""
    return empty(x.shape, x.dtype)


def pooled_bytes():
    """The bytes the pool holds, in use or not."""
    with _lock:
        return sum(block.size for block in _blocks)


def clear():
    """Forget every block (those in use stay alive with their arrays)."""
    with _lock:
        _blocks.clear()
