"""`python -m tinyalex torch-train`: the PyTorch run of the same recipe on the same batches."""

import csv
import os

import numpy as np
import pytest

pytest.importorskip("torch")

from tinyalex.cli import main  # noqa: E402
from tinyalex.optim import make_schedule  # noqa: E402


def test_two_epochs_learn_and_write_metrics_with_tinyalex_s_schedule(data, tmp_path, capsys,
                                                                   monkeypatch):
    out = str(tmp_path / "torch")
    import tinyalex.trainer as trainer
    chances, plot = [], trainer.plot_curves
    monkeypatch.setattr(trainer, "plot_curves",
                        lambda rows, path, chance=None: chances.append(chance)
                        or plot(rows, path, chance=chance))
    assert main(["torch-train", "--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                 "--val-size", "30", "--batch-size", "15", "--epochs", "2", "--lr", "0.02",
                 "--out", out, "--no-progress", "--threads", "1"]) == 0
    with open(os.path.join(out, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert [r["epoch"] for r in rows] == ["1", "2"]
    assert float(rows[1]["train_loss"]) < float(rows[0]["train_loss"])
    assert all(0 <= float(r["val_acc"]) <= 1 for r in rows)
    assert os.path.getsize(os.path.join(out, "curves.png")) > 0
    assert chances == [0.1, 0.1]                          # curves.png's chance line: 10 classes
    # PyTorch's OneCycleLR and tinyalex's onecycle give the same rate at the last step of each
    # epoch (90 images, batch 15: 6 steps an epoch)
    ours = make_schedule("onecycle", lr=0.02, epochs=2, steps_per_epoch=6, model="tiny")
    np.testing.assert_allclose([float(r["lr"]) for r in rows], [ours.lr_at(e, 5) for e in (0, 1)],
                               rtol=1e-9)
    printed = capsys.readouterr().out
    assert "epoch   2/2" in printed
    # train.py's recipe by default
    assert ("init he, label smoothing 0.1, Nesterov momentum 0.9, weight decay 0.0005 "
            "(not on biases); metrics in") in printed
    # the end: the final parameters on validation and test, flip TTA and the centre image
    last = printed.strip().splitlines()[-2:]
    for line, split in zip(last, ("validation", "test")):
        assert line.startswith(f"{split}: top-1 ") and "% with flip TTA (image + mirror), " in line
        assert "% centre only; top-5 " in line and line.endswith("(final parameters)")


def quick_run(data, tmp_path, *flags):
    return main(["torch-train", "--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                 "--val-size", "30", "--batch-size", "15", "--epochs", "1", "--lr", "0.02",
                 "--out", str(tmp_path / "torch"), "--no-progress", "--threads", "1", *flags])


def test_the_recipe_options_reach_pytorch(data, tmp_path, capsys, monkeypatch):
    """--init paper --no-nesterov --bias-decay --label-smoothing 0: the header says so, and
    the optimizer, the loss and the initial weights are PyTorch's with those settings."""
    import torch
    import tinyalex.torch_train as torch_train
    seen = {"smoothing": set()}
    real_sgd, real_ce, real_init = torch.optim.SGD, torch.nn.functional.cross_entropy, torch_train.init_weights

    class SGD(real_sgd):
        def __init__(self, groups, **kw):
            super().__init__(groups, **kw)
            seen["sgd"] = self

    def cross_entropy(*a, **kw):
        seen["smoothing"].add(kw.get("label_smoothing"))
        return real_ce(*a, **kw)

    def init_weights(torch, net, init, arch):
        real_init(torch, net, init, arch)
        seen["init"] = init
        seen["fc6.bias"] = net.fc6.bias.detach().clone().numpy()

    monkeypatch.setattr(torch.optim, "SGD", SGD)
    monkeypatch.setattr(torch.nn.functional, "cross_entropy", cross_entropy)
    monkeypatch.setattr(torch_train, "init_weights", init_weights)
    assert quick_run(data, tmp_path, "--init", "paper", "--no-nesterov", "--bias-decay",
                     "--label-smoothing", "0") == 0
    printed = capsys.readouterr().out
    assert ("init paper, label smoothing 0, plain momentum 0.9, weight decay 0.0005; "
            "metrics in") in printed
    assert seen["init"] == "paper" and np.all(seen["fc6.bias"] == 1.0)   # the paper's biases of 1
    assert seen["smoothing"] == {0.0}
    (group,) = seen["sgd"].param_groups                    # decay on every parameter
    assert group["nesterov"] is False and group["weight_decay"] == 5e-4 and len(group["params"]) == 16

    seen["smoothing"].clear()
    assert quick_run(data, tmp_path / "defaults") == 0
    assert seen["init"] == "he" and np.all(seen["fc6.bias"] == 0.0)
    assert seen["smoothing"] == {0.1}
    weights, biases = seen["sgd"].param_groups             # the biases in a group of their own
    assert weights["nesterov"] is True and biases["nesterov"] is True
    assert (weights["weight_decay"], biases["weight_decay"]) == (5e-4, 0.0)
    assert len(weights["params"]) == len(biases["params"]) == 8
    assert all(p.dim() == 1 for p in biases["params"]) and all(p.dim() > 1 for p in weights["params"])


def test_momentum_zero_with_the_default_nesterov_runs(data, tmp_path, capsys):
    """PyTorch refuses nesterov=True without momentum; with momentum 0 it is plain SGD."""
    assert quick_run(data, tmp_path, "--momentum", "0") == 0
    assert "Nesterov momentum 0, weight decay" in capsys.readouterr().out


def test_bad_input_is_one_line(data, tmp_path, capsys):
    assert main(["torch-train", "--data", str(tmp_path / "nowhere"), "--data-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err


def test_the_average_is_train_py_s(data, tmp_path, capsys):
    """--ema: torch-train's average follows optim.Average step for step, validation and the
    final scores are the average's, and the end scores the weights as trained too."""
    import torch
    from tinyalex.optim import Average
    from tinyalex.torch_train import TorchAverage
    torch.manual_seed(0)
    net = torch.nn.Linear(4, 3)
    ours = Average({name: p.detach().numpy().copy() for name, p in net.named_parameters()}, 0.9,
                   route="readable")
    theirs = TorchAverage(torch, net, 0.9)
    rng = np.random.default_rng(0)
    for t in range(1, 101):                    # the ramp (d_t < 0.9 until t = 80), then 0.9
        with torch.no_grad():
            for p in net.parameters():
                p.add_(torch.from_numpy(rng.normal(size=tuple(p.shape)).astype(np.float32)))
        ours.step({name: p.detach().numpy() for name, p in net.named_parameters()}, t)
        theirs.step(net, t)
    for name, p in theirs.net.named_parameters():
        np.testing.assert_allclose(p.detach().numpy(), ours.average[name], rtol=1e-5, atol=1e-6)
        assert not np.allclose(p.detach().numpy(), dict(net.named_parameters())[name].detach().numpy())

    assert quick_run(data, tmp_path, "--ema", "0.9") == 0
    printed = capsys.readouterr().out
    assert ", average of the weights (decay 0.9); metrics in" in printed
    last = printed.strip().splitlines()[-4:]
    labels = ["the average of the weights, --ema)", "the final weights as trained)"] * 2
    assert [line.rsplit(" (", 1)[1] for line in last] == labels
    assert [line.split(":")[0] for line in last] == ["validation"] * 2 + ["test"] * 2
    scores = [line.rsplit(" (", 1)[0] for line in last]
    assert scores[0] != scores[1] and scores[2] != scores[3]   # two different sets of weights
