"""tinyalex: AlexNet from scratch in NumPy and Numba, trained on CIFAR-10 on a CPU."""

from . import _runtime  # noqa: F401  (before NumPy loads: see _runtime.py)

__version__ = "0.1.0"
