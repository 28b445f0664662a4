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
