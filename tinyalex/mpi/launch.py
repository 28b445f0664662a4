"""`python train.py ...` when mpiexec started it, or with --towers 2.

    mpiexec -n 2 python train.py --towers 2      the paper's towers (towers.py)
    mpiexec -n N python train.py                 data parallel (data_parallel.py)

In order, before the ordinary `train_command.run_train` runs with the job's processes (ranks.py):

1. MPI starts (mpi4py, which calls MPI_Init on import). Without mpi4py or an MPI library, one
   line says what to install, exit status 2.
2. Threads: --threads per rank, else the cores this process may use divided by the ranks on
   this machine (MPI's shared-memory split), so N ranks on one machine share its cores rather
   than each starting a thread per core. Set before NumPy and Numba load (_runtime.set_threads).
3. Ranks 1..N-1 go quiet: their stdout and stderr go to /dev/null, so the log, the progress bar
   and the messages are rank 0's alone. Their errors still reach the terminal (step 5).
4. The ranks compare their options (same_options.py): ranks started with different options
   all stop with one line naming them, exit status 2.
5. Errors. A user error (TinyAlexError: a bad flag, a missing checkpoint) happens on every rank
   alike: rank 0 prints its one line and every rank exits with status 2. An error on some
   ranks only would leave the others waiting in their next exchange for ever; a failing rank
   waits a few seconds for the others to fail too (a barrier on a communicator of its own),
   and if they do not, prints its error with its rank and aborts the whole job (MPI_Abort).
"""

import argparse
import os
import sys
import time
import traceback

from .. import startup
from ..words import plural
from . import INSTALL, launched_size, say

FAIL_TOGETHER_SECONDS = 10.0


def _start_mpi():
    """mpi4py's MPI module, or None after one line on what to install."""
    try:
        from mpi4py import MPI
    except (ImportError, RuntimeError) as e:     # RuntimeError: mpi4py without an MPI library
        size = launched_size()
        if size > 1:
            say(f"error: mpiexec started {size} processes, but MPI cannot be used from Python "
                f"({str(e).splitlines()[0] if str(e) else type(e).__name__}): {INSTALL}")
        else:
            say(f"error: --towers 2 runs the two towers on two MPI processes: {INSTALL}, then "
                "mpiexec -n 2 python train.py --towers 2")
        return None
    return MPI


def _threads_per_rank(MPI, comm, argv):
    """--threads if given, else this process's cores / the ranks on this machine (at least 1).
    Every rank takes part in the split, whatever its --threads (a collective call); a bad
    value is left to the parser."""
    from .._runtime import available_cores, set_threads
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--threads", default="")
    given = pre.parse_known_args(argv)[0].threads
    local = comm.Split_type(MPI.COMM_TYPE_SHARED)
    shared = max(1, available_cores() // local.Get_size())
    local.Free()
    threads = int(given) if given.isdigit() and int(given) > 0 else shared
    set_threads(threads)
    return threads


def _quiet():
    """Send this rank's stdout and stderr to /dev/null (sys.__stderr__ stays the terminal)."""
    devnull = open(os.devnull, "w")
    sys.stdout = sys.stderr = devnull


def _fail(comm, rank, message, status):
    """Every rank failed alike: rank 0 says so. Else this rank says so and aborts the job."""
    request = comm.Ibarrier()
    deadline = time.monotonic() + FAIL_TOGETHER_SECONDS
    while not request.Test():
        if time.monotonic() > deadline:
            print(f"{message} (rank {rank}; the other ranks went on: aborting the job)",
                  file=sys.__stderr__, flush=True)
            comm.Abort(status)
        time.sleep(0.01)
    if rank == 0:
        print(message, file=sys.__stderr__, flush=True)
    return status


def train_main(argv, prog="train.py"):
    """Train on MPI; returns the exit status (0 done, 2 user error, 130 interrupted)."""
    MPI = _start_mpi()
    if MPI is None:
        return 2
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    threads = _threads_per_rank(MPI, comm, argv)
    if rank != 0:
        _quiet()
    errors = comm.Dup()                        # for _fail's barrier, apart from the training's
    from ..errors import TinyAlexError, out_of_memory, printable
    from ..options import train_parser
    from ..train_command import run_train
    from .same_options import agreed_options
    parser = train_parser(prog=prog)
    try:
        args = agreed_options(comm, parser, argv)   # a bad flag on every rank: exit 2, rank 0 says why
    except TinyAlexError as e:
        say(f"error: {e}")
        return 2
    towers = args.towers
    if towers == 2 and size != 2:
        say(f"error: --towers 2 takes exactly 2 processes, not {size}: "
            "mpiexec -n 2 python train.py --towers 2")
        return 2
    if towers == 2:
        from .towers import Towers
        processes, mode = Towers(comm), "two towers (model parallel, the paper's split: each holds half the parameters)"
    else:
        from .data_parallel import DataParallel
        processes, mode = DataParallel(comm), f"data parallel, {args.batch_size} images per step in all"
    if rank == 0:
        print(f"MPI: {size} processes, {mode}, {plural(threads, 'thread')} each "
              f"({MPI.Get_library_version().splitlines()[0].strip()})", flush=True)
    try:
        startup.release()                      # the modules are loaded: signals may stop it now
        status = run_train(args, parser, argv, processes)
        if processes.traffic.steps and rank == 0:
            print(f"MPI: {processes.traffic.summary()}", flush=True)
        return status
    except TinyAlexError as e:
        return _fail(errors, rank, f"error: {printable(e)}", 2)
    except MemoryError as e:                   # the wording of cli._run
        return _fail(errors, rank, f"error: {out_of_memory(e, args.batch_size)}", 2)
    except KeyboardInterrupt:
        if rank == 0:
            print("interrupted", file=sys.__stderr__)
        return 130
    except Exception:   # noqa: BLE001 (a bug: its traceback, then the same rule as errors)
        return _fail(errors, rank, traceback.format_exc().rstrip(), 1)
