"""Training on several processes with MPI: the paper's two towers, and data parallelism.

    mpiexec -n 2 python train.py --towers 2    model parallel, the paper's way (towers.py)
    mpiexec -n N python train.py               data parallel, any N (data_parallel.py)

Both run on MPI through mpi4py, with an MPI installed from the package index: the optional
extra `pip install -e ".[mpi]"` brings mpi4py and MPICH (whose wheel provides `mpiexec`).

    towers.py         AlexNet cut in two along every layer, one tower per process, exchanging
                      activations (and gradients) only where the paper's Figure 2 joins them
    data_parallel.py  each process takes a shard of every batch; gradients summed by Allreduce
    ranks.py          what both give the trainer: the root rank, agreeing on a stop or a save,
                      Ctrl-C and SIGTERM on any rank (and how long a stop may wait), the bytes
                      and seconds of each exchange
    launch.py         `train.py` under mpiexec: MPI start, threads per rank, quiet ranks 1..N-1,
                      errors as one line
    same_options.py   every rank started with the same options, or one line naming the difference
    scaling.py        python -m tinyalex.mpi.scaling: img/s, communication per step

This file imports neither NumPy nor mpi4py: the command line asks it, before anything heavy is
loaded, whether to hand over (`requested`) to `launch.train_main`. A single process without --towers never gets here
further than that question. Measurements and the scaling model: docs/parallel.md.
"""

import argparse
import os
import sys

from ..errors import install_hint

INSTALL = f"{install_hint('mpi')} (mpi4py and MPICH, which provides mpiexec)"
# What the common launchers tell their processes: MPICH's and Intel MPI's Hydra, Slurm's PMI
# (PMI_SIZE), Open MPI (OMPI_COMM_WORLD_SIZE), PMIx launchers (PMIX_SIZE is not always set).
SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "PMIX_SIZE")
RANK_VARIABLES = ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK")


def _int_env(names):
    for name in names:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value)
    return None


def launched_size():
    """The number of processes mpiexec started, from the environment it sets (1 without one)."""
    return _int_env(SIZE_VARIABLES) or 1


def launched_rank():
    """This process's rank, from the launcher's environment (0 without one)."""
    return _int_env(RANK_VARIABLES) or 0


def towers_option(argv):
    """The value of --towers on a command line (1 when absent; bad values are the parser's)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)
    pre.add_argument("--towers", default="1")
    known, _ = pre.parse_known_args(argv)
    return 2 if known.towers == "2" else 1


def requested(argv):
    """Whether `train` must run on MPI: started by mpiexec with more than one process, or asked
    for the towers. Light: argparse and the environment only."""
    return launched_size() > 1 or towers_option(argv) == 2


def say(message):
    """One line on stderr, from rank 0 only (all ranks get the same message)."""
    if launched_rank() == 0:
        print(message, file=sys.stderr)
