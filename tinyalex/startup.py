"""How every entry point starts (`python train.py`, `python -m tinyalex ...`, `python
gradcheck.py`): Ctrl-C (SIGINT) and SIGTERM wait until the command's modules have loaded.

A signal handled while NumPy, Numba or llvmlite import can do worse than stop the import:
inside a C extension's set-up the KeyboardInterrupt becomes an ImportError ("numba._devicearray
failed to import", a long traceback), inside a callback from C it can be swallowed (the run
then trains to its end), and SIGTERM, with no handler yet, kills the process without a word.
So `run` first blocks both signals in the main thread (the threads the libraries start
meanwhile inherit the block, so the signal can only go to the main thread; nothing starts a
child process then, which would inherit it too). The command line calls `release()` once the
command's modules are loaded: it installs handlers that raise `Stopped`, then unblocks, and a
signal that came meanwhile is raised there, where Python stops cleanly. The command then ends
with one line, `interrupted` (exit status 130) or `stopped by SIGTERM` (143), unless it has
handlers of its own (train's saves first: tinyalex/processes.py). A signal ignored when the
process started stays ignored. Without signal masks (Windows) the signals are noted while
held and raised by `release()`.

This module imports only the standard library, so that the entry points can call it first.
"""

import importlib
import signal
import sys

SIGNALS = (signal.SIGINT, signal.SIGTERM)
MASKS = hasattr(signal, "pthread_sigmask")      # not on Windows
_held = False
_noted = []           # without masks: the signals received while held


class Stopped(KeyboardInterrupt):
    """SIGINT or SIGTERM, raised by the handlers `release()` installs."""

    def __init__(self, signum):
        super().__init__(signum)
        self.signum = signum


def exit_code(interrupt):
    """The shell's exit status for a KeyboardInterrupt: 130 for SIGINT, 143 for SIGTERM."""
    return 128 + getattr(interrupt, "signum", signal.SIGINT)


def describe(name):
    """What a command stopped by the signal `name` says: `interrupted` for SIGINT, `stopped by
    SIGTERM` for SIGTERM."""
    return "interrupted" if name == "SIGINT" else f"stopped by {name}"


def report(interrupt):
    """Print the one line of a command a signal stopped; returns its exit status."""
    print(describe(signal.Signals(getattr(interrupt, "signum", signal.SIGINT)).name), file=sys.stderr)
    return exit_code(interrupt)


def _raise(signum, frame):
    raise Stopped(signum)


def _handle(handler):
    for s in SIGNALS:
        if signal.getsignal(s) is not signal.SIG_IGN:
            signal.signal(s, handler)


def hold():
    """Block SIGINT and SIGTERM in this thread and in the threads it will start."""
    global _held
    _held = True
    if MASKS:
        signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    else:
        _handle(lambda signum, frame: _noted.append(signum))


def release():
    """After `hold()` (else nothing): from now on SIGINT and SIGTERM raise `Stopped`; one that
    came while held is raised here."""
    global _held
    if not _held:
        return
    _held = False
    _handle(_raise)
    if MASKS:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, SIGNALS)   # a pending signal raises here
    elif _noted:
        raise Stopped(_noted[0])


def main():
    """The `tinyalex` command (pyproject.toml's console script): `python -m tinyalex`, started
    the same way."""
    return run("tinyalex.cli", "main")


def run(module, function):
    """An entry point: `function()` of `module` (which calls `release()` when its modules are
    loaded), with SIGINT and SIGTERM held until then; returns its exit status."""
    hold()
    try:
        try:
            return getattr(importlib.import_module(module), function)()
        finally:
            release()       # if it had not: the signals are never left blocked
    except KeyboardInterrupt as e:
        return report(e)
