"""Ctrl-C and SIGTERM while a command starts (tinyalex/startup.py): one line, exit 130 or 143.

Not by timing: each case runs a real entry point in a subprocess whose import system sends the
signal to the process itself at a chosen import (a `sys.meta_path` finder installed by a
sitecustomize.py the test writes), so the signal lands at that exact point of the start-up,
however loaded the machine. Were it lost, the command would run to its end and exit 0.
"""

import os
import signal
import subprocess
import sys

import pytest

from tinyalex import startup
from tinyalex.model import build_model
from trained_tiny import write_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SIGNAL_ON_IMPORT = '''
import os, signal, sys


class SignalOnImport:
    """Sends TEST_SIGNAL to this process when TEST_MODULE is first imported."""

    def find_spec(self, name, path=None, target=None):
        if name == os.environ["TEST_MODULE"]:
            sys.meta_path.remove(self)
            open(os.environ["TEST_SENT"], "w").close()
            os.kill(os.getpid(), getattr(signal, os.environ["TEST_SIGNAL"]))
        return None


sys.meta_path.insert(0, SignalOnImport())
'''

# (entry point, the module whose import the signal lands in, the signal), in import order
CASES = [
    ("train.py", "tinyalex.cli", "SIGINT"),                   # the entry point's first import
    ("train.py", "numpy.linalg._umath_linalg", "SIGTERM"),    # a C extension of NumPy's
    ("train.py", "llvmlite.binding", "SIGTERM"),              # LLVM's library loads
    ("train.py", "numba._devicearray", "SIGINT"),             # was a 40-line ImportError
    ("train.py", "tinyalex.train_command", "SIGINT"),         # the last of train's modules
    ("-m tinyalex train", "numba.core.typing", "SIGTERM"),
    ("-m tinyalex evaluate", "numba._devicearray", "SIGTERM"),
    ("-m tinyalex evaluate", "tinyalex.evaluate", "SIGINT"),
    ("gradcheck.py", "layers.fast", "SIGINT"),
]
LINE = {"SIGINT": ("interrupted\n", 130), "SIGTERM": ("stopped by SIGTERM\n", 143)}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("checkpoint") / "tiny.npz"
    return write_checkpoint(path, build_model("tiny", 10, init="he", seed=0))


def command(entry, data, checkpoint, tmp_path):
    """The command line of `entry`: each would run to its end (exit 0) in a few seconds."""
    if entry == "gradcheck.py":
        return ["gradcheck.py", "--route", "readable", "--layer", "relu"]
    if entry == "-m tinyalex evaluate":
        return ["-m", "tinyalex", "evaluate", checkpoint, "--data", data, "--data-dir", str(tmp_path / "cache")]
    train = ["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"), "--val-size", "30",
             "--batch-size", "15", "--epochs", "1", "--out", str(tmp_path / "run"), "--no-progress"]
    return ["train.py", *train] if entry == "train.py" else ["-m", "tinyalex", "train", *train]


@pytest.mark.parametrize("entry, module, sig", CASES)
def test_a_signal_at_start_up_ends_the_command_with_one_line(data, checkpoint, tmp_path, entry, module, sig):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SIGNAL_ON_IMPORT)
    sent = tmp_path / "sent"
    env = dict(os.environ, TEST_MODULE=module, TEST_SIGNAL=sig, TEST_SENT=str(sent),
               PYTHONPATH=os.pathsep.join(filter(None, [str(hook), os.environ.get("PYTHONPATH")])))
    proc = subprocess.Popen([sys.executable, *command(entry, data, checkpoint, tmp_path)], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    line, code = LINE[sig]
    assert sent.exists(), f"{module} was not imported"
    assert (proc.returncode, err) == (code, line)
    assert not (tmp_path / "run").exists()


def test_release_without_hold_changes_no_handler():
    before = [signal.getsignal(s) for s in startup.SIGNALS]
    startup.release()
    assert [signal.getsignal(s) for s in startup.SIGNALS] == before


def test_without_signal_masks_a_held_signal_is_raised_at_release(monkeypatch):
    """Windows has no signal masks: the signal is noted while held, raised by release()."""
    monkeypatch.setattr(startup, "MASKS", False)
    monkeypatch.setattr(startup, "_noted", [])
    previous = {s: signal.getsignal(s) for s in startup.SIGNALS}
    try:
        startup.hold()
        os.kill(os.getpid(), signal.SIGTERM)       # noted: nothing is raised here
        with pytest.raises(startup.Stopped) as stopped:
            startup.release()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    assert stopped.value.signum == signal.SIGTERM and startup.exit_code(stopped.value) == 143
