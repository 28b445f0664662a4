"""The small things of a newcomer's first hour: install hints that match pyproject.toml and
the README, sample images that `predict` and `saliency` run on, a validation split that fits
a small folder, plural words, epoch lines within 80 columns, the console script's name, the
resolved learning rate in config.json, and no empty data folder left by a failed run."""

import contextlib
import glob
import io
import json
import os
import re
import sys
import tomllib

import pytest
from PIL import Image

from tinyalex.checkpoint import load_checkpoint, read_meta, save_checkpoint
from tinyalex.cli import main, train_main
from tinyalex.data.dataset import default_val_size
from tinyalex.data.synthetic import write_image_folder
from tinyalex.optim import ONECYCLE_PEAK
from tinyalex.options import train_parser
from tinyalex.trainer import Run, epoch_line
from tinyalex.words import plural
from trained_tiny import fitted_tiny, write_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ["tinyalex", "layers", "gradcheck.py", "train.py"]


def _extras():
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        return tomllib.load(f)["project"]["optional-dependencies"]


def _source_files():
    for name in SOURCES:
        path = os.path.join(ROOT, name)
        if os.path.isfile(path):
            yield path
        for folder, _, files in os.walk(path):
            yield from (os.path.join(folder, f) for f in files if f.endswith(".py"))


# --- install hints ---------------------------------------------------------------------

def test_every_install_hint_names_an_extra_in_the_readme_form():
    from tinyalex import export, mpi, torch_twin
    from tinyalex.errors import install_hint
    extras = _extras()
    with open(os.path.join(ROOT, "README.md")) as f:
        assert install_hint("test") in f.read()          # the README's own form
    for hint, extra in ((export.ONNX_HINT, "onnx"), (torch_twin.INSTALL_HINT, "torch"),
                        (mpi.INSTALL, "mpi")):
        assert install_hint(extra) in hint and extra in extras
    # every `pip install` the code writes is that form, of an extra pyproject.toml defines
    form = re.compile(r'pip install -e "\.\[(\w+|\{extra\})\]"')
    for path in _source_files():
        with open(path) as f:
            text = f.read()
        for at in (m.start() for m in re.finditer("pip install", text)):
            found = form.match(text, at)
            assert found, f"{path}: {text[at:at + 40]!r}"
            assert found.group(1) in extras or found.group(1) == "{extra}", path


def test_the_onnx_extra_brings_what_export_imports():
    names = {re.match(r"[\w-]+", p).group(0) for p in _extras()["onnx"]}
    with open(os.path.join(ROOT, "tinyalex", "export.py")) as f:
        imported = set(re.findall(r"^\s*import (onnx\w*)", f.read(), re.M))
    assert imported == {"onnx", "onnxruntime"} and imported <= names


# --- a short run on a small folder, with the defaults ----------------------------------

@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    """A one-epoch tiny run on a folder of 60 images, with the default --val-size and --lr:
    (folder, run directory, what it printed)."""
    root = tmp_path_factory.mktemp("small")
    images = str(root / "pictures")
    write_image_folder(images, per_class=20, split=None)
    out = str(root / "run")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = train_main(["--model", "tiny", "--data", images, "--data-dir", str(root / "cache"),
                           "--batch-size", "18", "--epochs", "1", "--out", out, "--no-progress",
                           "--threads", "1"])
    assert code == 0, printed.getvalue()
    return images, out, printed.getvalue()


def test_a_small_folder_trains_with_the_default_val_size(small_run):
    images, out, printed = small_run
    config = json.load(open(os.path.join(out, "config.json")))
    assert config["val_size"] == 6                       # a tenth of 60, recorded as a number
    assert "54 train, 6 val" in printed
    assert default_val_size(50_000) == 5000 and default_val_size(60) == 6   # CIFAR-10: 45,000/5,000


def test_config_records_the_resolved_lr(small_run):
    config = json.load(open(os.path.join(small_run[1], "config.json")))
    assert config["lr"] == ONECYCLE_PEAK["tiny"]
    assert read_meta(os.path.join(small_run[1], "last.npz"))["config"]["lr"] == ONECYCLE_PEAK["tiny"]


def test_the_epoch_line_fits_80_columns(small_run):
    lines = [line for line in small_run[2].splitlines() if line.startswith("epoch ")]
    assert len(lines) == 1 and len(lines[0]) <= 80
    assert re.fullmatch(r"epoch   1/1  train loss \d+\.\d{3} acc \d+\.\d\d%  val \d+\.\d{3} "
                        r"\d+\.\d\d%  \d+s \d+ img/s", lines[0]), lines[0]
    long = {"epoch": 100, "train_loss": 2.30259, "train_acc": 0.99125, "val_loss": 11.2345,
            "val_acc": 0.8016, "seconds": 12345.6, "img_per_s": 1234.5}
    assert len(epoch_line(long, 100)) <= 80
    assert "no validation" in epoch_line({**long, "val_loss": None, "val_acc": None}, 100)


def test_one_epoch_and_one_thread_are_singular(small_run):
    assert "1 epoch of 3 steps" in small_run[2]
    assert plural(1, "thread") == "1 thread" and plural(2, "thread") == "2 threads"
    assert plural(2, "batch", "batches") == "2 batches" and plural(2, "epoch") == "2 epochs"
    from tinyalex.bench import describe_runtime
    lines = describe_runtime({"blas": [], "openmp": [], "kernel_threads": 1, "threadpoolctl": "x"})
    assert "Numba kernels: 1 thread (" in lines[-1]


def _interrupted(images, data_dir, out):
    """A two-epoch run stopped after its first step, its checkpoint's config.json holding
    "lr": null as runs before the resolved lr did."""
    config = {**vars(train_parser().parse_args(["--model", "tiny", "--data", images, "--data-dir",
                                                data_dir, "--batch-size", "18", "--epochs", "2",
                                                "--no-progress"])), "out": out, "run_id": "old"}
    os.makedirs(out)
    run = Run(config, out, log=lambda *a: None)
    assert run.train(stop_requested=lambda: True, show_progress=False) == "interrupted"
    path = os.path.join(out, "last.npz")
    ckpt = load_checkpoint(path)
    meta = {**ckpt.meta, "config": {**ckpt.meta["config"], "lr": None}}
    save_checkpoint(path, params=ckpt.params, optimizer=ckpt.optimizer, arrays=ckpt.arrays, meta=meta)
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(meta["config"], f)
    return path


@pytest.mark.parametrize("lr", [None, "0.01"])
def test_a_checkpoint_with_lr_null_still_resumes(small_run, tmp_path, capsys, lr):
    images = small_run[0]
    out = str(tmp_path / "old")
    _interrupted(images, str(tmp_path / "cache"), out)
    assert train_main(["--resume", out, "--threads", "1"] + (["--lr", lr] if lr else [])) == 0
    config = json.load(open(os.path.join(out, "config.json")))
    if lr is None:
        assert config["lr"] == ONECYCLE_PEAK["tiny"] and "lr_changes" not in config
    else:
        assert config["lr"] == 0.01
        assert config["lr_changes"] == [{"epoch": 1, "batch": 1, "from": ONECYCLE_PEAK["tiny"],
                                         "to": 0.01}]


# --- sample images, the console script, empty folders ----------------------------------

def test_predict_and_saliency_run_on_the_sample_images(tmp_path, capsys):
    samples = sorted(glob.glob(os.path.join(ROOT, "samples", "*.png")))
    assert 3 <= len(samples) <= 6
    with open(os.path.join(ROOT, "samples", "README.md")) as f:
        assert "synthetic" in f.read()
    for path in samples:
        with Image.open(path) as image:
            assert image.size[0] <= 64 and image.size[1] <= 64
    ckpt = write_checkpoint(tmp_path / "tiny.npz", fitted_tiny())
    assert main(["predict", ckpt, *samples, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [r["image"] for r in report] == samples
    assert all(0 < r["top"][0]["probability"] <= 1 for r in report)
    assert main(["saliency", ckpt, samples[0], "--out", str(tmp_path / "maps")]) == 0
    assert os.listdir(tmp_path / "maps")


def test_the_console_script_names_itself(monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", [os.path.join("venv", "bin", "tinyalex")])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: tinyalex ")
    monkeypatch.setattr(sys, "argv", [os.path.join(ROOT, "tinyalex", "__main__.py")])
    with pytest.raises(SystemExit):
        main(["--help"])
    assert capsys.readouterr().out.startswith("usage: python -m tinyalex ")


def test_a_failed_first_run_leaves_no_empty_data_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TINYALEX_DATA_DIR", raising=False)
    (tmp_path / "broken.tar.gz").write_bytes(b"not an archive")
    assert train_main(["--model", "tiny", "--data", "broken.tar.gz", "--no-progress"]) == 2
    assert "corrupt" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == ["broken.tar.gz"]        # no data/, no runs/
