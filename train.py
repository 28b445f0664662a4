"""Train AlexNet on CIFAR-10 on the CPU: `python train.py --epochs 10` (see --help)."""

if __name__ == "__main__":
    from tinyalex.startup import run   # Ctrl-C and SIGTERM wait while the libraries load
    raise SystemExit(run("tinyalex.cli", "train_main"))
