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
   and the messages are rank 0's alone. Their errors still reach the terminal (step 4).
4. Errors. A user error (TinyAlexError: a bad flag, a missing checkpoint) happens on every rank
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
from . import INSTALL, launched_size, say, towers_option

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
    """--threads if given, else this process's cores / the ranks on this machine (at least 1)."""
    from .._runtime import available_cores, set_threads
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--threads", type=int, default=None)
    given = pre.parse_known_args(argv)[0].threads
    if given and given > 0:
        threads = given
    else:
        local = comm.Split_type(MPI.COMM_TYPE_SHARED)
        threads = max(1, available_cores() // local.Get_size())
        local.Free()
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
    towers = towers_option(argv)
    if towers == 2 and size != 2:
        say(f"error: --towers 2 takes exactly 2 processes, not {size}: "
            "mpiexec -n 2 python train.py --towers 2")
        return 2
    threads = _threads_per_rank(MPI, comm, argv)
    if rank != 0:
        _quiet()
    errors = comm.Dup()                        # for _fail's barrier, apart from the training's
    from ..errors import TinyAlexError
    from ..options import train_parser
    from ..train_command import run_train
    parser = train_parser(prog=prog)
    args = parser.parse_args(argv)             # a bad flag: every rank exits 2, rank 0 says why
    if towers == 2:
        from .towers import Towers
        processes, mode = Towers(comm), "two towers (model parallel, the paper's split: each holds half the parameters)"
    else:
        from .data_parallel import DataParallel
        processes, mode = DataParallel(comm), f"data parallel, {args.batch_size} images per step in all"
    if rank == 0:
        print(f"MPI: {size} processes, {mode}, {threads} thread{'s' * (threads > 1)} each "
              f"({MPI.Get_library_version().splitlines()[0].strip()})", flush=True)
    try:
        startup.release()                      # the modules are loaded: signals may stop it now
        status = run_train(args, parser, argv, processes)
        if processes.traffic.steps and rank == 0:
            print(f"MPI: {processes.traffic.summary()}", flush=True)
        return status
    except TinyAlexError as e:
        return _fail(errors, rank, f"error: {e}", 2)
    except KeyboardInterrupt:
        if rank == 0:
            print("interrupted", file=sys.__stderr__)
        return 130
    except Exception:   # noqa: BLE001 (a bug: its traceback, then the same rule as errors)
        return _fail(errors, rank, traceback.format_exc().rstrip(), 1)
