"""tinyalex: AlexNet from scratch in NumPy and Numba, trained on CIFAR-10 on a CPU."""

from . import _threads  # noqa: F401  (before NumPy loads: see _threads.py)

__version__ = "0.1.0"
