"""`python -m tinyalex torch-train`: the PyTorch run of the same recipe on the same batches."""

import csv
import os

import numpy as np
import pytest

pytest.importorskip("torch")

from tinyalex.cli import main  # noqa: E402
from tinyalex.data.synthetic import write_cifar_batches  # noqa: E402
from tinyalex.optim import make_schedule  # noqa: E402


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar")
    write_cifar_batches(str(root / "cifar-10-batches-py"), per_batch=24, n_test=20)   # 120 train
    return str(root)


def test_two_epochs_learn_and_write_metrics_with_tinyalex_s_schedule(data, tmp_path, capsys):
    out = str(tmp_path / "torch")
    assert main(["torch-train", "--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                 "--val-size", "30", "--batch-size", "15", "--epochs", "2", "--lr", "0.02",
                 "--out", out, "--no-progress", "--threads", "1"]) == 0
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(0 <= float(r["val_acc"]) <= 1 for r in rows)
    assert os.path.getsize(os.path.join(out, "curves.png")) > 0
    # PyTorch's OneCycleLR and tinyalex's onecycle give the same rate at the last step of each
    # epoch (90 images, batch 15: 6 steps an epoch)
    ours = make_schedule("onecycle", lr=0.02, epochs=2, steps_per_epoch=6, model="tiny")
    np.testing.assert_allclose([float(r["lr"]) for r in rows], [ours.lr_at(e, 5) for e in (0, 1)],
                               rtol=1e-9)
    printed = capsys.readouterr().out
    assert "epoch   2/2" in printed and "test: top-1" in printed


def test_bad_input_is_one_line(data, tmp_path, capsys):
    assert main(["torch-train", "--data", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
