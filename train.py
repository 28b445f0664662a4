"""Train AlexNet on CIFAR-10 on the CPU: `python train.py --epochs 10` (see --help)."""

import sys

if __name__ == "__main__":
    try:
        from tinyalex.cli import train_main
        status = train_main()
    except KeyboardInterrupt:   # Ctrl-C before training, while NumPy and Numba load
        print("interrupted", file=sys.stderr)
        status = 130
    raise SystemExit(status)
