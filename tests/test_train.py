"""End to end: train.py on small synthetic data, its files, exact resumption, Ctrl-C, bad input."""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tinyalex.checkpoint import load_checkpoint
from tinyalex.cli import train_main
from tinyalex.data.synthetic import write_cifar_batches
from tinyalex.trainer import Run

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_batches(str(root / "cifar-10-batches-py"), per_batch=24, n_test=20)   # 120 train
    return str(root)


def args(data, out, *extra):
    return ["--model", "tiny", "--data", data, "--data-dir", os.path.join(out, "cache"),
            "--val-size", "30", "--batch-size", "15", "--init", "he", "--lr", "0.02",
            "--out", out, "--no-progress", *extra]


def read_metrics(out):
    with open(os.path.join(out, "metrics.csv")) as f:
        return list(csv.DictReader(f))


def test_two_epochs_lower_the_loss_and_write_every_file(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert train_main(args(data, out, "--epochs", "2")) == 0
    for name in ("config.json", "metrics.csv", "curves.png", "last.npz", "best.npz", "test.json"):
        assert os.path.getsize(os.path.join(out, name)) > 0, name
    rows = read_metrics(out)
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert 0 <= float(rows[1]["val_acc"]) <= 1
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["model"] == "tiny" and config["epochs"] == 2 and config["batch_size"] == 15
    ckpt = load_checkpoint(os.path.join(out, "last.npz"), model_name="tiny")
    assert ckpt.meta["epoch"] == 2 and ckpt.meta["batch"] == 0 and len(ckpt.meta["metrics"]) == 2
    assert ckpt.meta["classes"][0] == "airplane" and ckpt.arrays["mean"].shape == (3,)
    test = json.load(open(os.path.join(out, "test.json")))
    assert 0 <= test["test_top1"] <= test["test_top5"] <= 1
    printed = capsys.readouterr().out
    assert "epoch   2/2" in printed and "test: top-1" in printed


def _config(data, out, epochs=2):
    from tinyalex.cli import train_parser
    a = train_parser().parse_args(args(data, out, "--epochs", str(epochs)))
    config = {k: v for k, v in vars(a).items() if k != "resume"}
    return config


def test_an_interrupted_run_resumed_equals_an_uninterrupted_one(data, tmp_path):
    whole = Run(_config(data, str(tmp_path / "a")), str(tmp_path / "a"), log=lambda s: None)
    os.makedirs(whole.out_dir)
    assert whole.train(show_progress=False) == "done"

    out = str(tmp_path / "b")
    os.makedirs(out)
    first = Run(_config(data, out), out, log=lambda s: None)
    # stop in the middle of the second epoch, as Ctrl-C would
    stop = lambda: first.progress.epoch == 1 and first.progress.batch == 3   # noqa: E731
    assert first.train(stop_requested=stop, show_progress=False) == "interrupted"
    resumed = Run(_config(data, out), out, resume_from=os.path.join(out, "last.npz"), log=lambda s: None)
    assert (resumed.progress.epoch, resumed.progress.batch) == (1, 3)
    assert resumed.train(show_progress=False) == "done"

    strip = lambda rows: [{k: v for k, v in r.items() if k not in ("seconds", "img_per_s")} for r in rows]  # noqa: E731
    assert strip(resumed.progress.metrics) == strip(whole.progress.metrics)
    for name, value in whole.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value, err_msg=name)
    for name, value in whole.sgd.state_dict().items():
        np.testing.assert_array_equal(resumed.sgd.state_dict()[name], value, err_msg=name)


def test_resume_through_the_command_line_finishes_the_run(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    first = Run(_config(data, out, epochs=2), out, log=lambda s: None)
    os.makedirs(out)
    from tinyalex.trainer import write_config
    write_config(out, first.config)
    first.train(stop_requested=lambda: first.progress.batch == 2, show_progress=False)
    assert train_main(["--resume", out, "--no-progress"]) == 0
    assert "resuming" in capsys.readouterr().out
    assert len(read_metrics(out)) == 2


def test_ctrl_c_saves_a_resumable_checkpoint_and_exits_cleanly(data, tmp_path):
    out = str(tmp_path / "run")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *args(data, out, "--epochs", "50")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    for line in proc.stdout:                      # wait until training has started
        if line.startswith("model:"):
            break
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert f"--resume {out}" in stderr
    ckpt = load_checkpoint(os.path.join(out, "last.npz"), model_name="tiny")
    assert ckpt.meta["epoch"] * 6 + ckpt.meta["batch"] >= 1      # at least one step was saved


def test_python_dash_m_tinyalex_train(data, tmp_path):
    out = str(tmp_path / "run")
    proc = subprocess.run([sys.executable, "-m", "tinyalex", "train", *args(data, out, "--epochs", "1")],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert len(read_metrics(out)) == 1


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "--batch-size: must be at least 1"),
    (["--lr", "-0.1"], "--lr: must be in (0"),
    (["--momentum", "1.5"], "--momentum: must be in [0"),
    (["--epochs", "two"], "--epochs: expected a whole number"),
])
def test_absurd_values_are_refused_by_the_parser(data, tmp_path, flags, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(args(data, str(tmp_path / "run"), *flags))
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def _error_of(argv, capsys):
    assert train_main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err
    return err


def test_bad_resumes_give_one_line_errors(data, tmp_path, capsys):
    missing = _error_of(["--resume", str(tmp_path / "nothing")], capsys).lower()
    assert "no such file" in missing or "not found" in missing or "does not exist" in missing
    corrupt = tmp_path / "corrupt.npz"
    corrupt.write_bytes(b"PK\x03\x04 not really a zip")
    _error_of(["--resume", str(corrupt)], capsys)
    out = str(tmp_path / "run")
    assert train_main(args(data, out, "--epochs", "1")) == 0
    capsys.readouterr()
    assert "--model paper differs" in _error_of(["--resume", out, "--model", "paper"], capsys)
    assert "already holds a run" in _error_of(args(data, out, "--epochs", "1"), capsys)


def test_plateau_without_validation_and_missing_data_are_refused(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    assert "--val-size" in _error_of(args(data, out, "--schedule", "plateau", "--val-size", "0"), capsys)
    assert "no such file" in _error_of(args(str(tmp_path / "missing"), out), capsys)


def test_a_diverging_loss_stops_the_run_with_a_clear_message(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    err = _error_of(args(data, out, "--epochs", "1", "--lr", "1e8", "--schedule", "step"), capsys)
    assert "the loss became" in err and "lower --lr" in err
    assert not os.path.exists(os.path.join(out, "last.npz"))   # nothing non-finite was saved


def test_limit_draws_a_seeded_sample_across_classes_not_the_first_images():
    from tinyalex.trainer import subset
    labels = np.repeat(np.arange(10), 100)                  # class by class, as image folders list them
    images = np.arange(1000)
    x, y = subset(images, labels, 50, seed=0, split="train")
    assert len(y) == 50 and len(np.unique(y)) >= 8           # the first 50 would be class 0 only
    assert np.all(np.diff(x) > 0) and np.array_equal(labels[x], y)   # original order, pairs kept
    again, _ = subset(images, labels, 50, seed=0, split="train")
    other, _ = subset(images, labels, 50, seed=1, split="train")
    assert np.array_equal(x, again) and not np.array_equal(x, other)
    assert subset(images, labels, None, 0, "val")[0] is images


def test_the_readable_route_trains_the_same_run(data, tmp_path):
    """`--impl readable` trains on layers/ itself: the same maths as the fast route, so the
    same run, to float32 rounding, and its choice is recorded in config.json."""
    rows = {}
    for impl in ("readable", "fast"):
        out = str(tmp_path / impl)
        assert train_main(args(data, out, "--epochs", "1", "--impl", impl)) == 0
        assert json.load(open(os.path.join(out, "config.json")))["impl"] == impl
        rows[impl] = read_metrics(out)[0]
    for field in ("train_loss", "val_loss"):
        assert float(rows["readable"][field]) == pytest.approx(float(rows["fast"][field]), rel=1e-4), field
