"""The process settings (tinyalex/_runtime.py): importing a library module changes nothing; the
entry points apply them; the malloc setting does what it says. And the warm-up's kernels."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("OPENBLAS_THREAD_TIMEOUT", "NUMPY_MADVISE_HUGEPAGE")

# What a fresh process sees after running `first` (Python code), then importing NumPy.
PROBE = """
import json, os, sys
before = dict(os.environ)
exec(sys.argv[1])
import numpy
from numpy._core import multiarray
print(json.dumps({"env": {k: os.environ.get(k) for k in %r},
                  "unchanged": dict(os.environ) == before,
                  "numpy_huge_pages": bool(multiarray._get_madvise_hugepage())}))
""" % (SETTINGS,)


def probe(first, **env):
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    out = subprocess.run([sys.executable, "-c", PROBE, first], env={**clean, **env}, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.splitlines()[-1])


@pytest.mark.parametrize("first", ["import layers", "import layers.fast", "import tinyalex",
                                   "import tinyalex.model, tinyalex.trainer, tinyalex.bench"])
def test_importing_changes_nothing(first):
    seen = probe(first)
    assert seen["unchanged"] and seen["env"] == {k: None for k in SETTINGS}
    assert seen["numpy_huge_pages"] is True               # NumPy's own default, untouched


@pytest.mark.parametrize("entry", [
    "from tinyalex import _runtime; _runtime.apply()",
    "from tinyalex.cli import main\ntry: main(['bench', '--help'])\nexcept SystemExit: pass",
    "from tinyalex.cli import train_main\ntry: train_main(['--help'])\nexcept SystemExit: pass",
])
def test_the_entry_points_apply_the_settings(entry):
    seen = probe(entry)
    assert seen["env"] == {"OPENBLAS_THREAD_TIMEOUT": "4", "NUMPY_MADVISE_HUGEPAGE": "0"}
    assert seen["numpy_huge_pages"] is False               # NumPy read the switch when it loaded


def test_a_value_already_in_the_environment_is_kept():
    seen = probe("from tinyalex import _runtime; _runtime.apply()",
                 NUMPY_MADVISE_HUGEPAGE="1", OPENBLAS_THREAD_TIMEOUT="7")
    assert seen["env"] == {"OPENBLAS_THREAD_TIMEOUT": "7", "NUMPY_MADVISE_HUGEPAGE": "1"}
    assert seen["numpy_huge_pages"] is True


# After the settings (or without them), malloc 64 MB, touch it, free it: how far the heap's end
# (sbrk(0)) moved while the block lived, and where it stays after the free.
MALLOC_PROBE = """
import ctypes, json, sys
from tinyalex import _runtime
took = _runtime.apply() if sys.argv[1] == "apply" else None
libc = ctypes.CDLL("libc.so.6")
libc.sbrk.restype, libc.sbrk.argtypes = ctypes.c_void_p, (ctypes.c_ssize_t,)
libc.malloc.restype, libc.malloc.argtypes = ctypes.c_void_p, (ctypes.c_size_t,)
libc.free.argtypes = (ctypes.c_void_p,)
start = libc.sbrk(0)
block = libc.malloc(64 << 20)
ctypes.memset(block, 1, 64 << 20)
grown = libc.sbrk(0) - start
libc.free(block)
print(json.dumps({"took": took, "grown": grown, "kept": libc.sbrk(0) - start}))
"""


def malloc_probe(mode, **env):
    out = subprocess.run([sys.executable, "-c", MALLOC_PROBE, mode], cwd=ROOT, capture_output=True,
                         text=True, check=True, env={**os.environ, **env}).stdout
    return json.loads(out)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_malloc_keeps_freed_memory_for_the_next_step():
    kept = malloc_probe("apply")
    assert kept["took"] is True
    assert kept["grown"] > 32 << 20                        # served from the heap, not an mmap
    assert kept["kept"] == kept["grown"]                   # and not handed back after the free
    # the check can fail: glibc's defaults serve such a block by mmap and return it at once
    default = malloc_probe("none")
    assert default["grown"] < 32 << 20 and default["kept"] < 32 << 20
    # TINYALEX_SYSTEM_MALLOC=1 keeps glibc's defaults
    off = malloc_probe("apply", TINYALEX_SYSTEM_MALLOC="1")
    assert off["took"] is False and off["kept"] < 32 << 20


# In a fresh process: which Numba kernels (and argument types) are loaded after warm_up.warm_up,
# and after that, which ones a real training step of each full-size model loads on top.
WARM_UP_PROBE = """
import gc, json, sys
import numpy as np
from numba.core.dispatcher import Dispatcher
from tinyalex.model import build_model
from tinyalex.warm_up import warm_up
from tinyalex.optim import SGD

def loaded():
    return {d.py_func.__qualname__: sorted(map(str, d.signatures))
            for d in gc.get_objects() if isinstance(d, Dispatcher) and d.signatures}

before = loaded()
if sys.argv[1] == "warm":
    warm_up().join()
after_warm_up = loaded()
for name in ("cifar", "paper"):
    model = build_model(name)
    x = np.random.default_rng(0).standard_normal((2,) + model.input_shape, dtype=np.float32)
    grads = model.loss(x, np.array([1, 2]), rng=np.random.default_rng(0)).grads
    SGD(model.params).step(model.params, grads, 0.01)
print(json.dumps({"before": before, "after_warm_up": after_warm_up, "after_steps": loaded()}))
"""


def kernels_loaded(mode):
    out = subprocess.run([sys.executable, "-c", WARM_UP_PROBE, mode], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    return json.loads(out)


def test_warm_up_loads_every_kernel_a_training_step_uses():
    seen = kernels_loaded("warm")
    assert seen["before"] == {}                                   # nothing loaded at import
    assert {"_im2col", "_input_transform", "_input_grad", "_lrn_grad", "_maxpool_grad", "nchw_to_mat",
            "_update"} <= set(seen["after_warm_up"])
    assert seen["after_steps"] == seen["after_warm_up"]           # the real steps needed nothing more


def test_without_the_warm_up_the_first_step_loads_them():
    # the check above can fail: the same steps, not warmed up, load the kernels themselves
    seen = kernels_loaded("cold")
    assert seen["after_warm_up"] == {}
    assert set(seen["after_steps"]) >= {"_im2col", "_input_transform", "nchw_to_mat", "_update"}
