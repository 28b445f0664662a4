"""Every rank of a job must be started with the same options.

mpiexec can start each rank with its own command line (`mpiexec -n 1 python train.py --seed 0
: -n 1 python train.py --seed 1`). Ranks that disagree would train silently with rank 0's
seed, or, with another --batch-size, send arrays the other rank does not expect. So before
anything else every rank parses its command line (quietly) and the ranks compare what they
got: the options each was given and their values. Any difference stops every rank alike with
one line naming the options and each rank's value; what parses on no rank is argparse's
error, shown once (rank 0's), as on one process.

Only PER_RANK may differ: they change how fast a rank computes, what it shows, or where its
machine keeps the data cache, never what is computed.
"""

import contextlib
import io
import sys

from ..errors import TinyAlexError
from ..options import explicit_options

PER_RANK = ("threads", "no_progress", "data_dir")
NOT_GIVEN = "not given"


def _parse_quietly(parser, argv):
    """(args or None, argparse's exit status, what it printed on stdout, on stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            return parser.parse_args(argv), None, "", ""
        except SystemExit as e:
            return None, e.code, out.getvalue(), err.getvalue()


def _given(parser, argv, args):
    """{option: value} of the options on this command line (--seed 0 and no --seed differ:
    a resume checks only the options given)."""
    explicit = explicit_options(parser, argv)
    flags = {a.dest: a.option_strings[0] for a in parser._actions if a.option_strings}
    return {flags[dest]: getattr(args, dest) for dest in sorted(explicit)
            if dest not in PER_RANK}


def _show(value):
    return "on" if value is True else "off" if value is False else str(value)


def _on_ranks(values):
    """'0 on rank 0, 1 on ranks 1, 2': each value with the ranks that have it."""
    groups = {}
    for rank, value in enumerate(values):
        groups.setdefault(value, []).append(str(rank))
    return ", ".join(f"{value} on rank{'s' * (len(ranks) > 1)} {', '.join(ranks)}"
                     for value, ranks in groups.items())


def differences(given):
    """One line on the options that differ between ranks, given [{option: value}] by rank
    ('' when they agree)."""
    options = sorted(set().union(*given))
    shown = {o: [_show(g[o]) if o in g else NOT_GIVEN for g in given] for o in options}
    return "; ".join(f"{o} {_on_ranks(values)}" for o, values in shown.items()
                     if len(set(values)) > 1)


def agreed_options(comm, parser, argv):
    """This rank's parsed options, once every rank of `comm` is known to have the same (a
    collective call). Else TinyAlexError on every rank; SystemExit on every rank when every
    rank's command line ends argparse alike (a bad flag, --help: rank 0 prints its text)."""
    args, status, out, err = _parse_quietly(parser, argv)
    mine = (status, err.strip().splitlines()[-1:],
            None if args is None else _given(parser, argv, args))
    everyone = comm.allgather(mine)
    statuses = [s for s, _, _ in everyone]
    if all(s is not None for s in statuses) and len(set(statuses)) == 1:
        if comm.Get_rank() == 0:
            print(out, end="")
            print(err, end="", file=sys.stderr)
        raise SystemExit(status)
    for rank, (s, last, _) in enumerate(everyone):
        if s is not None:
            what = f"is refused ({last[0]})" if last else "asks for --help"
            raise TinyAlexError(f"the command line of rank {rank} {what}, not the others'; "
                                "start every rank with the same options")
    diff = differences([g for _, _, g in everyone])
    if diff:
        raise TinyAlexError(f"the ranks were started with different options: {diff}; start every "
                            f"rank with the same options (only --threads, --no-progress and "
                            f"--data-dir may differ)")
    return args
