"""The command line: `python train.py ...` and `python -m tinyalex {train,evaluate,predict,filters,bench,torch-train,
neighbours,saliency,export}`.

Heavy imports (NumPy, Numba) wait until the process settings are applied (tinyalex/_runtime.py)
and the thread count is known, because BLAS reads both from the environment when it loads. Every user error (TinyAlexError) becomes
one line on stderr and exit status 2; Ctrl-C during training saves and exits with 130.
"""

import argparse
import os
import sys
import time

from . import _runtime
from .argtypes import number_in, positive_int

COMMANDS = ("train", "evaluate", "predict", "filters", "bench", "torch-train", "neighbours", "saliency",
            "export")
SCHEDULES = ("onecycle", "step", "plateau")
# options that may differ when resuming: they do not change what the run computes
RESUME_FREE = {"resume", "threads", "save_every", "out", "no_progress", "data", "data_dir", "impl"}


def set_threads(threads):
    """Use `threads` threads in BLAS and Numba (before they load, where possible)."""
    if threads is None:
        return
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
        os.environ[var] = str(threads)
    if "numpy" in sys.modules:  # already loaded (python -m tinyalex after another import)
        try:
            from threadpoolctl import threadpool_limits
            threadpool_limits(threads)
        except ImportError:
            pass


def add_train_arguments(parser):
    from .data import add_data_arguments  # noqa: E402  (after set_threads)
    from .model import IMPLS, INITS, MODELS
    g = parser.add_argument_group("model and optimisation")
    g.add_argument("--model", choices=MODELS, default="cifar",
                   help="cifar: AlexNet for native 32x32 images (default); paper: the faithful "
                        "224x224 AlexNet, images upscaled; tiny: a few channels, for quick checks")
    g.add_argument("--epochs", type=positive_int, default=10, help="epochs to train (default 10)")
    g.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default 128)")
    g.add_argument("--lr", type=number_in(0, low_open=True), default=None,
                   help="learning rate: the peak for onecycle (default 0.05 cifar, 0.02 paper), "
                        "the start for step and plateau (default 0.01)")
    g.add_argument("--schedule", choices=SCHEDULES, default="onecycle",
                   help="onecycle: linear warm-up over 15%% of the steps from lr/25, then linear "
                        "decay to lr/25e4, every step (default); step: x0.1 after epochs 5 and 8; "
                        "plateau: /10 when validation accuracy stalls for --patience epochs")
    g.add_argument("--patience", type=positive_int, default=2, help="epochs without improvement for plateau (default 2)")
    g.add_argument("--impl", choices=tuple(IMPLS), default="fast",
                   help="fast: the layers of layers/fast/ (default); readable: layers/ itself, the "
                        "definition (same maths, several times slower)")
    g.add_argument("--momentum", type=number_in(0, 1), default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=number_in(0), default=5e-4, help="weight decay (default 5e-4)")
    g.add_argument("--init", choices=INITS, default="torch",
                   help="torch: PyTorch's default uniform +-1/sqrt(fan_in) (default); he: "
                        "N(0, 2/fan_in); paper: N(0, 0.01) with biases 1, the paper's, which "
                        "stays at chance on CIFAR-10")
    add_data_arguments(parser)
    r = parser.add_argument_group("run")
    r.add_argument("--out", metavar="DIR", default=None,
                   help="run directory (default runs/<model>-<date>-<time>)")
    r.add_argument("--resume", metavar="PATH", default=None,
                   help="continue a run from its directory or a checkpoint file, exactly where it stopped")
    r.add_argument("--seed", type=int, default=0, help="seed of every random draw (default 0)")
    r.add_argument("--threads", type=positive_int, default=None, help="CPU threads (default: all cores)")
    r.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="train on N training images only, a seeded random sample (quick runs)")
    r.add_argument("--limit-val", type=positive_int, default=None, metavar="N",
                   help="validate on N validation images only, a seeded random sample")
    r.add_argument("--save-every", type=number_in(0), default=5.0, metavar="MIN",
                   help="also save last.npz every MIN minutes mid-epoch (default 5; 0: epoch ends only)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")


def _explicit(parser, argv):
    """Destinations of the options written on the command line."""
    found = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(arg == opt or arg.startswith(opt + "=") for arg in argv):
                found.add(action.dest)
    return found


def _resume_config(args, explicit):
    from .checkpoint import load_checkpoint
    path = args.resume
    ckpt_path = os.path.join(path, "last.npz") if os.path.isdir(path) else path
    meta = load_checkpoint(ckpt_path).meta
    config = dict(meta["config"])
    for dest in sorted(explicit - RESUME_FREE):
        if getattr(args, dest) != config.get(dest):
            flag = "--" + dest.replace("_", "-")
            raise_error(f"--resume: {flag} {getattr(args, dest)} differs from the run's "
                        f"{config.get(dest)}; drop {flag} to continue that run, or start a new one")
    for dest in RESUME_FREE & explicit - {"resume"}:
        config[dest] = getattr(args, dest)
    out = os.path.dirname(os.path.abspath(ckpt_path)) if "out" not in explicit else args.out
    return config, out, ckpt_path


def raise_error(message):
    from .errors import TinyAlexError
    raise TinyAlexError(message)


def train_command(args, parser, argv):
    from .trainer import Run, StopOnSigint, write_config
    explicit = _explicit(parser, argv)
    if args.resume:
        config, out, ckpt_path = _resume_config(args, explicit)
    else:
        config = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "command")}
        out = args.out or os.path.join("runs", f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
        if os.path.exists(os.path.join(out, "last.npz")):
            raise_error(f"{out} already holds a run: continue it with --resume {out}, or choose another --out")
        ckpt_path = None
    config["out"] = out
    if config.get("threads"):
        from layers.fast import kernels
        kernels.set_num_threads(config["threads"])
    os.makedirs(out, exist_ok=True)
    log = print
    run = Run(config, out, resume_from=ckpt_path, log=log)
    log(f"data: {run.data.summary()}")
    if config["limit_train"] or config["limit_val"]:
        log(f"limited to {len(run.train_loader.labels)} train / "
            f"{len(run.val_loader.labels) if run.val_loader else 0} val images")
    log(f"model: {config['model']} ({sum(p.size for p in run.model.params.values()):,} parameters), "
        f"{config['epochs']} epochs of {len(run.train_loader)} steps, batch {config['batch_size']}, "
        f"{run.schedule.name} schedule; run directory {out}")
    if ckpt_path:
        log(f"resuming {ckpt_path} at epoch {run.progress.epoch + 1}, batch {run.progress.batch}")
    else:
        write_config(out, config)
    with StopOnSigint() as sigint:
        status = run.train(stop_requested=lambda: sigint.requested, show_progress=not config["no_progress"])
    if status == "interrupted":
        print(f"interrupted: saved {os.path.join(out, 'last.npz')} (epoch {run.progress.epoch + 1}, "
              f"batch {run.progress.batch}); continue with: python train.py --resume {out}", file=sys.stderr)
        return 130
    result = run.test()
    best = run.progress.best_val_acc
    if best >= 0:
        log(f"best validation accuracy {100 * best:.2f}% ({os.path.join(out, 'best.npz')})")
    if result:
        log(f"test: top-1 {100 * result['test_top1']:.2f}%  top-5 {100 * result['test_top5']:.2f}%  "
            f"loss {result['test_loss']:.4f} (final parameters)")
        import json
        from .checkpoint import atomic_write
        text = json.dumps(result, indent=2) + "\n"
        atomic_write(os.path.join(out, "test.json"), lambda f: f.write(text.encode()))
    return 0


def _pre_threads(argv):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.threads and known.threads > 0:
        set_threads(known.threads)


def train_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Train AlexNet on CIFAR-10 (or an image folder) on the CPU.",
        epilog="Example: python train.py --epochs 10   |   resume: python train.py --resume runs/DIR")
    add_train_arguments(parser)
    return parser


def _run(func):
    from .errors import TinyAlexError
    try:
        return func()
    except TinyAlexError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def train_main(argv=None):
    """`python train.py ...`"""
    argv = sys.argv[1:] if argv is None else argv
    _runtime.apply()
    _pre_threads(argv)
    parser = train_parser(prog="train.py")
    args = parser.parse_args(argv)
    return _run(lambda: train_command(args, parser, argv))


def main(argv=None):
    """`python -m tinyalex COMMAND ...`"""
    argv = sys.argv[1:] if argv is None else argv
    _runtime.apply()
    _pre_threads(argv)
    parser = argparse.ArgumentParser(prog="python -m tinyalex", allow_abbrev=False,
                                     description="tinyalex: AlexNet from scratch in NumPy and Numba.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the named command's parser is built (all of them for --help or a mistyped command):
    # building one imports its modules, and `bench` need not wait for the data pipeline's.
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command in (None, "train"):
        train = sub.add_parser("train", help="train a model (the same as python train.py)", allow_abbrev=False)
        add_train_arguments(train)
        train.set_defaults(func=lambda args: train_command(args, train, argv[1:]))
    if command in (None, "evaluate", "predict", "filters"):
        from . import evaluate
        evaluate.register(sub)
    if command in (None, "bench"):
        from . import bench
        bench.register(sub)
    if command in (None, "torch-train"):
        from . import torch_train
        torch_train.register(sub)
    if command in (None, "neighbours"):
        from . import neighbours
        neighbours.register(sub)
    if command in (None, "saliency"):
        from . import saliency
        saliency.register(sub)
    if command in (None, "export"):
        from . import export
        export.register(sub)
    args = parser.parse_args(argv)
    return _run(lambda: args.func(args))
