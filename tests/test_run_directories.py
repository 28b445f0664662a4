"""The run-directory rule (tinyalex/rundir.py) under the cases a hostile run found: two runs
racing for one new directory, failures that left directories or a lock behind, a run killed
before its first checkpoint, empty paths, and torch-train, which keeps the same rule."""

import errno
import json
import multiprocessing
import os
import time

import pytest

from tinyalex import outfiles
from tinyalex.cli import main, train_main
from tinyalex.rundir import LOCK, RunDir, RunDirError


def train_args(data, out, *extra, cache):
    return ["--model", "tiny", "--data", data, "--data-dir", cache, "--val-size", "30",
            "--batch-size", "15", "--epochs", "1", "--out", out, "--no-progress", *extra]


def one_line(capsys):
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    return err


# --- the start-up race ------------------------------------------------------------------------

def test_the_run_that_loses_the_lock_removes_nothing_of_the_winner(tmp_path):
    """Forced interleaving: A makes the new directory, B takes the lock, A finds it taken."""
    out = str(tmp_path / "new")
    a, b = RunDir(out), RunDir(out)
    make_dirs = a._make_dirs

    def make_then_lose():
        make_dirs()                 # A made the directory ...
        b.__enter__()               # ... and B, started at the same moment, locked it
    a._make_dirs = make_then_lose
    with pytest.raises(RunDirError, match="is in use by another tinyalex run"):
        a.__enter__()
    assert a.made == [out]                                  # A made it, and yet:
    assert os.path.exists(os.path.join(out, LOCK))          # the winner's lock is still there
    outfiles.atomic_write(os.path.join(out, "config.json"), lambda f: f.write(b"{}"))
    with pytest.raises(RunDirError, match="is in use"):     # and still keeps a third run out
        RunDir(out).__enter__()
    b.__exit__(None, None, None)
    assert os.listdir(out) == ["config.json"]


def _race(out, barrier, results):
    barrier.wait()
    try:
        with RunDir(out, log=lambda *a: None) as run_dir:
            run_dir.check_new()
            outfiles.atomic_write(os.path.join(out, "config.json"), lambda f: f.write(b"{}"))
            time.sleep(0.05)
            results.put("won" if os.path.exists(os.path.join(out, "config.json")) else "lost its files")
    except RunDirError:
        results.put("refused")
    except Exception as e:          # noqa: BLE001 (a crash of the winner is what is tested)
        results.put(f"crashed: {e!r}")


def test_runs_started_at_the_same_instant_on_a_new_directory(tmp_path):
    """Two processes released by one barrier, many times: one trains, the other is refused,
    and the winner's directory and files survive."""
    ctx = multiprocessing.get_context("fork")
    for i in range(25):
        out = str(tmp_path / f"run{i}" / "new")
        barrier, results = ctx.Barrier(2), ctx.Queue()
        procs = [ctx.Process(target=_race, args=(out, barrier, results)) for _ in range(2)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(30)
        got = sorted(results.get(timeout=5) for _ in procs)
        assert got in (["refused", "won"], ["won", "won"]), (i, got)   # both won: one after the other
        assert os.listdir(out) == ["config.json"], (i, os.listdir(out))


# --- what a failure leaves --------------------------------------------------------------------

def test_a_failed_run_removes_every_directory_it_made(tmp_path, monkeypatch, capsys):
    missing = str(tmp_path / "no-data")
    deep = str(tmp_path / "a" / "b" / "c" / "d")
    assert train_main(train_args(missing, deep, cache=str(tmp_path / "cache"))) == 2
    one_line(capsys)
    assert not os.path.exists(tmp_path / "a")
    monkeypatch.chdir(tmp_path)                     # the default --out, runs/<model>-<time>
    argv = [a for a in train_args(missing, "x", cache=str(tmp_path / "cache")) if a not in ("--out", "x")]
    assert train_main(argv) == 2
    one_line(capsys)
    assert not os.path.exists(tmp_path / "runs")
    kept = tmp_path / "mine" / "deeper"             # a parent the user made stays
    (tmp_path / "mine").mkdir()
    assert train_main(train_args(missing, str(kept), cache=str(tmp_path / "cache"))) == 2
    assert os.listdir(tmp_path / "mine") == []


def test_a_full_disk_while_the_lock_is_taken_leaves_no_lock(tmp_path, monkeypatch):
    out = str(tmp_path / "run")
    real_write = os.write

    def full(fd, data):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(os, "write", full)
    with pytest.raises(OSError, match="No space left"):
        with RunDir(out):
            monkeypatch.setattr(os, "write", real_write)
            raise OSError(errno.ENOSPC, "No space left on device")   # as config.json would
    assert not os.path.exists(out)


def test_a_run_killed_before_its_first_checkpoint_does_not_block_its_directory(data, tmp_path, capsys):
    out = str(tmp_path / "killed")
    os.makedirs(out)
    with open(os.path.join(out, "config.json"), "w") as f:   # all that kill -9 left
        json.dump({"model": "tiny", "run_id": "0" * 32}, f)
    assert train_main(["--resume", out, "--no-progress"]) == 2
    err = one_line(capsys)
    assert "stopped before its first checkpoint" in err and f"start it again with --out {out}" in err
    assert train_main(train_args(data, out, cache=str(tmp_path / "cache"))) == 0
    said = capsys.readouterr().out
    assert f"removed {out}/config.json, left by a run stopped before its first checkpoint" in said
    assert json.load(open(os.path.join(out, "config.json")))["run_id"] != "0" * 32
    assert os.path.exists(os.path.join(out, "last.npz"))


def test_an_empty_path_is_a_usage_error_not_the_default(data, tmp_path, capsys):
    for argv in (["--out", ""], ["--resume", ""], ["--data", " "]):
        with pytest.raises(SystemExit) as stop:
            train_main(["--model", "tiny", *argv])
        assert stop.value.code == 2
        assert "an empty path" in capsys.readouterr().err


def test_an_unwritable_file_is_named_not_its_temporary(tmp_path, monkeypatch):
    path = str(tmp_path / "metrics.csv")

    def refuse(prefix, suffix, dir):
        raise PermissionError(errno.EACCES, "Permission denied", os.path.join(dir, prefix + "x1" + suffix))
    monkeypatch.setattr(outfiles.tempfile, "mkstemp", refuse)
    with pytest.raises(PermissionError) as e:
        outfiles.atomic_write(path, lambda f: f.write(b"x"))
    assert e.value.filename == path
    assert os.listdir(tmp_path) == []


# --- torch-train keeps the same rule ------------------------------------------------------------

def torch_args(data, out, tmp_path):
    return ["torch-train", "--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
            "--val-size", "30", "--batch-size", "15", "--epochs", "1", "--out", out,
            "--no-progress", "--threads", "1"]


def test_torch_train_never_writes_into_another_run(data, tmp_path, capsys):
    pytest.importorskip("torch")
    run = tmp_path / "a-train-run"
    run.mkdir()
    for name in ("config.json", "metrics.csv", "curves.png", "last.npz"):
        (run / name).write_bytes(b"the run's own " + name.encode())
    before = {p.name: p.read_bytes() for p in run.iterdir()}
    assert main(torch_args(data, str(run), tmp_path)) == 2
    assert "already holds a run" in one_line(capsys)
    assert {p.name: p.read_bytes() for p in run.iterdir()} == before
    (tmp_path / "a-file").write_text("x")
    for out, words in [(str(tmp_path / "a-file"), "is a file, not a directory"),
                       (str(tmp_path / "a-file" / "sub"), "Not a directory")]:
        assert main(torch_args(data, out, tmp_path)) == 2
        assert words in one_line(capsys)
    busy = str(tmp_path / "busy")
    with RunDir(busy):
        assert main(torch_args(data, busy, tmp_path)) == 2
        assert "is in use by another tinyalex run" in one_line(capsys)


def test_torch_train_that_fails_before_its_first_epoch_leaves_nothing(data, tmp_path, capsys, monkeypatch):
    pytest.importorskip("torch")
    from tinyalex import torch_train
    out = str(tmp_path / "runs" / "torch")

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(torch_train, "_train", interrupted)
    assert main(torch_args(data, out, tmp_path)) == 130
    assert not os.path.exists(tmp_path / "runs")
    monkeypatch.undo()
    assert main(torch_args(data, out, tmp_path)) == 0            # and a whole epoch is kept
    assert sorted(os.listdir(out)) == ["curves.png", "metrics.csv"]
