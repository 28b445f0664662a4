"""Nothing lost, nothing hangs: run directories, signals, hand-edited checkpoints and NaN.

Each test is named by the behaviour it holds. Runs use the tiny model on 120 synthetic
images, one or two epochs of a few steps.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from tinyalex import cli, options
from tinyalex.checkpoint import load_checkpoint, read_meta
from tinyalex.cli import train_main
from tinyalex.data import BatchLoader
from tinyalex.data.synthetic import write_cifar_batches, write_image_folder
from tinyalex.rundir import RunDir
from tinyalex.scoring import score_loader
from tinyalex.trainer import Run, write_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("data-dir"))


def args(data, out, *extra, data_dir=None):
    return ["--model", "tiny", "--data", data, "--data-dir", data_dir or os.path.join(out, "cache"),
            "--val-size", "30", "--batch-size", "15", "--init", "he", "--lr", "0.02",
            "--out", out, "--no-progress", *extra]


def train_quietly(argv, capsys):
    """train_main(argv) -> (exit code, stdout, stderr)."""
    code = train_main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, *words):
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for w in words:
        assert w in err, err


def snapshot(directory):
    """{name: bytes} of the files in a directory: to show nothing in it changed."""
    return {n: open(os.path.join(directory, n), "rb").read() for n in sorted(os.listdir(directory))
            if os.path.isfile(os.path.join(directory, n))}


def interrupted(data, out, epochs=2, epoch=1, batch=2, data_dir=None):
    """A run stopped as by Ctrl-C at `batch` of epoch `epoch` + 1, with its config.json."""
    config = {k: v for k, v in vars(options.train_parser().parse_args(
        args(data, out, "--epochs", str(epochs), data_dir=data_dir))).items() if k != "resume"}
    config["run_id"] = f"run-{os.path.basename(out)}"
    os.makedirs(out)
    run = Run(config, out, log=lambda s: None)
    write_config(out, config)
    stop = lambda: (run.progress.epoch, run.progress.batch) == (epoch, batch)   # noqa: E731
    assert run.train(stop_requested=stop, show_progress=False) == "interrupted"
    return run


@pytest.fixture(scope="module")
def finished(data, data_dir, tmp_path_factory):
    """runs/A: a finished two-epoch run, made through the command line."""
    out = str(tmp_path_factory.mktemp("runs") / "A")
    assert train_main(args(data, out, "--epochs", "2", data_dir=data_dir)) == 0
    return out


def copy_run(source, target):
    os.makedirs(target)
    for name, content in snapshot(source).items():
        with open(os.path.join(target, name), "wb") as f:
            f.write(content)
    return target


# --- 1-4: results overwritten without a word -----------------------------------------------

def test_resume_with_out_pointing_at_another_run_is_refused(data, data_dir, finished, tmp_path, capsys):
    other = copy_run(finished, str(tmp_path / "C"))
    before = snapshot(other)
    interrupted(data, str(tmp_path / "D"), data_dir=data_dir)
    code, _, err = train_quietly(["--resume", str(tmp_path / "D"), "--out", other, "--no-progress"], capsys)
    one_line_error(code, err, f"{other} holds another run", "last.npz", "drop --out")
    assert snapshot(other) == before


def test_resume_with_a_new_out_starts_a_new_run_directory(data, data_dir, tmp_path, capsys):
    interrupted(data, str(tmp_path / "D"), data_dir=data_dir)
    new = str(tmp_path / "E")
    code, _, err = train_quietly(["--resume", str(tmp_path / "D"), "--out", new, "--no-progress"], capsys)
    assert code == 0, err
    config = json.load(open(os.path.join(new, "config.json")))
    assert config["out"] == new and config["resumed_from"].endswith(os.path.join("D", "last.npz"))
    assert config["run_id"] != "run-D"                       # a run of its own from here on
    assert read_meta(os.path.join(new, "last.npz"))["config"]["run_id"] == config["run_id"]
    assert read_meta(os.path.join(str(tmp_path / "D"), "last.npz"))["epoch"] == 1   # D untouched


def test_a_new_run_into_a_directory_of_run_files_without_last_npz_is_refused(data, finished, tmp_path, capsys):
    out = str(tmp_path / "E")
    os.makedirs(out)
    for name in ("best.npz", "metrics.csv", "config.json"):
        with open(os.path.join(finished, name), "rb") as f, open(os.path.join(out, name), "wb") as g:
            g.write(f.read())
    before = snapshot(out)
    code, _, err = train_quietly(args(data, out, "--epochs", "1"), capsys)
    one_line_error(code, err, f"{out} already holds files of a run (config.json, metrics.csv, best.npz)",
                   "choose another --out")
    assert snapshot(out) == before


def test_resuming_an_earlier_state_in_place_is_refused(data, data_dir, tmp_path, capsys):
    out = str(tmp_path / "A")
    assert train_main(args(data, out, "--epochs", "2", data_dir=data_dir)) == 0
    capsys.readouterr()
    # best.npz as an earlier state: the same run's last.npz at the end of epoch 1
    config = json.load(open(os.path.join(out, "config.json")))
    config.pop("tinyalex_version")
    again = str(tmp_path / "again")
    os.makedirs(again)

    def keep_epoch_1(line):
        if line.startswith("epoch   1/2"):
            os.replace(os.path.join(again, "last.npz"), os.path.join(out, "best.npz"))
    Run(config, again, log=keep_epoch_1).train(show_progress=False)
    meta = read_meta(os.path.join(out, "best.npz"))
    assert (meta["epoch"], meta["batch"], meta["config"]["run_id"]) == (1, 0, config["run_id"])
    before = snapshot(out)
    code, _, err = train_quietly(["--resume", os.path.join(out, "best.npz"), "--no-progress"], capsys)
    one_line_error(code, err, "is an earlier state (the end of epoch 1)",
                   "last.npz is at the end of epoch 2", f"--resume {out}", "new --out")
    assert snapshot(out) == before
    # what the message offers: a new run directory from that state
    code, _, err = train_quietly(["--resume", os.path.join(out, "best.npz"), "--out",
                                  str(tmp_path / "B"), "--no-progress"], capsys)
    assert code == 0, err
    assert [r["epoch"] for r in csv.DictReader(open(tmp_path / "B" / "metrics.csv"))] == ["1", "2"]


def test_a_second_run_in_a_directory_in_use_is_refused(data, tmp_path, capsys):
    out = str(tmp_path / "P")
    with RunDir(out):                                      # another run holds the lock
        code, _, err = train_quietly(args(data, out, "--epochs", "1"), capsys)
    one_line_error(code, err, f"{out} is in use by another tinyalex run (process {os.getpid()})")
    assert os.listdir(out) == []           # the second run wrote nothing


def test_two_runs_started_together(data, data_dir, tmp_path):
    out = str(tmp_path / "P")
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *args(data, out, "--epochs", "2",
                                                                  data_dir=data_dir)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(code for _, _, code in results)
    assert codes == [0, 2], results
    loser = next(err for _, err, code in results if code == 2)
    assert loser.startswith("error: ") and loser.count("\n") == 1
    assert ("is in use by another tinyalex run" in loser or "already holds a run" in loser), loser
    assert len(list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))) == 2


# --- 6, 7, 8: crashes at the start ----------------------------------------------------------

def test_out_that_is_a_file_under_a_file_or_read_only(data, tmp_path, capsys, unwritable_dir):
    (tmp_path / "a-file").write_text("x")
    missing_data = str(tmp_path / "no-data")         # the run directory is checked first
    for out, words in [(str(tmp_path / "a-file"), "is a file, not a directory"),
                       (str(tmp_path / "a-file" / "run"), "Not a directory"),
                       (unwritable_dir, f"cannot write to --out {unwritable_dir}")]:
        code, _, err = train_quietly(args(missing_data, out, data_dir=str(tmp_path / "dd")), capsys)
        one_line_error(code, err, words, "choose another --out")


def test_resume_on_other_images_is_refused(data, data_dir, tmp_path, capsys):
    smaller, other = str(tmp_path / "smaller"), str(tmp_path / "other")
    write_cifar_batches(os.path.join(smaller, "cifar-10-batches-py"), per_batch=12, n_test=20)
    write_cifar_batches(os.path.join(other, "cifar-10-batches-py"), per_batch=24, n_test=20, seed=5)
    out = str(tmp_path / "D")
    interrupted(data, out, epochs=2, epoch=1, batch=5, data_dir=data_dir)
    before = snapshot(out)
    for images, counts in [(smaller, "(30 / 30"), (other, "(90 / 30")]:
        code, _, err = train_quietly(["--resume", out, "--data", images, "--no-progress"], capsys)
        one_line_error(code, err, "was trained on other images (90 train / 30 val", counts,
                       f"--data {data}")
    assert snapshot(out) == before
    code, _, err = train_quietly(["--resume", out, "--no-progress"], capsys)     # the same images
    assert code == 0, err


def test_a_negative_seed_is_a_usage_error(data, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_main(args(data, str(tmp_path / "run"), "--seed", "-1"))
    assert exit_info.value.code == 2
    assert "--seed: must be at least 0, got -1" in capsys.readouterr().err


# --- 9: one validation path for resume, evaluate, predict and filters -----------------------

def edited(source, target, change):
    """A copy of checkpoint `source` with `change(entries, meta)` applied, as a hand edit would."""
    with np.load(source) as z:
        entries = {k: z[k] for k in z.files}
    meta = json.loads(entries["meta"].item())
    change(entries, meta)
    entries["meta"] = np.array(json.dumps(meta))
    with open(target, "wb") as f:
        np.savez(f, **entries)
    return target


MODEL_EDITS = {   # what every command refuses, and the words it says
    "classes not a list": (lambda e, m: m.update(classes=5), "distinct class names"),
    "a class twice": (lambda e, m: m["classes"].__setitem__(1, m["classes"][0]), "distinct class names"),
    "NaN weight": (lambda e, m: e["param/conv1.w"].__setitem__(0, np.nan), "conv1.w contains NaN"),
    "integer weights": (lambda e, m: e.update({"param/fc8.b": e["param/fc8.b"].astype(np.int32)}),
                        "fc8.b has dtype int32"),
    "no model": (lambda e, m: m.pop("model"), "holds model None"),
    "no normalisation": (lambda e, m: e.pop("array/std"), "no array/std"),
}
TRAINING_EDITS = {   # what only a resume needs, and refuses
    "no config": (lambda e, m: m.pop("config"), "'config' is None"),
    "epoch a string": (lambda e, m: m.update(epoch="x"), "'epoch' is 'x'"),
    "no running sums": (lambda e, m: m.pop("running"), "'running' is None"),
    "no schedule": (lambda e, m: m.update(schedule=None), "'schedule' is None"),
    "NaN schedule": (lambda e, m: m["schedule"].update(peak=float("nan")), "not an object of finite numbers"),
    "metrics not a list": (lambda e, m: m.update(metrics=3), "'metrics' should hold a row"),
    "batch a string": (lambda e, m: m["config"].update(batch_size="15"), "--batch-size '15'"),
    "no seed": (lambda e, m: m["config"].pop("seed"), "its config has no --seed"),
    "negative seed": (lambda e, m: m["config"].update(seed=-3), "--seed -3"),
    "batch beyond the epoch": (lambda e, m: m.update(batch=99), "outside this run's 2 epochs of 6 batches"),
    "NaN velocity": (lambda e, m: e["optim/fc8.b"].__setitem__(0, np.inf), "optimizer state of fc8.b"),
    "no PCA": (lambda e, m: e.pop("array/pca_eigvec"), "no array/pca_eigvec"),
}


@pytest.fixture(scope="module")
def paused(data, data_dir, tmp_path_factory):
    """The last.npz of a run stopped mid-way, and an image to predict."""
    out = str(tmp_path_factory.mktemp("paused") / "D")
    interrupted(data, out, data_dir=data_dir)
    picture = str(tmp_path_factory.mktemp("pictures") / "one")
    write_image_folder(picture, per_class=1, split=None)
    return {"last": os.path.join(out, "last.npz"), "data_dir": data_dir,
            "image": os.path.join(picture, "airplane", "0000.png")}


def _commands(path, paused, data, tmp_path):
    return {"resume": lambda: train_main(["--resume", path, "--out", str(tmp_path / "new"), "--no-progress"]),
            "evaluate": lambda: cli.main(["evaluate", path, "--data", data, "--data-dir", paused["data_dir"]]),
            "predict": lambda: cli.main(["predict", path, paused["image"]]),
            "filters": lambda: cli.main(["filters", path, "--out", str(tmp_path / "f.png")])}


@pytest.mark.parametrize("edit", MODEL_EDITS)
def test_a_hand_edited_checkpoint_gets_the_same_error_from_every_command(paused, data, tmp_path, capsys, edit):
    change, words = MODEL_EDITS[edit]
    path = edited(paused["last"], str(tmp_path / "edited.npz"), change)
    for name, command in _commands(path, paused, data, tmp_path).items():
        code = command()
        out = capsys.readouterr()
        one_line_error(code, out.err, f"checkpoint {path}", words)
    assert not os.path.exists(tmp_path / "new") and not os.path.exists(tmp_path / "f.png")


@pytest.mark.parametrize("edit", TRAINING_EDITS)
def test_a_hand_edited_training_state_is_refused_by_resume(paused, data, tmp_path, capsys, edit):
    change, words = TRAINING_EDITS[edit]
    path = edited(paused["last"], str(tmp_path / "edited.npz"), change)
    code, _, err = train_quietly(["--resume", path, "--out", str(tmp_path / "new"), "--no-progress"], capsys)
    one_line_error(code, err, words)
    assert not os.path.exists(tmp_path / "new")
    for name, command in _commands(path, paused, data, tmp_path).items():   # still usable for these
        if name != "resume":
            assert command() == 0, capsys.readouterr().err


# --- 10, 16: signals --------------------------------------------------------------------------

def _train_process(data, out, *extra, data_dir=None):
    cmd = [sys.executable, os.path.join(ROOT, "train.py"), *args(data, out, *extra, data_dir=data_dir)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)


# (a signal while the libraries load: tests/test_startup.py)

def test_a_second_ctrl_c_while_the_loader_stops_reaches_the_caller(data, tmp_path, monkeypatch, capfd):
    """The first Ctrl-C stops the loop; the second arrives while the loader's thread is still
    busy with a batch. It used to be swallowed ("Exception ignored in generator")."""
    out = str(tmp_path / "run")
    os.makedirs(out)
    config = {k: v for k, v in vars(options.train_parser().parse_args(args(data, out, "--epochs", "1"))).items()
              if k != "resume"}
    run = Run(config, out, log=lambda s: None)
    real = BatchLoader.batch

    def slow(self, order, epoch, b):
        if b >= 2:
            time.sleep(3)
        return real(self, order, epoch, b)
    monkeypatch.setattr(BatchLoader, "batch", slow)

    second = threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGINT))

    def stop():
        second.start()
        return True
    try:
        with pytest.raises(KeyboardInterrupt):
            run.train(stop_requested=stop, show_progress=False)
    finally:
        second.cancel()          # never a stray Ctrl-C into the rest of the session
    assert "Exception ignored" not in capfd.readouterr().err


@pytest.mark.parametrize("sig, code, word", [(signal.SIGINT, 130, "interrupted"),
                                             (signal.SIGTERM, 143, "stopped by SIGTERM")])
def test_sigint_and_sigterm_finish_the_step_save_and_say_how_to_resume(data, data_dir, tmp_path, sig, code, word):
    out = str(tmp_path / "run")
    proc = _train_process(data, out, "--epochs", "50", data_dir=data_dir)
    for line in proc.stdout:                      # wait until training has started
        if line.startswith("model:"):
            break
    time.sleep(1.0)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == code, err
    assert "Traceback" not in err
    last = [line for line in err.splitlines() if line.strip()][-1]
    assert last.startswith(f"{word}: saved {out}/last.npz") and last.endswith(f"--resume {out}")
    ckpt = load_checkpoint(os.path.join(out, "last.npz"), model_name="tiny")
    assert ckpt.meta["epoch"] * 6 + ckpt.meta["batch"] >= 1


def test_a_signal_while_the_data_load_stops_at_once_and_leaves_nothing(data, tmp_path, monkeypatch, capsys):
    import tinyalex.trainer
    out = str(tmp_path / "run")

    def killed(config):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)                              # the handler raises before this ends
    monkeypatch.setattr(tinyalex.trainer, "build_loaders", killed)

    def unhandled(signum, frame):                  # rather than end the test session
        raise AssertionError("SIGTERM was not handled")
    previous = signal.signal(signal.SIGTERM, unhandled)
    try:
        code, _, err = train_quietly(args(data, out), capsys)
    finally:
        signal.signal(signal.SIGTERM, previous)
    assert code == 143 and err == "stopped by SIGTERM: stopped at once; nothing was saved\n"
    assert not os.path.exists(out)


# --- 11, 14, 15, 17: writes that fail, NaN, one class -----------------------------------------

def test_an_unwritable_metrics_csv_mid_run_is_one_line(data, tmp_path, monkeypatch, capsys):
    import tinyalex.trainer
    real = tinyalex.trainer.atomic_write
    writes = []

    def refuse_second(path, write):
        if path.endswith("metrics.csv"):
            writes.append(path)
            if len(writes) == 2:
                raise PermissionError(13, "Permission denied", path)
        real(path, write)
    monkeypatch.setattr(tinyalex.trainer, "atomic_write", refuse_second)
    out = str(tmp_path / "run")
    code, _, err = train_quietly(args(data, out, "--epochs", "2"), capsys)
    one_line_error(code, err, f"cannot write {out}/metrics.csv: Permission denied",
                   "checkpoint of epoch 2 is saved", f"--resume {out}")
    assert read_meta(os.path.join(out, "last.npz"))["epoch"] == 2
    monkeypatch.setattr(tinyalex.trainer, "atomic_write", real)
    code, _, err = train_quietly(["--resume", out, "--no-progress"], capsys)   # writes it again
    assert code == 0, err
    assert len(list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))) == 2


def test_a_single_class_trains_with_a_warning(tmp_path, capsys):
    pictures = str(tmp_path / "cats")
    write_image_folder(pictures, classes=["cat"], per_class=12, split=None)
    code, out, err = train_quietly(["--model", "tiny", "--data", pictures, "--data-dir", str(tmp_path / "d"),
                                    "--val-size", "4", "--batch-size", "4", "--epochs", "1",
                                    "--out", str(tmp_path / "run"), "--no-progress"], capsys)
    assert code == 0, err
    assert "warning: every training image is of class 'cat'" in err and "100%" in err


def test_a_nan_loss_in_the_first_epoch_says_nothing_was_saved(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    code, _, err = train_quietly(args(data, out, "--epochs", "1", "--lr", "1e8", "--schedule", "step"), capsys)
    one_line_error(code, err, "the loss became nan", "nothing was saved",
                   "start again with a lower --lr than 1e+08")
    assert "RuntimeWarning" not in err and "holds the last good state" not in err
    assert not os.path.exists(out)                      # 20: no empty run directory either


def test_nan_at_an_epoch_end_keeps_the_last_good_state_and_a_resume_may_lower_the_lr(
        data, tmp_path, monkeypatch, capsys):
    import tinyalex.trainer
    real = tinyalex.trainer.score_loader
    calls = []

    def nan_in_epoch_2(model, loader, desc=None):
        calls.append(1)
        loss, top1, top5 = real(model, loader)
        return (float("nan"), top1, top5) if len(calls) == 2 else (loss, top1, top5)
    monkeypatch.setattr(tinyalex.trainer, "score_loader", nan_in_epoch_2)
    out = str(tmp_path / "run")
    code, _, err = train_quietly(args(data, out, "--epochs", "2", "--schedule", "step"), capsys)
    one_line_error(code, err, "the validation loss became nan at the end of epoch 2",
                   f"{out}/last.npz holds the last good state (the end of epoch 1)",
                   f"python train.py --resume {out} --lr 0.002")
    assert read_meta(os.path.join(out, "last.npz"))["epoch"] == 1
    monkeypatch.setattr(tinyalex.trainer, "score_loader", real)

    code, _, err = train_quietly(["--resume", out, "--lr", "0.002", "--no-progress"], capsys)
    assert code == 0, err
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["lr"] == 0.002
    assert config["lr_changes"] == [{"epoch": 2, "batch": 0, "from": 0.02, "to": 0.002}]
    rows = list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))
    assert [float(r["lr"]) for r in rows] == pytest.approx([0.02, 0.002])


def test_a_non_finite_state_is_never_saved(data, tmp_path, capsys):
    out = str(tmp_path / "run")
    os.makedirs(out)
    config = {k: v for k, v in vars(options.train_parser().parse_args(args(data, out, "--epochs", "1"))).items()
              if k != "resume"}
    run = Run(config, out, log=lambda s: None)
    run.model.params["fc8.b"][0] = np.inf
    with pytest.raises(Exception, match="the parameter fc8.b is no longer finite; stopped. nothing was saved"):
        run.save("last.npz")
    assert not os.path.exists(os.path.join(out, "last.npz"))


def test_validation_of_a_diverged_model_is_nan_without_runtime_warnings(data, tmp_path):
    out = str(tmp_path / "run")
    config = {k: v for k, v in vars(options.train_parser().parse_args(args(data, out))).items() if k != "resume"}
    run = Run(config, out, log=lambda s: None)
    for name, w in run.model.params.items():
        w *= 1e12                                   # finite weights whose outputs overflow
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss, _, _ = score_loader(run.model, run.val_loader)
    assert np.isnan(loss)


# --- 18, 20: what runs leave behind --------------------------------------------------------

def test_stale_temporary_files_of_a_killed_save_are_removed(data, data_dir, tmp_path, capsys):
    out = str(tmp_path / "D")
    interrupted(data, out, data_dir=data_dir)
    stale = [os.path.join(out, ".last.npz.k9x2.tmp"), os.path.join(out, ".best.npz.a1b2.tmp")]
    for path in stale:
        with open(path, "wb") as f:
            f.write(b"\0" * 1000)
    keep = os.path.join(out, ".mine.tmp")
    open(keep, "w").close()
    code, printed, err = train_quietly(["--resume", out, "--no-progress"], capsys)
    assert code == 0, err
    assert not any(os.path.exists(p) for p in stale) and os.path.exists(keep)
    assert "removed 2 temporary file(s) of saves cut short" in printed


def test_a_failed_run_leaves_no_directory_behind(tmp_path, capsys):
    out = str(tmp_path / "runs" / "new")
    code, _, err = train_quietly(["--model", "tiny", "--data", str(tmp_path / "missing"), "--out", out], capsys)
    one_line_error(code, err, "no such file or directory")
    assert not os.path.exists(out)
    empty = str(tmp_path / "mine")            # a directory the user made is kept, empty again
    os.makedirs(empty)
    code, _, err = train_quietly(["--model", "tiny", "--data", str(tmp_path / "missing"), "--out", empty], capsys)
    assert code == 2 and os.listdir(empty) == []


# --- round 2: what a resume says and records, and the causes of divergence ---------------------

def test_resume_of_a_finished_run_says_so_and_changes_nothing(data, data_dir, finished, tmp_path, capsys):
    run = copy_run(finished, str(tmp_path / "done"))
    before = snapshot(run)
    code, printed, err = train_quietly(["--resume", run, "--no-progress"], capsys)
    assert code == 0, err
    assert f"{run} holds a finished run (2 of 2 epochs; its final scores are in " in printed
    assert "nothing to resume" in printed and "epoch 3" not in printed
    assert snapshot(run) == before


def test_a_resume_that_diverges_at_once_leaves_config_json_as_it_was(data, data_dir, tmp_path, capsys):
    out = str(tmp_path / "R")
    interrupted(data, out, epochs=2, epoch=1, batch=2, data_dir=data_dir)
    before = snapshot(out)
    code, _, err = train_quietly(["--resume", out, "--no-progress", "--lr", "1e30"], capsys)
    one_line_error(code, err, "lower learning rate")
    assert snapshot(out)["config.json"] == before["config.json"]
    code, _, err = train_quietly(["--resume", out, "--no-progress", "--lr", "0.01"], capsys)
    assert code == 0, err                                   # a resume that saves records it
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["lr"] == 0.01 and config["lr_changes"][0]["to"] == 0.01


def test_a_resume_names_the_flag_as_typed(data, data_dir, finished, capsys):
    for typed, theirs in [(["--no-nesterov"], "--nesterov"), (["--bias-decay"], "--no-bias-decay"),
                          (["--batch-size", "10"], "--batch-size 15")]:
        code, _, err = train_quietly(["--resume", finished, *typed], capsys)
        one_line_error(code, err, f"--resume: {' '.join(typed)} differs from the run's {theirs}; "
                                  f"drop {typed[0]} to continue that run")


@pytest.mark.parametrize("option, blamed", [("--lr", "lower --lr than 1e+300"),
                                            ("--weight-decay", "--weight-decay 1e+300 at lr 0.02")])
def test_an_absurd_rate_or_decay_is_one_line_naming_it_without_warnings(data, data_dir, tmp_path, capsys,
                                                                       option, blamed):
    argv = args(data, str(tmp_path / "x"), "--epochs", "1", data_dir=data_dir)
    argv[argv.index("--lr") + 1] = "0.02"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        code, _, err = train_quietly([*argv, option, "1e300"], capsys)
    one_line_error(code, err, blamed)
    assert [str(w.message) for w in caught] == []


def test_a_data_dir_that_is_a_file_is_one_line(data, tmp_path, capsys):
    (tmp_path / "a-file").write_text("x")
    code, _, err = train_quietly(args(data, str(tmp_path / "r"), data_dir=str(tmp_path / "a-file")), capsys)
    one_line_error(code, err, f"--data-dir {tmp_path / 'a-file'} is a file, not a directory")
    assert not os.path.exists(tmp_path / "r")


def test_a_signal_while_the_last_epoch_ends_is_obeyed_not_lost(data, data_dir, tmp_path, monkeypatch, capsys):
    """SIGTERM while the last epoch is validated, saved and plotted (the loop is over): the run
    stops with 143 instead of going on to score and exit 0; a resume does the scoring."""
    import tinyalex.trainer
    real = tinyalex.trainer.Run.write_metrics

    def write_then_signal(run):
        real(run)
        if run.progress.epoch == run.config["epochs"]:
            os.kill(os.getpid(), signal.SIGTERM)
    monkeypatch.setattr(tinyalex.trainer.Run, "write_metrics", write_then_signal)
    out = str(tmp_path / "run")
    code, _, err = train_quietly(args(data, out, "--epochs", "1", data_dir=data_dir), capsys)
    assert code == 143, err
    assert err.strip().splitlines()[-1] == (f"stopped by SIGTERM: saved {out}/last.npz (the end of "
                                            f"epoch 1); continue with: python train.py --resume {out}")
    assert not os.path.exists(os.path.join(out, "test.json"))
    monkeypatch.setattr(tinyalex.trainer.Run, "write_metrics", real)
    code, printed, err = train_quietly(["--resume", out, "--no-progress"], capsys)
    assert code == 0, err
    assert "training is complete (1 epoch); scoring the final parameters" in printed
    assert os.path.exists(os.path.join(out, "test.json"))
