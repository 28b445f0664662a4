"""tinyalex: AlexNet from scratch in NumPy and Numba, trained on CIFAR-10 on a CPU."""

__version__ = "0.1.0"
