"""The output-file rule (tinyalex/outfiles.py), shared by every command that writes a file: an
output never replaces a device node, a FIFO or a symbolic link, and never an input; and the
option and environment errors of the commands are one line."""

import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from tinyalex.outfiles import atomic_write
from tinyalex.cli import main
from tinyalex.errors import TinyAlexError
from tinyalex.outfiles import check_new_file
from trained_tiny import fitted_tiny, write_checkpoint

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return write_checkpoint(tmp_path_factory.mktemp("ck") / "best.npz", fitted_tiny())


def special_files(folder):
    """{kind: path} of the things an output must not replace, as the system allows."""
    made = {}
    fifo = os.path.join(folder, "fifo")
    os.mkfifo(fifo)
    made["FIFO"] = fifo
    target = os.path.join(folder, "target.png")
    with open(target, "wb") as f:
        f.write(b"keep me")
    link = os.path.join(folder, "link.png")
    os.symlink(target, link)
    made["symbolic link"] = link
    device = os.path.join(folder, "mynull")
    try:
        os.mknod(device, 0o666 | 0o020000, os.makedev(1, 3))      # a character device, /dev/null's
        made["device"] = device
    except (PermissionError, OSError):
        pass                                                     # not root: FIFO and link only
    return made


def unchanged(path, kind):
    mode = os.lstat(path).st_mode
    import stat
    return {"FIFO": stat.S_ISFIFO, "symbolic link": stat.S_ISLNK, "device": stat.S_ISCHR}[kind](mode)


def test_filters_never_replaces_a_device_a_fifo_or_a_link(checkpoint, tmp_path, capsys):
    for kind, path in special_files(str(tmp_path)).items():
        capsys.readouterr()
        assert main(["filters", checkpoint, "--out", path]) == 2, kind
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"cannot write {path}" in err, err
        assert unchanged(path, kind), kind
    with open(tmp_path / "target.png", "rb") as f:
        assert f.read() == b"keep me"


def test_atomic_write_itself_refuses_to_replace_them(tmp_path):
    # the last line of defence, for a path that became special after the early check
    for kind, path in special_files(str(tmp_path)).items():
        with pytest.raises(TinyAlexError, match="cannot write"):
            atomic_write(path, lambda f: f.write(b"x"))
        assert unchanged(path, kind), kind
    assert not [n for n in os.listdir(tmp_path) if n.endswith(".tmp")]    # no temporary left
    regular = tmp_path / "plain.bin"
    regular.write_bytes(b"old")
    atomic_write(str(regular), lambda f: f.write(b"new"))
    assert regular.read_bytes() == b"new"


def test_an_output_that_is_an_input_is_refused(checkpoint, tmp_path, capsys):
    before = open(checkpoint, "rb").read()
    assert main(["filters", checkpoint, "--out", checkpoint]) == 2
    assert "it is the input" in capsys.readouterr().err
    with pytest.raises(TinyAlexError, match="it is the input"):
        check_new_file(checkpoint, inputs=[os.path.relpath(checkpoint)])
    assert open(checkpoint, "rb").read() == before


def test_export_onto_its_checkpoint_is_refused(checkpoint, capsys):
    pytest.importorskip("onnx")
    before = open(checkpoint, "rb").read()
    assert main(["export", checkpoint, checkpoint]) == 2
    assert "it is the input" in capsys.readouterr().err
    assert open(checkpoint, "rb").read() == before


def test_saliency_refuses_an_output_fifo_and_a_stride_beyond_the_patch(checkpoint, tmp_path, capsys):
    image = tmp_path / "cat.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    out = tmp_path / "maps"
    out.mkdir()
    os.mkfifo(out / "cat.png")
    assert main(["saliency", checkpoint, str(image), "--out", str(out)]) == 2
    assert "it is a FIFO" in capsys.readouterr().err
    assert main(["saliency", checkpoint, str(image), "--out", str(tmp_path / "m2"),
                 "--patch", "8", "--stride", "16"]) == 2
    err = capsys.readouterr().err
    assert "--stride 16 is larger than --patch 8" in err and err.count("\n") == 1


@pytest.mark.parametrize("command", [["neighbours", "CK"], ["bench"], ["torch-train"]])
def test_a_negative_seed_is_one_line(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([*command, "--seed", "-1"])
    assert e.value.code == 2
    assert "argument --seed: must be at least 0, got -1" in capsys.readouterr().err


def test_a_thread_variable_that_is_not_a_number_is_one_line(tmp_path):
    env = dict(os.environ, NUMBA_NUM_THREADS="abc")
    result = subprocess.run([sys.executable, "train.py", "--model", "tiny", "--data", str(tmp_path)],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == ("error: NUMBA_NUM_THREADS='abc' is not a number of threads; "
                                     "unset it or use --threads N")


def test_a_failed_best_save_is_redone_when_the_run_resumes(data, tmp_path, monkeypatch, capsys):
    """The disk fills while best.npz is written: the run stops; after a resume to the end,
    the best.npz the run names exists and holds the best accuracy it reports."""
    import errno
    import json as json_
    from tinyalex.checkpoint import load_checkpoint
    from tinyalex.cli import train_main
    from tinyalex import trainer
    out = str(tmp_path / "run")
    argv = ["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
            "--val-size", "30", "--batch-size", "15", "--init", "he", "--lr", "0.02",
            "--epochs", "2", "--out", out, "--no-progress"]
    real_save = trainer.save_checkpoint
    scores = iter([0.2, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])   # epoch 2 improves on epoch 1
    monkeypatch.setattr(trainer, "score_loader", lambda model, loader, tta="none", desc=None: (1.0, next(scores), 0.9))

    def full_disk(path, **kwargs):      # the disk is full from epoch 2 on, when best.npz is due
        if os.path.basename(path) == "best.npz" and os.path.exists(os.path.join(out, "last.npz")):
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_save(path, **kwargs)
    monkeypatch.setattr(trainer, "save_checkpoint", full_disk)
    assert train_main(argv) == 2
    assert capsys.readouterr().err.strip().endswith("best.npz: No space left on device")
    monkeypatch.setattr(trainer, "save_checkpoint", real_save)
    assert load_checkpoint(os.path.join(out, "best.npz")).meta["best_val_acc"] == 0.2   # epoch 1's
    capsys.readouterr()
    assert train_main(["--resume", out, "--no-progress"]) == 0
    said = capsys.readouterr().out
    best = load_checkpoint(os.path.join(out, "best.npz")).meta["best_val_acc"]
    assert f"best validation accuracy {100 * best:.2f}% ({os.path.join(out, 'best.npz')})" in said
    with open(os.path.join(out, "metrics.csv")) as f:
        accs = [float(line.split(",")[4]) for line in f.readlines()[1:]]
    assert best == max(accs) == 0.5 and len(accs) == 2


def test_a_full_disk_while_config_json_is_written_is_one_line(data, tmp_path, monkeypatch, capsys):
    import errno
    from tinyalex import trainer
    from tinyalex.cli import train_main

    def full_disk(path, write):
        raise OSError(errno.ENOSPC, "No space left on device")
    monkeypatch.setattr(trainer, "atomic_write", full_disk)
    out = str(tmp_path / "run")
    assert train_main(["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                       "--val-size", "30", "--batch-size", "15", "--epochs", "1", "--out", out,
                       "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: cannot write {os.path.join(out, 'config.json')}: No space left on device"
