"""What a job of several processes gives the trainer, whichever way it splits the work.

`trainer.Run` takes a `processes` object: `processes.OneProcess` for one process, or
towers.Towers or data_parallel.DataParallel, both built on `Ranks` below, with the same
methods (tinyalex/processes.py lists them); rank 0 is the root.

Every rank runs the same loop on the same batches in the same order, so every collective call
(the exchanges, the Allreduce, `agree`) is met by all ranks at the same point.
"""

import contextlib
import os
import select
import signal
import sys
import threading
import time
from collections import defaultdict

from .. import processes
from ..errors import TinyAlexError

# After a Ctrl-C or SIGTERM, the seconds a rank waits for the others before it aborts the job
STOP_SECONDS_VARIABLE, STOP_SECONDS = "TINYALEX_MPI_STOP_SECONDS", 120.0


class Traffic:
    """Bytes sent and seconds spent in MPI, per named exchange (e.g. "into_conv3"). The
    seconds are wall time inside the MPI call, so they include waiting for the other rank."""

    def __init__(self):
        self.bytes = defaultdict(int)
        self.seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self.steps = 0          # training steps (set by the model), to quote figures per step
        self.last = time.monotonic()    # when the last exchange ended (StopWatchdog reads it)

    def add(self, name, nbytes, seconds):
        self.bytes[name] += int(nbytes)
        self.seconds[name] += float(seconds)
        self.calls[name] += 1
        self.last = time.monotonic()

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
    """The processes of one job (an MPI communicator), as the trainer sees them: the methods of
    processes.OneProcess (`wrap`, `full_state` and `local_checkpoint` are the subclasses':
    the towers' or data parallelism's), `agree` a collective call."""

    def __init__(self, comm):
        self.comm = comm
        self.rank = comm.Get_rank()
        self.size = comm.Get_size()
        self.is_root = self.rank == 0
        self.traffic = Traffic()

    def agree(self, flag):
        """True on every rank when `flag` is True on at least one (a collective call)."""
        from mpi4py import MPI
        agreed = bool(self.comm.allreduce(bool(flag), op=MPI.LOR))
        self.traffic.last = time.monotonic()
        return agreed

    def stop_on_signals(self):
        return StopOnSignals(self)


class StopOnSignals(processes.StopOnSignals):
    """Ctrl-C or SIGTERM on any rank stops every rank after the same step.

    mpiexec passes a Ctrl-C (SIGINT) and a SIGTERM on to every rank; a signal sent to one rank
    alone (`kill -TERM <pid>`) reaches that rank only. Either way the rank only notes it, and
    `requested`, read by every rank once per step, asks all of them at once (`agree`): then
    all stop after the same step and save one checkpoint together. A second Ctrl-C stops
    this rank at once (mpiexec itself aborts the job on a second Ctrl-C at its terminal).
    A rank that never answers (stopped, hung) cannot hold the others for ever: StopWatchdog.
    """

    # every rank stops as after a Ctrl-C (exit 130), whichever signal reached whichever rank
    exit_code, name = 130, "SIGINT"

    def _handle(self, signum, frame):
        if self.received is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.received = signum

    def __enter__(self):
        seconds = stop_seconds()
        super().__enter__()
        self.watchdog = StopWatchdog(self.processes, seconds, self.exit_code)
        return self

    def __exit__(self, *exc):
        self.watchdog.close()
        return super().__exit__(*exc)


def stop_seconds():
    """TINYALEX_MPI_STOP_SECONDS, else STOP_SECONDS."""
    text = os.environ.get(STOP_SECONDS_VARIABLE, "").strip()
    try:
        seconds = float(text) if text else STOP_SECONDS
    except ValueError:
        seconds = -1.0
    if not seconds > 0:
        raise TinyAlexError(f"{STOP_SECONDS_VARIABLE}={text!r}: give the seconds a rank waits for "
                            f"the others after a Ctrl-C or SIGTERM, a number > 0 (unset: {STOP_SECONDS:g})")
    return seconds


class StopWatchdog:
    """The bound on a stop: once a signal has reached this rank, if no exchange with the other
    ranks ends for `seconds` (one of them is stopped with kill -STOP, or hung), this rank
    aborts the whole job (MPI_Abort): the last checkpoint stays as it was.

    The rank's main thread may itself be blocked in an exchange that never ends, where Python
    runs no signal handler; so a thread watches the signals through `signal.set_wakeup_fd`,
    to which the C handler writes each signal's number at once. A job with no signal waits
    for a stopped rank (kill -CONT resumes it): stopping a rank pauses the job.
    """

    def __init__(self, ranks, seconds, exit_code):
        self.ranks, self.seconds, self.exit_code = ranks, seconds, exit_code
        self._read, self._write = os.pipe()
        os.set_blocking(self._write, False)
        self._previous = signal.set_wakeup_fd(self._write, warn_on_full_buffer=False)
        self._closed = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="tinyalex-stop-watchdog", daemon=True)
        self._thread.start()

    def _next_signal(self):
        """The number of the first SIGINT or SIGTERM to reach this process; None once closed."""
        while True:
            select.select([self._read], [], [])
            if self._closed.is_set():
                return None
            signum = os.read(self._read, 1)[0]
            if signum in StopOnSignals.SIGNALS:
                return signum

    def _watch(self):
        signum, since = self._next_signal(), time.monotonic()
        if signum is None:
            return
        while not self._closed.wait(min(1.0, self.seconds / 4)):
            if time.monotonic() - max(since, self.ranks.traffic.last) > self.seconds:
                name = signal.Signals(signum).name
                print(f"stopped by {name}: no exchange between the ranks ended for {self.seconds:g} s "
                      f"(a rank stopped or hung); aborting the job (rank {self.ranks.rank}), the "
                      f"last checkpoint stays as it was", file=sys.__stderr__, flush=True)
                self.ranks.comm.Abort(self.exit_code)

    def close(self):
        self._closed.set()
        with contextlib.suppress(BlockingIOError):   # (a full pipe wakes it as well)
            os.write(self._write, b"\0")              # wakes the thread if no signal came
        self._thread.join()
        signal.set_wakeup_fd(self._previous)
        os.close(self._read)
        os.close(self._write)


def timed(traffic, name, nbytes, call):
    """Run an MPI call, adding its bytes and seconds to `traffic` under `name`."""
    start = time.perf_counter()
    result = call()
    traffic.add(name, nbytes, time.perf_counter() - start)
    return result
