"""tinyalex: AlexNet from scratch in NumPy and Numba, trained on CIFAR-10 on a CPU.

Importing it changes nothing in the process; the entry points apply the speed settings
(tinyalex/_runtime.py).
"""

__version__ = "0.1.0"
