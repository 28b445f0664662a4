"""Process start-up: the Numba kernels of a training step, loaded on a background thread while
the process does other work. The entry points that train (`train.py`, `bench`) start it."""

import threading

import numpy as np

from .model import build_model
from .optim import SGD


def warm_up(dtype=np.float32, route="fast"):
    """Start loading every Numba kernel of a training step on a background thread; returns the
    thread (a daemon: nothing waits for it).

    The first kernel a process runs costs Numba about half a second of its own set-up (it
    imports and registers its compiler's libraries, even to load a compiled kernel from the
    cache), and each further kernel a little more. Started first, this overlaps that work
    with whatever comes next (reading the data, drawing the initial weights: NumPy work that
    releases the interpreter) instead of adding it to the first training step. It runs one
    training step of the `tiny` model, which calls every kernel with the same argument types
    as the full-size models. A step that reaches a kernel still loading waits for it (Numba
    takes a lock), so nothing is loaded or compiled twice. Errors are ignored here: the real
    step meets and reports them.
    """
    route = route if route in ("fast", "readable") else "readable"   # a student's: theirs load on use
    def step():
        try:
            model = build_model("tiny", dtype=dtype, route=route)
            x = np.ones((2,) + model.input_shape, dtype)
            grads = model.loss(x, np.zeros(2, np.int64), rng=np.random.default_rng(0)).grads
            SGD(model.params, route=route).step(model.params, grads, 0.0)
        except Exception:  # noqa: BLE001 (a warm-up only)
            pass
    thread = threading.Thread(target=step, name="tinyalex-warm-up", daemon=True)
    thread.start()
    return thread
