"""The command line: `python train.py ...` and `python -m tinyalex {train,evaluate,predict,filters,bench,torch-train,
neighbours,saliency,export}`.

Heavy imports (NumPy, Numba) wait until the process settings are applied (tinyalex/_runtime.py)
and the thread count is known, because BLAS reads both from the environment when it loads: the
commands' modules are imported inside the functions below, and only the named command's.
The options of `train` are in tinyalex/options.py, its handler in tinyalex/train_command.py.
Every user error (TinyAlexError), and running out of memory, becomes one line on stderr and
exit status 2; Ctrl-C during training saves and exits with 130. Ctrl-C and SIGTERM wait while
the modules load (tinyalex/startup.py: the entry points start through it, `_run` lets the
signals through).
"""

import argparse
import importlib
import os
import sys

from . import _runtime, startup
from .argtypes import add_threads_argument

# command -> the module whose register() adds it (train's parser is options.py's)
COMMANDS = {"train": None, "evaluate": "evaluate", "predict": "evaluate", "filters": "pictures",
            "exercise": "exercise",
            "bench": "bench", "torch-train": "torch_train", "neighbours": "neighbours",
            "saliency": "saliency", "export": "export"}


def _pre_threads(argv):
    """Set the thread count from --threads, before NumPy loads."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=None)
    known, _ = pre.parse_known_args(argv)
    if known.threads and known.threads > 0:
        _runtime.set_threads(known.threads)
    for var in ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value and not (value.isdigit() and int(value) > 0):   # the libraries would warn or fail
            print(f"error: {var}={value!r} is not a number of threads; unset it or use --threads N",
                  file=sys.stderr)
            raise SystemExit(2)


def run_train(args, parser, argv):
    from .train_command import run_train as run   # (the trainer's modules: only to train)
    return run(args, parser, argv)


def _run(func, args=None):
    """Run a command whose modules are loaded. NumPy and Numba load first (every command but
    exercise uses them); only then may Ctrl-C and SIGTERM stop it (tinyalex/startup.py). Its
    errors are one line (control characters in a name written as escapes) and exit status 2,
    running out of memory too (naming the command's --batch-size)."""
    from .errors import TinyAlexError, out_of_memory, printable
    try:
        import numba  # noqa: F401
        startup.release()
        return func()
    except TinyAlexError as e:
        print(f"error: {printable(e)}", file=sys.stderr)
        return 2
    except MemoryError as e:
        print(f"error: {out_of_memory(e, getattr(args, 'batch_size', None))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        return startup.report(e)


def train_main(argv=None):
    """`python train.py ...`"""
    argv = sys.argv[1:] if argv is None else argv
    _runtime.apply()
    from . import mpi
    if mpi.requested(argv):                   # under mpiexec, or --towers 2: tinyalex/mpi/
        from .mpi.launch import train_main as train_on_mpi
        return train_on_mpi(argv, prog="train.py")
    _pre_threads(argv)
    from .options import train_parser
    parser = train_parser(prog="train.py")
    args = parser.parse_args(argv)
    from . import train_command  # noqa: F401  (the trainer's modules, before _run)
    return _run(lambda: run_train(args, parser, argv), args)


def _prog():
    """How the user started the command line: `tinyalex` (the console script pyproject.toml
    installs) or `python -m tinyalex`, for its usage lines."""
    name = os.path.basename(sys.argv[0] if sys.argv and sys.argv[0] else "")
    script = name.lower().removesuffix(".exe").removesuffix("-script.py")
    return "tinyalex" if script == "tinyalex" else "python -m tinyalex"


def main(argv=None):
    """`python -m tinyalex COMMAND ...` (or `tinyalex COMMAND ...`)"""
    argv = sys.argv[1:] if argv is None else argv
    _runtime.apply()
    prog = _prog()
    from . import mpi
    if argv[:1] == ["train"] and mpi.requested(argv[1:]):   # as in train_main
        from .mpi.launch import train_main as train_on_mpi
        return train_on_mpi(argv[1:], prog=f"{prog} train")
    _pre_threads(argv)
    parser = argparse.ArgumentParser(prog=prog, allow_abbrev=False,
                                     description="tinyalex: AlexNet from scratch in NumPy and Numba.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    # Only the named command's parser is built (all of them for --help or a mistyped command):
    # building one imports its modules, and `bench` need not wait for the data pipeline's.
    command = argv[0] if argv and argv[0] in COMMANDS else None
    if command in (None, "train"):
        from .options import add_train_arguments
        train = sub.add_parser("train", help="train a model (the same as python train.py)", allow_abbrev=False)
        add_train_arguments(train)
        train.set_defaults(func=lambda args: run_train(args, train, argv[1:]))
    for module in dict.fromkeys(COMMANDS[name] for name in COMMANDS if command in (None, name)):
        if module:
            importlib.import_module(f".{module}", __package__).register(sub)
    for command_parser in sub.choices.values():    # --threads on every command, one definition
        if not any("--threads" in action.option_strings for action in command_parser._actions):
            add_threads_argument(command_parser)
    args = parser.parse_args(argv)
    if args.command == "train":
        from . import train_command  # noqa: F401  (the trainer's modules, before _run)
    return _run(lambda: args.func(args), args)


def gradcheck_main(argv=None):
    """`python gradcheck.py ...`: its arrays are tiny, so one BLAS thread (set before NumPy loads)."""
    for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, "1")
    _runtime.apply()
    from .gradcheck import main as check
    return _run(lambda: check(argv))
