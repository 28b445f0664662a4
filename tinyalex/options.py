"""The training options, in one place: what `train.py` (and `python -m tinyalex train`) takes,
the recipe options `torch-train` shares, and the rules of `--resume` (which options a resume
may change, and how a checkpoint's stored options are checked). Imports no command.
"""

import argparse
import os

from .argtypes import add_route_argument, add_seed_argument, add_threads_argument, number_in, non_empty_path, positive_int
from .data import add_data_arguments
from .errors import CheckpointError, TinyAlexError, install_hint
from .model import INITS, MODELS, ROUTES
from .optim import DEFAULT_WARMUP, DEFAULT_WEIGHT_DECAY, MIN_WARMUP_STEPS, SCHEDULES

# options that may differ when resuming: they do not change what the run computes
RESUME_FREE = {"resume", "threads", "save_every", "out", "no_progress", "data", "data_dir", "route", "towers",
               "limit_test", "val_flip"}
# options a resume may change: the rest of the run follows the new value (config.json says so)
RESUME_CHANGES = {"lr"}
# options added after runs were already being saved: a checkpoint without one trained as this
# (the versions policy: tinyalex/checkpoint.py)
OLD_DEFAULTS = {"nesterov": False, "bias_decay": True, "label_smoothing": 0.0, "ema": 0.0,
                "cutout": 0, "warmup": 0.15}
# options stored under an older name: old -> new
RENAMED = {"impl": "route"}


def add_recipe_arguments(g):
    """The optimiser's and the loss's options, shared by train.py and torch-train (which runs
    the same recipe in PyTorch): --momentum, --weight-decay, --nesterov, --bias-decay,
    --warmup, --label-smoothing, --init, --ema."""
    g.add_argument("--momentum", type=number_in(0, 1), default=0.9, help="SGD momentum (default 0.9)")
    g.add_argument("--weight-decay", type=number_in(0), default=DEFAULT_WEIGHT_DECAY,
                   help=f"weight decay (default {DEFAULT_WEIGHT_DECAY:g})")
    g.add_argument("--nesterov", action=argparse.BooleanOptionalAction, default=True,
                   help="Nesterov momentum (default; --no-nesterov: the paper's plain momentum)")
    g.add_argument("--bias-decay", action=argparse.BooleanOptionalAction, default=False,
                   help="weight decay on the biases too, as the paper and PyTorch's default do "
                        "(default: weights only)")
    g.add_argument("--warmup", type=number_in(0, 1), default=DEFAULT_WARMUP, metavar="F",
                   help=f"onecycle's warm-up, a fraction F of the run (default {DEFAULT_WARMUP:g}; "
                        f"never fewer than {MIN_WARMUP_STEPS} steps, or half a short run)")
    g.add_argument("--label-smoothing", type=number_in(0, 1), default=0.1, metavar="E",
                   help="train towards 1-E+E/classes on the true class and E/classes on the "
                        "others (default 0.1; 0: plain cross-entropy)")
    g.add_argument("--init", choices=INITS, default="he",
                   help="he: Kaiming normal, N(0, 2/fan_in) before a ReLU and N(0, 1/fan_in) "
                        "for fc8 (default); torch: PyTorch's default uniform +-1/sqrt(fan_in), "
                        "which sits at chance for most of the first epoch; paper: N(0, 0.01) "
                        "with biases 1, the paper's, which stays at chance on CIFAR-10")
    g.add_argument("--ema", type=number_in(0, 1), default=0.0, metavar="DECAY",
                   help="score and keep a moving average of the weights, DECAY per step "
                        "(e.g. 0.999: about the last 1,000 steps; default 0: the weights as trained)")


def add_limit_test_argument(group):
    """--limit-test N: the final scoring on N test images only (train.py and torch-train)."""
    group.add_argument("--limit-test", type=positive_int, default=None, metavar="N",
                       help="score the final model on N test images only, a seeded random "
                            "sample (quick runs; default: the whole test split)")


def add_train_arguments(parser):
    g = parser.add_argument_group("model and optimisation")
    g.add_argument("--model", choices=MODELS, default="cifar",
                   help="cifar: AlexNet for native 32x32 images (default); paper: the faithful "
                        "224x224 AlexNet, images upscaled; tiny: a few channels, for quick checks")
    g.add_argument("--epochs", type=positive_int, default=10, help="epochs to train (default 10)")
    g.add_argument("--batch-size", type=positive_int, default=128, help="images per step (default 128)")
    g.add_argument("--lr", type=number_in(0, low_open=True), default=None,
                   help="learning rate: the peak for onecycle (default 0.05 cifar, 0.02 paper), "
                        "the start for step and plateau (default 0.01)")
    g.add_argument("--schedule", choices=tuple(SCHEDULES), default="onecycle",
                   help="onecycle: linear warm-up over 15%% of the steps (at least 100, or half a "
                        "short run) from lr/25, then linear "
                        "decay to lr/25e4, every step (default); step: x0.1 after epochs 5 and 8; "
                        "plateau: /10 when validation accuracy stalls for --patience epochs")
    g.add_argument("--patience", type=positive_int, default=2, help="epochs without improvement for plateau (default 2)")
    add_route_argument(g, tuple(ROUTES), "fast",
                       help="the layers that compute: fast, layers/fast/ (default); readable, layers/ "
                            "itself, the definition (same maths, several times slower); or DIR, "
                            "your own (python -m tinyalex exercise), tinyalex's readable ones where "
                            "yours are not written yet")
    add_recipe_arguments(g)
    add_data_arguments(parser)
    r = parser.add_argument_group("run")
    r.add_argument("--out", metavar="DIR", type=non_empty_path, default=None,
                   help="run directory (default runs/<model>-<date>-<time>)")
    r.add_argument("--resume", metavar="PATH", type=non_empty_path, default=None,
                   help="continue a run from its directory or a checkpoint file, exactly where it "
                        "stopped (with --lr: at another learning rate; with a new --out: in a new "
                        "run directory)")
    add_seed_argument(r)
    add_threads_argument(r)
    r.add_argument("--limit-train", type=positive_int, default=None, metavar="N",
                   help="train on N training images only, a seeded random sample (quick runs)")
    r.add_argument("--limit-val", type=positive_int, default=None, metavar="N",
                   help="validate on N validation images only, a seeded random sample")
    add_limit_test_argument(r)
    r.add_argument("--save-every", type=number_in(0), default=5.0, metavar="MIN",
                   help="also save last.npz every MIN minutes mid-epoch (default 5; 0: epoch ends only)")
    r.add_argument("--no-progress", action="store_true", help="no progress bar (logs, CI)")
    r.add_argument("--val-flip", action="store_true",
                   help="validate every epoch with flip TTA too (metrics.csv's val_acc_flip; "
                        "twice the validation time; the end of the run always scores both)")
    r.add_argument("--towers", type=int, choices=(1, 2), default=1,
                   help="2: the paper's two towers on two MPI processes, mpiexec -n 2 python train.py "
                        "--towers 2; under mpiexec without it, the processes train data-parallel "
                        f"(needs {install_hint('mpi')}; docs/parallel.md)")


def train_parser(prog=None):
    parser = argparse.ArgumentParser(
        prog=prog, allow_abbrev=False,
        description="Train AlexNet on CIFAR-10 (or an image folder) on the CPU.",
        epilog="Example: python train.py --epochs 10   |   resume: python train.py --resume runs/DIR")
    add_train_arguments(parser)
    return parser


def explicit_options(parser, argv):
    """Destinations of the options written on the command line."""
    found = set()
    for action in parser._actions:
        for opt in action.option_strings:
            if any(arg == opt or arg.startswith(opt + "=") for arg in argv):
                found.add(action.dest)
    return found


def resume_config(args, parser, explicit):
    """(config, out, checkpoint path, checkpoint meta) of `--resume PATH`, all checked."""
    from .checkpoint import load_model_checkpoint   # (NumPy: only when resuming)
    path = args.resume
    ckpt_path = os.path.join(path, "last.npz") if os.path.isdir(path) else path
    if os.path.isdir(path) and not os.path.exists(ckpt_path):
        if os.path.exists(os.path.join(path, "config.json")):
            raise_error(f"--resume {path}: its run stopped before its first checkpoint, so "
                        f"there is nothing to continue; start it again with --out {path}",
                        checkpoint=True)
        raise_error(f"--resume {path}: the directory holds no last.npz to continue",
                    checkpoint=True)
    # the whole checkpoint is checked here, before minutes of data loading; Run reads it again
    meta = load_model_checkpoint(ckpt_path, training=True).meta
    config = _checked_config(meta["config"], parser, ckpt_path)
    if config["model"] != meta["model"]:
        raise_error(f"checkpoint {ckpt_path} holds model {meta['model']!r}, its config "
                    f"says {config['model']!r}", checkpoint=True)
    for dest in sorted(explicit - RESUME_FREE - RESUME_CHANGES):
        if getattr(args, dest) != config.get(dest):
            typed, theirs = _as_typed(parser, dest, getattr(args, dest)), _as_typed(parser, dest, config.get(dest))
            raise_error(f"--resume: {typed} differs from the run's {theirs}; drop "
                        f"{typed.split()[0]} to continue that run, or start a new one")
    for dest in (RESUME_FREE | RESUME_CHANGES) & explicit - {"resume"}:
        config[dest] = getattr(args, dest)
    out = (os.path.dirname(ckpt_path) or ".") if "out" not in explicit else args.out
    return config, out, ckpt_path, meta


def _as_typed(parser, dest, value):
    """The option `dest` with `value` as it is written on a command line: "--batch-size 64",
    "--no-nesterov", "--bias-decay"."""
    action = next(a for a in parser._actions if a.dest == dest)
    flag = action.option_strings[0]
    if isinstance(action, argparse.BooleanOptionalAction):
        return flag if value else "--no-" + flag[2:]
    if action.nargs == 0:                          # a switch (store_true)
        return flag if value else f"no {flag}"
    return f"{flag} {value}"


def _checked_config(config, parser, path):
    """The options stored in a checkpoint, each checked as its command-line option would be."""
    config = dict(config)
    for old, new in RENAMED.items():
        if old in config and new not in config:
            config[new] = config.pop(old)
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
    if isinstance(value, str):                     # --route: a name or a folder
        try:
            return action.type(value) == value
        except (argparse.ArgumentTypeError, ValueError):
            return False
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return action.type(str(value)) == value
    except (argparse.ArgumentTypeError, ValueError):
        return False


def raise_error(message, checkpoint=False):
    raise (CheckpointError if checkpoint else TinyAlexError)(message)
