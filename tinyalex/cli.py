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
from .argtypes import add_threads_argument, non_negative_int, number_in, positive_int

COMMANDS = ("train", "evaluate", "predict", "filters", "bench", "torch-train", "neighbours", "saliency",
            "export")
SCHEDULES = ("onecycle", "step", "plateau")
# options that may differ when resuming: they do not change what the run computes
RESUME_FREE = {"resume", "threads", "save_every", "out", "no_progress", "data", "data_dir", "impl", "towers"}


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
    if "layers.fast.threads" in sys.modules:
        sys.modules["layers.fast.threads"].set_num_threads(threads)


def add_recipe_arguments(g):
    """The optimiser's and the loss's options, shared by train.py and torch-train (which runs
    the same recipe in PyTorch): --momentum, --weight-decay, --nesterov, --bias-decay,
    --label-smoothing, --init."""
    from .model import INITS
    g.add_argument("--momentum", type=number_in(0, 1), default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=number_in(0), default=5e-4, help="weight decay (default 5e-4)")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True,
                   help="Nesterov momentum (default; --no-nesterov: the paper's plain momentum)")
    g.add_argument("--bias-decay", action=argparse.BooleanOptionalAction, default=False,
                   help="weight decay on the biases too, as the paper and PyTorch's default do "
                        "(default: weights only)")
    g.add_argument("--label-smoothing", type=number_in(0, 1), default=0.1, metavar="E",
                   help="train towards 1-E+E/classes on the true class and E/classes on the "
                        "others (default 0.1; 0: plain cross-entropy)")
    g.add_argument("--init", choices=INITS, default="he",
                   help="he: Kaiming normal, N(0, 2/fan_in) before a ReLU and N(0, 1/fan_in) "
                        "for fc8 (default); torch: PyTorch's default uniform +-1/sqrt(fan_in), "
                        "which sits at chance for most of the first epoch; paper: N(0, 0.01) "
                        "with biases 1, the paper's, which stays at chance on CIFAR-10")


def add_train_arguments(parser):
    from .data import add_data_arguments  # noqa: E402  (after set_threads)
    from .model import IMPLS, MODELS
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
    add_recipe_arguments(g)
    add_data_arguments(parser)
    r = parser.add_argument_group("run")
    r.add_argument("--out", metavar="DIR", default=None,
                   help="run directory (default runs/<model>-<date>-<time>)")
    r.add_argument("--resume", metavar="PATH", default=None,
                   help="continue a run from its directory or a checkpoint file, exactly where it "
                        "stopped (with --lr: at another learning rate; with a new --out: in a new "
                        "run directory)")
    r.add_argument("--seed", type=non_negative_int, default=0, help="seed of every random draw (default 0)")
    add_threads_argument(r)
    r.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="train on N training images only, a seeded random sample (quick runs)")
    r.add_argument("--limit-val", type=positive_int, default=None, metavar="N",
                   help="validate on N validation images only, a seeded random sample")
    r.add_argument("--save-every", type=number_in(0), default=5.0, metavar="MIN",
                   help="also save last.npz every MIN minutes mid-epoch (default 5; 0: epoch ends only)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    r.add_argument("--towers", type=int, choices=(1, 2), default=1,
                   help="2: the paper's two towers on two MPI processes, mpiexec -n 2 python train.py "
                        "--towers 2; under mpiexec without it, the processes train data-parallel "
                        "(needs pip install 'tinyalex[mpi]'; docs/parallel.md)")


def _explicit(parser, argv):
    """Destinations of the options written on the command line."""
    found = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(arg == opt or arg.startswith(opt + "=") for arg in argv):
                found.add(action.dest)
    return found


# options a resume may change: the rest of the run follows the new value (config.json says so)
RESUME_CHANGES = {"lr"}
# options added after runs were already being saved: a checkpoint without one trained as this
OLD_DEFAULTS = {"nesterov": False, "bias_decay": True, "label_smoothing": 0.0}


def _resume_config(args, parser, explicit):
    """(config, out, checkpoint path, checkpoint meta) of `--resume PATH`, all checked."""
    from .checkpoint import load_model_checkpoint
    path = args.resume
    ckpt_path = os.path.join(path, "last.npz") if os.path.isdir(path) else path
    # the whole checkpoint is checked here, before minutes of data loading; Run reads it again
    meta = load_model_checkpoint(ckpt_path, training=True).meta
    config = _checked_config(meta["config"], parser, ckpt_path)
    if config["model"] != meta["model"]:
        raise_error(f"checkpoint {ckpt_path} holds model {meta['model']!r}, its config "
                    f"says {config['model']!r}", checkpoint=True)
    for dest in sorted(explicit - RESUME_FREE - RESUME_CHANGES):
        if getattr(args, dest) != config.get(dest):
            flag = "--" + dest.replace("_", "-")
            raise_error(f"--resume: {flag} {getattr(args, dest)} differs from the run's "
                        f"{config.get(dest)}; drop {flag} to continue that run, or start a new one")
    for dest in (RESUME_FREE | RESUME_CHANGES) & explicit - {"resume"}:
        config[dest] = getattr(args, dest)
    out = (os.path.dirname(ckpt_path) or ".") if "out" not in explicit else args.out
    return config, out, ckpt_path, meta


def _checked_config(config, parser, path):
    """The options stored in a checkpoint, each checked as its command-line option would be."""
    config = dict(config)
    for action in parser._actions:
        if not action.option_strings or action.dest in ("help", "resume"):
            continue
        flag = action.option_strings[0]
        if action.dest not in config and action.dest in OLD_DEFAULTS:
            config[action.dest] = OLD_DEFAULTS[action.dest]
        elif action.dest not in config:
            if action.dest not in RESUME_FREE:
                raise_error(f"checkpoint {path} cannot be resumed: its config has no {flag}",
                            checkpoint=True)
            config[action.dest] = action.default
        elif not _valid_option(action, config[action.dest]):
            raise_error(f"checkpoint {path} cannot be resumed: its config has {flag} "
                        f"{config[action.dest]!r:.40}, which {flag} does not take", checkpoint=True)
    return config


def _valid_option(action, value):
    if action.nargs == 0:                          # a switch (store_true)
        return isinstance(value, bool)
    if value is None:
        return action.default is None
    if action.choices is not None:
        return value in action.choices
    if action.type is None:
        return isinstance(value, str)
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return action.type(str(value)) == value
    except (argparse.ArgumentTypeError, ValueError):
        return False


def raise_error(message, checkpoint=False):
    from .errors import CheckpointError, TinyAlexError
    raise (CheckpointError if checkpoint else TinyAlexError)(message)


def train_command(args, parser, argv, parallel=None):
    """Train or resume; the run directory's rules: tinyalex/rundir.py and docs/runs.md. SIGTERM
    is handled like Ctrl-C (save, then exit 143). Under MPI (parallel, tinyalex/mpi/) only
    rank 0 keeps the run directory and writes."""
    import uuid
    from .rundir import RunDir
    from .trainer import StopOnSignals
    root = parallel is None or parallel.is_root
    explicit = _explicit(parser, argv)
    ckpt_path = meta = None
    if args.resume:
        config, out, ckpt_path, meta = _resume_config(args, parser, explicit)
    else:
        config = {k: v for k, v in vars(args).items() if k not in ("func", "resume", "command")}
        out = args.out or os.path.join("runs", f"{args.model}-{time.strftime('%Y%m%d-%H%M%S')}")
    config["out"] = out
    if config.get("threads"):
        from layers.fast import threads
        threads.set_num_threads(config["threads"])
    with StopOnSignals() if parallel is None else parallel.stop_on_signals() as signals:
        try:
            if not root:
                return _train(config, out, ckpt_path, signals, parallel)
            with RunDir(out) as run_dir:
                if meta is None:
                    run_dir.check_new()
                    config["run_id"] = uuid.uuid4().hex
                elif not run_dir.run_files():      # a new run directory, from that checkpoint
                    config["run_id"] = uuid.uuid4().hex
                    config["resumed_from"] = os.path.abspath(ckpt_path)
                else:
                    run_dir.check_resume(ckpt_path, meta)
                    config.setdefault("run_id", uuid.uuid4().hex)
                return _train(config, out, ckpt_path, signals, parallel)
        except KeyboardInterrupt:
            print(f"{_signal_word(signals)}: stopped at once; {_saved(out)}", file=sys.stderr)
            return signals.exit_code


def _train(config, out, ckpt_path, signals, parallel=None):
    from .trainer import Run, write_config
    root = parallel is None or parallel.is_root
    log = print
    run = Run(config, out, resume_from=ckpt_path, log=log, parallel=parallel)
    log(f"data: {run.data.summary()}")
    if config["limit_train"] or config["limit_val"]:
        log(f"limited to {len(run.train_loader.labels)} train / "
            f"{len(run.val_loader.labels) if run.val_loader else 0} val images")
    log(f"model: {config['model']} ({sum(p.size for p in run.model.params.values()):,} parameters), "
        f"{config['epochs']} epochs of {len(run.train_loader)} steps, batch {config['batch_size']}, "
        f"{run.schedule.name} schedule; run directory {out}")
    if ckpt_path:
        log(f"resuming {ckpt_path} at epoch {run.progress.epoch + 1}, batch {run.progress.batch}")
    if root:
        write_config(out, config)
    signals.armed = True
    status = run.train(stop_requested=lambda: signals.requested, show_progress=not config["no_progress"])
    signals.armed = False
    if status == "interrupted":
        print(f"{_signal_word(signals)}: saved {os.path.join(out, 'last.npz')} ("
              f"{_saved_position(run)}); continue with: python train.py --resume {out}",
              file=sys.stderr)
        return signals.exit_code
    scores = run.final_scores()
    best = run.progress.best_val_acc
    if best >= 0:
        log(f"best validation accuracy {100 * best:.2f}% ({os.path.join(out, 'best.npz')})")
    for split, name in (("val", "validation"), ("test", "test")):
        if f"{split}_top1" in scores and root:
            log(f"{name}: {_scores_line(scores, split)} (final parameters)")
    if "test_top1" in scores and root:
        import json
        from .checkpoint import atomic_write
        text = json.dumps({"headline": "test_top1_flip", **scores}, indent=2) + "\n"
        try:
            atomic_write(os.path.join(out, "test.json"), lambda f: f.write(text.encode()))
        except OSError as e:
            raise_error(f"cannot write {os.path.join(out, 'test.json')}: {e.strerror or e}; "
                        f"the run's checkpoints are saved in {out}")
    return 0


def _scores_line(scores, split):
    """The end-of-run line of a split: flip-TTA first (the headline), then the centre image."""
    return (f"top-1 {100 * scores[f'{split}_top1_flip']:.2f}% with flip TTA (image + mirror), "
            f"{100 * scores[f'{split}_top1']:.2f}% centre only; top-5 "
            f"{100 * scores[f'{split}_top5_flip']:.2f}% / {100 * scores[f'{split}_top5']:.2f}%; "
            f"loss {scores[f'{split}_loss_flip']:.4f} / {scores[f'{split}_loss']:.4f}")


def _saved_position(run):
    from .checkpoint import describe_position
    return describe_position({"epoch": run.progress.epoch, "batch": run.progress.batch})


def _signal_word(signals):
    return "interrupted" if signals.name == "SIGINT" else f"stopped by {signals.name}"


def _saved(out):
    """What OUT/last.npz holds, for the message of a run stopped at once."""
    from .checkpoint import describe_position, read_meta
    from .errors import TinyAlexError
    last = os.path.join(out, "last.npz")
    try:
        meta = read_meta(last)
    except TinyAlexError:
        return "nothing was saved"
    return (f"{last} holds {describe_position(meta)}; continue with: python train.py "
            f"--resume {out}")


def _pre_threads(argv):
    """Set the thread count from --threads, then load NumPy. A Ctrl-C while NumPy loads is held
    until it has loaded (NumPy turns an interrupted import into an ImportError about a "bad
    install"), then raised as the KeyboardInterrupt it was."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.threads and known.threads > 0:
        set_threads(known.threads)
    import signal
    held = []
    try:
        previous = signal.signal(signal.SIGINT, lambda signum, frame: held.append(signum))
    except ValueError:          # not the main thread: nothing to hold
        import numpy  # noqa: F401
        return
    try:
        import numpy  # noqa: F401,F811
    finally:
        signal.signal(signal.SIGINT, previous)
    if held:
        raise KeyboardInterrupt


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
    from . import mpi
    if mpi.requested(argv):                   # under mpiexec, or --towers 2: tinyalex/mpi/
        return mpi.train_main(argv, prog="train.py")
    _pre_threads(argv)
    parser = train_parser(prog="train.py")
    args = parser.parse_args(argv)
    return _run(lambda: train_command(args, parser, argv))


def main(argv=None):
    """`python -m tinyalex COMMAND ...`"""
    argv = sys.argv[1:] if argv is None else argv
    _runtime.apply()
    from . import mpi
    if argv[:1] == ["train"] and mpi.requested(argv[1:]):   # as in train_main
        return mpi.train_main(argv[1:], prog="python -m tinyalex train")
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
    for command_parser in sub.choices.values():    # --threads on every command, one definition
        if not any("--threads" in action.option_strings for action in command_parser._actions):
            add_threads_argument(command_parser)
    args = parser.parse_args(argv)
    return _run(lambda: args.func(args))
