"""Weight averaging (--ema, tinyalex.optim.Average): the update on both routes, the run that
scores and saves the average, and its exact resume."""

import json
import os

import numpy as np
import pytest

from layers.fast import sgd as fast_sgd
from tinyalex.checkpoint import load_checkpoint, load_model, save_checkpoint
from tinyalex.cli import main, train_main
from tinyalex.data.synthetic import write_cifar_batches
from tinyalex.optim import Average, average_update
from tinyalex.scoring import score_loader
from tinyalex.trainer import Run, build_loaders

from test_train import learn_config, learnable  # noqa: F401 (learnable: a fixture)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_fast_average_update_is_the_readable_one_bit_for_bit(dtype):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((300, 7)).astype(dtype)
    a = rng.standard_normal((300, 7)).astype(dtype)
    readable, fast = a.copy(), a.copy()
    for decay in (0.18, 0.9, 0.999):
        average_update(readable, w, decay)
        fast_sgd.average_update(fast, w, decay)
        np.testing.assert_array_equal(fast, readable)
    want = a.astype(np.float64)
    for decay in (0.18, 0.9, 0.999):
        want = decay * want + (1 - decay) * w
    np.testing.assert_allclose(readable, want, rtol=1e-5)


@pytest.mark.parametrize("route", ["readable", "fast"])
def test_the_average_follows_its_recurrence_with_the_ramp(route):
    rng = np.random.default_rng(1)
    params = {"w": rng.standard_normal(5), "b": rng.standard_normal(2)}
    average = Average(params, 0.9, route=route)
    want = {k: v.copy() for k, v in params.items()}
    for t in range(1, 30):
        for v in params.values():
            v += rng.standard_normal(v.shape)
        average.step(params, t)
        d = min(0.9, (1 + t) / (10 + t))          # 0.18, 0.27, ... then 0.9 from t = 81 on
        for k in want:
            want[k] = d * want[k] + (1 - d) * params[k]
            np.testing.assert_allclose(average.average[k], want[k], rtol=1e-12)
    assert not np.allclose(average.average["w"], params["w"])
    with pytest.raises(Exception, match=r"\(0, 1\)"):
        Average(params, 1.0)


def ema_config(data, out):
    return {**learn_config(data, out), "ema": 0.9}


@pytest.fixture(scope="module")
def whole_ema(learnable, tmp_path_factory):  # noqa: F811
    out = str(tmp_path_factory.mktemp("whole_ema") / "run")
    os.makedirs(out)
    run = Run(ema_config(learnable["a"], out), out, log=lambda s: None)
    assert run.train(show_progress=False) == "done"
    return run, out


def test_a_run_with_ema_scores_and_saves_the_average(whole_ema):
    run, out = whole_ema
    last = load_checkpoint(os.path.join(out, "last.npz"))
    for name, trained in run.model.params.items():
        np.testing.assert_array_equal(last.trained[name], trained, err_msg=name)
        np.testing.assert_array_equal(last.params[name], run.average.average[name], err_msg=name)
    assert not np.array_equal(last.params["fc6.w"], last.trained["fc6.w"])
    # the validation accuracy the run reports is the average's, which evaluate loads
    model, _ = load_model(os.path.join(out, "last.npz"))
    loss, acc, _ = score_loader(model, run.val_loader)
    row = run.progress.metrics[-1]
    assert acc == row["val_acc"] and np.isclose(loss, row["val_loss"], rtol=1e-12)
    trained, _ = load_model(os.path.join(out, "last.npz"))
    for name, w in trained.params.items():
        w[...] = last.trained[name]
    assert score_loader(trained, run.val_loader)[0] != loss
    assert main(["evaluate", os.path.join(out, "last.npz"), "--split", "val", "--tta", "none"]) == 0


def test_the_average_does_not_change_the_training(learnable, whole_ema, tmp_path):  # noqa: F811
    """The weights an --ema run trains are those of the same run without it, bit for bit: the
    average never feeds back, so one run gives both arms of an ablation. (Not a vacuous
    check: the run's weights depend on its data, and the average differs from them.)"""
    run, _ = whole_ema
    out = str(tmp_path / "plain")
    os.makedirs(out)
    plain = Run(learn_config(learnable["a"], out), out, log=lambda s: None)
    assert plain.train(show_progress=False) == "done"
    for name, w in plain.model.params.items():
        np.testing.assert_array_equal(run.model.params[name], w, err_msg=name)
    assert not np.array_equal(run.average.average["fc6.w"], plain.model.params["fc6.w"])
    other = str(tmp_path / "other")
    os.makedirs(other)
    moved = Run(learn_config(learnable["b"], other), other, log=lambda s: None)
    assert moved.train(show_progress=False) == "done"
    assert not np.array_equal(moved.model.params["fc6.w"], plain.model.params["fc6.w"])


@pytest.mark.parametrize("broken", [None, "average not restored", "average from the trained weights"])
def test_an_interrupted_ema_run_resumed_equals_an_uninterrupted_one(learnable, whole_ema, tmp_path,  # noqa: F811
                                                                     monkeypatch, broken):
    """Exact resume, the average included; a resume that does not restore the average, or
    restores it from the trained weights, ends elsewhere (the comparison has teeth)."""
    whole, _ = whole_ema
    out = str(tmp_path / "b")
    os.makedirs(out)
    first = Run(ema_config(learnable["a"], out), out, log=lambda s: None)
    from tinyalex.trainer import write_config
    write_config(out, first.config)
    assert first.train(stop_requested=lambda: (first.progress.epoch, first.progress.batch) == (1, 4),
                       show_progress=False) == "interrupted"
    if broken == "average not restored":
        monkeypatch.setattr(Average, "load_state_dict", lambda self, state: None)
    elif broken == "average from the trained weights":
        real = Average.load_state_dict
        ckpt = load_checkpoint(os.path.join(out, "last.npz"))
        monkeypatch.setattr(Average, "load_state_dict", lambda self, state: real(self, ckpt.trained))
    resumed = Run(ema_config(learnable["a"], out), out, resume_from=os.path.join(out, "last.npz"),
                  log=lambda s: None)
    assert resumed.train(show_progress=False) == "done"
    same = [np.array_equal(resumed.average.average[k], v) for k, v in whole.average.average.items()]
    if broken:
        assert not any(same)
        return
    assert all(same)
    for name, value in whole.model.params.items():
        np.testing.assert_array_equal(resumed.model.params[name], value, err_msg=name)


def test_a_checkpoint_of_an_ema_run_without_its_trained_weights_cannot_resume(whole_ema, tmp_path, capsys):
    _, out = whole_ema
    ckpt = load_checkpoint(os.path.join(out, "last.npz"))
    path = str(tmp_path / "last.npz")
    save_checkpoint(path, params=ckpt.params, optimizer=ckpt.optimizer, arrays=ckpt.arrays, meta=ckpt.meta)
    assert train_main(["--resume", path, "--no-progress"]) != 0
    assert "holds no train/ weights" in capsys.readouterr().err
    wrong = dict(ckpt.trained, extra=ckpt.trained["fc8.b"])
    save_checkpoint(path, params=ckpt.params, optimizer=ckpt.optimizer, arrays=ckpt.arrays,
                    meta=ckpt.meta, trained=wrong)
    with pytest.raises(Exception, match="trained weights"):
        load_checkpoint(path)


def test_the_end_of_an_ema_run_reports_the_average_and_the_weights_as_trained(tmp_path, capsys):
    data = str(tmp_path / "data")
    write_cifar_batches(os.path.join(data, "cifar-10-batches-py"), per_batch=12, n_test=20, seed=3)
    out = str(tmp_path / "run")
    assert train_main(["--model", "tiny", "--data", data, "--data-dir", str(tmp_path / "cache"),
                       "--val-size", "10", "--batch-size", "10", "--epochs", "2", "--ema", "0.9",
                       "--out", out, "--no-progress"]) == 0
    said = capsys.readouterr().out
    assert "(the average of the weights, --ema)" in said and "(the final weights as trained)" in said
    scores = json.load(open(os.path.join(out, "test.json")))
    _, _, val, test = build_loaders(json.load(open(os.path.join(out, "config.json"))))
    last = load_checkpoint(os.path.join(out, "last.npz"))
    for tag, weights in (("", last.params), ("_trained", last.trained)):
        model, _ = load_model(os.path.join(out, "last.npz"))
        for name, w in model.params.items():
            w[...] = weights[name]
        for split, loader in (("val", val), ("test", test)):
            loss, top1, _ = score_loader(model, loader)
            assert top1 == scores[f"{split}_top1{tag}"]
            assert np.isclose(loss, scores[f"{split}_loss{tag}"], rtol=1e-12)
    assert scores["test_loss"] != scores["test_loss_trained"]
