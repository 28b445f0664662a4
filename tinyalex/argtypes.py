"""Argument types shared by every command: a bad value is argparse's one-line usage error."""

import argparse


def whole_number(minimum):
    """An argparse type: an int of at least `minimum`."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}, got {value}")
        return value
    return parse


positive_int = whole_number(1)
non_negative_int = whole_number(0)


def number_in(low, high=float("inf"), low_open=False):
    """An argparse type: a float in [low, high), or (low, high) with low_open."""
    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        bad_low = value <= low if low_open else value < low
        if bad_low or value >= high or value != value:
            interval = f"{'(' if low_open else '['}{low}, {high})"
            raise argparse.ArgumentTypeError(f"must be in {interval}, got {value}")
        return value
    return parse


def non_empty_path(text):
    """An argparse type: a file or directory name, never empty (an empty --out would
    otherwise be taken as "not given")."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty path; name a file or a directory")
    return text


def add_checkpoint_argument(parser):
    """CKPT, the checkpoint every command on a trained model reads."""
    parser.add_argument("checkpoint", metavar="CKPT", type=non_empty_path, help="a checkpoint (.npz) written by train.py")


def add_threads_argument(parser):
    """--threads, the same on every command (the entry points read it before NumPy loads:
    tinyalex/cli.py)."""
    parser.add_argument("--threads", type=positive_int, default=None, metavar="N",
                        help="CPU threads for the matrix products and kernels (default: all the "
                             "cores this process may use; fewer leaves cores to other programs)")


def route_argument(names):
    """A --route value: one of `names` (tinyalex's routes) or a folder of a student's layers
    (python -m tinyalex exercise --out DIR), returned as an absolute path."""
    def parse(text):
        import os
        if text in names:
            return text
        if os.path.isdir(text):
            return os.path.abspath(text)
        raise argparse.ArgumentTypeError(f"{text!r} is neither {', '.join(names)} nor a folder of "
                                         f"your own layers")
    return parse


def add_route_argument(parser, names, default, help):
    """--route (also spelt --impl) on a command: tinyalex's routes `names`, or a student's folder."""
    return parser.add_argument("--route", "--impl", dest="route", type=route_argument(names),
                               default=default, metavar="{" + ",".join(names) + ",DIR}", help=help)


def add_seed_argument(parser, draws="every random draw"):
    """--seed N, a whole number >= 0 (NumPy's generators take no negative seed)."""
    return parser.add_argument("--seed", type=non_negative_int, default=0, metavar="N",
                               help=f"seed of {draws} (default 0)")
