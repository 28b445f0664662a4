"""The process settings tinyalex makes when it is imported (tinyalex/_runtime.py)."""

import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETTINGS = ("OPENBLAS_THREAD_TIMEOUT", "NUMPY_MADVISE_HUGEPAGE")

# What a fresh process sees after importing `first`, then NumPy.
PROBE = """
import json, os, sys
__import__(sys.argv[1])
import numpy
from numpy._core import multiarray
print(json.dumps({"env": {k: os.environ.get(k) for k in %r},
                  "numpy_huge_pages": bool(multiarray._get_madvise_hugepage())}))
""" % (SETTINGS,)


def probe(first, **env):
    clean = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    out = subprocess.run([sys.executable, "-c", PROBE, first], env={**clean, **env}, cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("first", ["tinyalex", "layers"])
def test_importing_the_package_first_sets_the_process_settings(first):
    seen = probe(first)
    assert seen["env"] == {"OPENBLAS_THREAD_TIMEOUT": "4", "NUMPY_MADVISE_HUGEPAGE": "0"}
    assert seen["numpy_huge_pages"] is False      # NumPy read the switch when it loaded


def test_a_value_already_in_the_environment_is_kept():
    seen = probe("tinyalex", NUMPY_MADVISE_HUGEPAGE="1", OPENBLAS_THREAD_TIMEOUT="7")
    assert seen["env"] == {"OPENBLAS_THREAD_TIMEOUT": "7", "NUMPY_MADVISE_HUGEPAGE": "1"}
    assert seen["numpy_huge_pages"] is True


# In a fresh process: which Numba kernels (and argument types) are loaded after model.warm_up,
# and after that, which ones a real training step of each full-size model loads on top.
WARM_UP_PROBE = """
import gc, json, sys
import numpy as np
from numba.core.dispatcher import Dispatcher
from tinyalex.model import build_model, warm_up
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
    _, grads = model.loss(x, np.array([1, 2]), rng=np.random.default_rng(0))
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
