"""Train AlexNet on CIFAR-10 on the CPU: `python train.py --epochs 10` (see --help)."""

from tinyalex.cli import train_main

if __name__ == "__main__":
    raise SystemExit(train_main())
