"""What a job of several processes gives the trainer, whichever way it splits the work.

`trainer.Run` takes an optional `parallel` object (towers.Towers or
data_parallel.DataParallel, both built on `Ranks` below) and asks it for five things:

    wrap(model)                  the model the loop trains: this rank's tower, or a wrapper that
                                 shards every batch and sums the gradients
    full_state(params, optim)    the whole model and optimizer state, for a checkpoint, on rank
                                 0 (None elsewhere): every rank calls it, only rank 0 writes
    local_checkpoint(ckpt)       an ordinary single-process checkpoint cut to this rank's share
    agree(flag)                  True on every rank if it is True on any (save now? stop now?)
    is_root                      rank 0: the one that writes files, logs and the progress bar

Every rank runs the same loop on the same batches in the same order, so every collective call
(the exchanges, the Allreduce, `agree`) is met by all ranks at the same point.
"""

import signal
import time
from collections import defaultdict


class Traffic:
    """Bytes sent and seconds spent in MPI, per named exchange (e.g. "into_conv3"). The
    seconds are wall time inside the MPI call, so they include waiting for the other rank."""

    def __init__(self):
        self.bytes = defaultdict(int)
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.steps = 0          # training steps (set by the model), to quote figures per step

    def add(self, name, nbytes, seconds):
        self.bytes[name] += int(nbytes)
        self.seconds[name] += float(seconds)
        self.calls[name] += 1

    def reset(self):
        self.__init__()

    def per_step(self, training_only=True):
        """{name: (bytes, seconds)} per training step (the exchanges of evaluation, "eval ...",
        and of checkpoints, "save ...", left out)."""
        steps = max(1, self.steps)
        return {name: (self.bytes[name] / steps, self.seconds[name] / steps)
                for name in self.bytes
                if not (training_only and name.startswith(("eval ", "save ")))}

    def summary(self):
        """One line: megabytes sent and milliseconds in MPI per training step."""
        rows = self.per_step()
        nbytes = sum(b for b, _ in rows.values())
        seconds = sum(s for _, s in rows.values())
        return (f"{nbytes / 1e6:.2f} MB sent and {1e3 * seconds:.0f} ms in MPI per training step "
                f"on this rank ({self.steps} steps)")


class Ranks:
    """The processes of one job (an MPI communicator), as the trainer sees them."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        self.traffic = Traffic()

    def agree(self, flag):
        """True on every rank when `flag` is True on at least one (a collective call)."""
        from mpi4py import MPI
        return bool(self.comm.allreduce(bool(flag), op=MPI.LOR))

    def stop_on_signals(self):
        return StopOnSignals(self)


class StopOnSignals:
    """Ctrl-C or SIGTERM on any rank stops every rank after the same step.

    mpiexec passes a Ctrl-C (SIGINT) and a SIGTERM on to every rank; a signal sent to one rank
    alone (`kill -TERM <pid>`) reaches that rank only. Either way the rank only notes it, and
    `requested`, read by every rank once per step, asks all of them at once (`agree`): then
    all stop after the same step and save one checkpoint together. A second Ctrl-C stops
    this rank at once (mpiexec itself aborts the job on a second Ctrl-C at its terminal).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)
    # what tinyalex.cli reads of the single-process tinyalex.trainer.StopOnSignals: every rank
    # stops as after a Ctrl-C (exit 130), whichever signal reached whichever rank
    exit_code, name = 130, "SIGINT"

    def __init__(self, ranks):
        self.ranks = ranks
        self.noted = False
        self.armed = False

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        if self.noted and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.noted = True

    @property
    def requested(self):
        """Whether any rank was asked to stop. A collective call: every rank reads it at the
        same point of every step (trainer.Run.train does, through its stop_requested)."""
        return self.ranks.agree(self.noted)

    def __exit__(self, *exc):
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        return False


def timed(traffic, name, nbytes, call):
    """Run an MPI call, adding its bytes and seconds to `traffic` under `name`."""
    start = time.perf_counter()
    result = call()
    traffic.add(name, nbytes, time.perf_counter() - start)
    return result
