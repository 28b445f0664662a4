"""The processes a run trains on, as `trainer.Run` sees them: this one alone (`OneProcess`),
or an MPI job (`tinyalex/mpi/ranks.py`: towers or data parallel), with the same methods:

    wrap(model)                  the model the loop trains: the model itself here; on MPI this
                                 rank's tower, or a wrapper that shards every batch
    full_state(params, optim)    the whole model and optimizer state, for a checkpoint, on the
                                 root (None elsewhere): every process calls it, the root writes
    local_checkpoint(ckpt)       an ordinary single-process checkpoint cut to this share
    agree(flag)                  True on every process if it is True on any (save now? stop?)
    stop_on_signals()            the context that turns Ctrl-C and SIGTERM into a clean stop
    is_root                      the one process that writes files, logs and the progress bar
"""

import signal


class OneProcess:
    """A run on this process alone: it holds the whole model and writes everything."""

    is_root = True

    def wrap(self, model):
        return model

    def full_state(self, params, optimizer):
        return params, optimizer

    def local_checkpoint(self, ckpt):
        return ckpt

    def agree(self, flag):
        return bool(flag)

    def stop_on_signals(self):
        return StopOnSignals(self)


class StopOnSignals:
    """Ctrl-C (SIGINT) and SIGTERM (kill, timeout, a batch scheduler, a closing terminal).

    While `armed` (the training loop looks at `requested` after every step), the first
    signal asks it to finish the step, save and stop. Otherwise, or at a second signal,
    KeyboardInterrupt is raised at once, as Ctrl-C does by default. `exit_code` is the
    shell's for the first signal received: 130 for SIGINT, 143 for SIGTERM.
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, processes):
        self.processes = processes
        self.received = None
        self.armed = False

    @property
    def requested(self):
        """Whether a stop was asked for (on any process: a collective call under MPI, which every
        process makes at the same point of every step)."""
        return self.processes.agree(self.received is not None)

    @property
    def exit_code(self):
        return 128 + (self.received or signal.SIGINT)

    @property
    def name(self):
        return signal.Signals(self.received or signal.SIGINT).name

    def __enter__(self):
        self._previous = {s: signal.signal(s, self._handle) for s in self.SIGNALS}
        return self

    def _handle(self, signum, frame):
        first = self.received is None
        if first:
            self.received = signum
        if not (first and self.armed):
            raise KeyboardInterrupt

    def __exit__(self, *exc):
        for s, handler in self._previous.items():
            signal.signal(s, handler)
        return False
