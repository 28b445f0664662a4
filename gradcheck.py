"""Check every layer's backward pass against finite differences, on both routes (layers/ and
layers/fast/): see tinyalex/gradcheck.py.

    python gradcheck.py [--route readable|fast|both] [--layer NAME] [--seed N]
"""

if __name__ == "__main__":
    from tinyalex.startup import run   # Ctrl-C and SIGTERM wait while the libraries load
    raise SystemExit(run("tinyalex.cli", "gradcheck_main"))
