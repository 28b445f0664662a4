"""The hand-written SGD (both routes: NumPy and the Numba kernel) and the learning-rate
schedules, against hand-computed numbers and against PyTorch's optimizer and schedulers."""

import json
import math

import numpy as np
import pytest

from tinyalex.errors import CheckpointError, TinyAlexError
from tinyalex.optim import MIN_WARMUP_STEPS, SGD, make_schedule

# `torch`: the fixture of conftest.py (PyTorch, or the test is skipped)


# --- SGD ------------------------------------------------------------------------------------

@pytest.mark.parametrize("route", ["fast", "readable"])
def test_two_steps_by_hand(route):
    # v <- m v - wd lr w - lr g ; w <- w + v, with m=0.9, wd=0.5 (large, to be visible), lr=0.1
    params = {"w": np.array([1.0, -2.0], dtype=np.float32), "b": np.array([0.5], np.float32)}
    opt = SGD(params, momentum=0.9, weight_decay=0.5, route=route)
    opt.step(params, {"w": np.array([1.0, 0.0], np.float32), "b": np.array([0.0], np.float32)},
             lr=0.1)
    # step 1, w: v = 0 - 0.05*[1,-2] - 0.1*[1,0] = [-0.15, 0.1]; w = [0.85, -1.9]
    # step 1, b (bias decays too): v = -0.05*0.5 = -0.025; b = 0.475
    np.testing.assert_allclose(opt.velocity["w"], [-0.15, 0.1], rtol=1e-6)
    np.testing.assert_allclose(params["w"], [0.85, -1.9], rtol=1e-6)
    np.testing.assert_allclose(params["b"], [0.475], rtol=1e-6)
    opt.step(params, {"w": np.array([-1.0, 2.0], np.float32), "b": np.array([1.0], np.float32)},
             lr=0.2)
    # step 2, w: v = 0.9*[-0.15, 0.1] - 0.1*[0.85, -1.9] - 0.2*[-1, 2]
    #              = [-0.135, 0.09] + [-0.085, 0.19] + [0.2, -0.4] = [-0.02, -0.12]
    #            w = [0.83, -2.02]
    # step 2, b: v = 0.9*-0.025 - 0.1*0.475 - 0.2*1 = -0.0225 - 0.0475 - 0.2 = -0.27
    #            b = 0.475 - 0.27 = 0.205
    np.testing.assert_allclose(opt.velocity["w"], [-0.02, -0.12], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(params["w"], [0.83, -2.02], rtol=1e-6)
    np.testing.assert_allclose(params["b"], [0.205], rtol=1e-5)
    assert params["w"].dtype == np.float32 and opt.velocity["w"].dtype == np.float32


def test_weight_decay_alone_shrinks_biases():
    params = {"fc.b": np.full(3, 2.0)}
    opt = SGD(params, momentum=0.0, weight_decay=5e-4)
    opt.step(params, {"fc.b": np.zeros(3)}, lr=0.1)
    np.testing.assert_allclose(params["fc.b"], 2.0 * (1 - 5e-4 * 0.1), rtol=1e-12)


def test_updates_in_place_and_keeps_float32():
    params = {"a": np.ones((4, 3), np.float32)}
    before = params["a"]
    opt = SGD(params)
    opt.step(params, {"a": np.ones((4, 3), np.float64)}, lr=0.01)
    assert params["a"] is before and before.dtype == np.float32
    assert np.all(before < 1)


def _torch_sgd_trajectory(torch, w0, grads_fn, lrs, momentum, weight_decay, nesterov=False):
    w = torch.tensor(w0.copy(), requires_grad=True)
    opt = torch.optim.SGD([w], lr=lrs[0], momentum=momentum, weight_decay=weight_decay,
                          nesterov=nesterov)
    for lr in lrs:
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad()
        w.grad = torch.tensor(grads_fn(w.detach().numpy()))
        opt.step()
    return w.detach().numpy()


@pytest.mark.parametrize("nesterov", [False, True])
def test_the_fast_routes_update_is_the_readable_one_bit_for_bit(nesterov):
    # The readable route's update is optim.sgd_update (NumPy, step by step); the fast route's
    # is one threaded Numba pass (layers/fast/sgd.py). In float32 they must give the same bits,
    # on a parameter large enough to be cut between threads and with a gradient that is not
    # contiguous; and Nesterov must not be the plain rule.
    rng = np.random.default_rng(3)
    w = rng.standard_normal((300, 400)).astype(np.float32)
    g = rng.standard_normal((400, 300)).astype(np.float32).T
    sgd = {route: SGD({"w": w}, momentum=0.9, weight_decay=5e-4, nesterov=nesterov, route=route)
           for route in ("fast", "readable")}
    other = SGD({"w": w}, momentum=0.9, weight_decay=5e-4, nesterov=not nesterov, route="readable")
    weights = {route: w.copy() for route in sgd}
    w_other = w.copy()
    for lr in (0.05, 0.0123, 0.03):
        for route, opt in sgd.items():
            opt.step({"w": weights[route]}, {"w": g}, lr)
        other.step({"w": w_other}, {"w": g}, lr)
        np.testing.assert_array_equal(sgd["fast"].velocity["w"], sgd["readable"].velocity["w"])
        np.testing.assert_array_equal(weights["fast"], weights["readable"])
    assert weights["fast"].dtype == sgd["fast"].velocity["w"].dtype == np.float32
    assert not np.array_equal(weights["fast"], w)
    assert np.abs(weights["readable"] - w_other).max() > 1e-3


def test_an_unknown_route_has_no_update():
    with pytest.raises(ValueError, match="unknown route"):
        SGD({"w": np.zeros(2)}, route="quick")


def test_same_as_torch_sgd_at_constant_lr_and_not_otherwise(torch):
    rng = np.random.default_rng(0)
    w0 = rng.standard_normal(20)
    target = rng.standard_normal(20)

    def grads_fn(w):          # gradient of 0.5 * |w - target|^2 * 3
        return 3.0 * (w - target)

    def ours(lrs):
        params = {"w": w0.copy()}
        opt = SGD(params, momentum=0.9, weight_decay=5e-3)
        for lr in lrs:
            opt.step(params, {"w": grads_fn(params["w"])}, lr)
        return params["w"]

    constant = [0.05] * 8
    np.testing.assert_allclose(ours(constant),
                               _torch_sgd_trajectory(torch, w0, grads_fn, constant, 0.9, 5e-3),
                               rtol=1e-12, atol=1e-12)
    # A tenfold drop in lr: PyTorch rescales the accumulated momentum at once, the paper's
    # rule does not, so the two trajectories part.
    dropped = [0.05] * 4 + [0.005] * 4
    gap = np.abs(ours(dropped) - _torch_sgd_trajectory(torch, w0, grads_fn, dropped, 0.9, 5e-3))
    assert gap.max() > 1e-3


# --- Nesterov momentum ---------------------------------------------------------------------

@pytest.mark.parametrize("route", ["fast", "readable"])
def test_nesterov_one_step_by_hand_and_not_plain_momentum(route):
    # w = 1, g = 1, momentum 0.9, no decay, lr 0.1, from v = 0:
    #   plain:    v = -0.1;                  w = 1 - 0.1 = 0.9
    #   Nesterov: step = -0.1, v = -0.1;     w = 1 + 0.9 * -0.1 - 0.1 = 0.81
    # and a second step with g = 1:
    #   plain:    v = -0.09 - 0.1 = -0.19;   w = 0.9 - 0.19 = 0.71
    #   Nesterov: v = -0.19;                 w = 0.81 + 0.9 * -0.19 - 0.1 = 0.539
    for nesterov, expected in ((False, [0.9, 0.71]), (True, [0.81, 0.539])):
        params = {"w": np.array([1.0])}
        opt = SGD(params, momentum=0.9, weight_decay=0.0, nesterov=nesterov, route=route)
        seen = []
        for _ in range(2):
            opt.step(params, {"w": np.array([1.0])}, lr=0.1)
            seen.append(params["w"][0])
        np.testing.assert_allclose(seen, expected, rtol=1e-12)
        np.testing.assert_allclose(opt.velocity["w"], [-0.19], rtol=1e-12)   # the same v


def test_nesterov_same_as_torch_sgd_nesterov_at_constant_lr(torch):
    rng = np.random.default_rng(2)
    w0 = rng.standard_normal(20)
    target = rng.standard_normal(20)

    def grads_fn(w):
        return 3.0 * (w - target)

    def ours(lrs, nesterov):
        params = {"w": w0.copy()}
        opt = SGD(params, momentum=0.9, weight_decay=5e-3, nesterov=nesterov)
        for lr in lrs:
            opt.step(params, {"w": grads_fn(params["w"])}, lr)
        return params["w"]

    constant = [0.05] * 8
    theirs = _torch_sgd_trajectory(torch, w0, grads_fn, constant, 0.9, 5e-3, nesterov=True)
    np.testing.assert_allclose(ours(constant, True), theirs, rtol=1e-12, atol=1e-12)
    # and PyTorch's plain momentum is another trajectory: the comparison can tell them apart
    plain = _torch_sgd_trajectory(torch, w0, grads_fn, constant, 0.9, 5e-3)
    assert np.abs(ours(constant, True) - plain).max() > 1e-3
    np.testing.assert_allclose(ours(constant, False), plain, rtol=1e-12, atol=1e-12)


# --- no weight decay on some parameters ---------------------------------------------------

@pytest.mark.parametrize("nesterov", [False, True])
def test_no_decay_parameters_move_as_with_weight_decay_zero(nesterov):
    rng = np.random.default_rng(5)
    start = {"fc.w": rng.standard_normal((6, 4)).astype(np.float32),
             "fc.b": rng.standard_normal(6).astype(np.float32)}
    grads = [{k: rng.standard_normal(v.shape).astype(np.float32) for k, v in start.items()}
             for _ in range(3)]

    def trained(weight_decay, no_decay=()):
        params = {k: v.copy() for k, v in start.items()}
        opt = SGD(params, momentum=0.9, weight_decay=weight_decay, nesterov=nesterov,
                  no_decay=no_decay)
        for g, lr in zip(grads, (0.1, 0.05, 0.1)):
            opt.step(params, g, lr)
        return params, opt

    mixed, opt = trained(0.05, no_decay=["fc.b"])
    decayed, _ = trained(0.05)
    undecayed, _ = trained(0.0)
    assert opt.no_decay == {"fc.b"}
    np.testing.assert_array_equal(mixed["fc.b"], undecayed["fc.b"])   # as with weight_decay 0
    np.testing.assert_array_equal(mixed["fc.w"], decayed["fc.w"])     # the others as before
    assert np.abs(decayed["fc.b"] - undecayed["fc.b"]).max() > 1e-4   # the decay is visible


def test_no_decay_names_must_be_parameters():
    params = {"fc.w": np.zeros((2, 2)), "fc.b": np.zeros(2)}
    with pytest.raises(TinyAlexError, match="no_decay names unknown parameters: fc.bias, fc9.b"):
        SGD(params, no_decay=["fc.b", "fc9.b", "fc.bias"])
    assert SGD(params, no_decay=()).no_decay == frozenset()


def test_step_rejects_mismatched_gradients():
    params = {"a": np.zeros(3), "b": np.zeros(2)}
    opt = SGD(params)
    with pytest.raises(ValueError, match="missing"):
        opt.step(params, {"a": np.zeros(3)}, 0.1)
    with pytest.raises(ValueError, match="shape"):
        opt.step(params, {"a": np.zeros(3), "b": np.zeros(3)}, 0.1)
    with pytest.raises(ValueError, match="learning rate"):
        opt.step(params, {"a": np.zeros(3), "b": np.zeros(2)}, float("nan"))


def test_sgd_state_dict_round_trip():
    rng = np.random.default_rng(1)
    params = {"a": rng.standard_normal((3, 2)).astype(np.float32), "b": np.zeros(2, np.float32)}
    grads = {"a": np.ones((3, 2), np.float32), "b": np.ones(2, np.float32)}
    opt = SGD(params)
    opt.step(params, grads, 0.1)
    saved = {k: v.copy() for k, v in opt.state_dict().items()}

    params2 = {k: v.copy() for k, v in params.items()}
    opt2 = SGD(params2)
    opt2.load_state_dict(saved)
    opt.step(params, grads, 0.1)
    opt2.step(params2, grads, 0.1)
    for k in params:
        np.testing.assert_array_equal(params[k], params2[k])
        np.testing.assert_array_equal(opt.velocity[k], opt2.velocity[k])


def test_sgd_load_state_dict_rejects_mismatch():
    opt = SGD({"a": np.zeros((3, 2)), "b": np.zeros(2)})
    with pytest.raises(CheckpointError, match="missing"):
        opt.load_state_dict({"a": np.zeros((3, 2))})
    with pytest.raises(CheckpointError, match="shape"):
        opt.load_state_dict({"a": np.zeros((2, 3)), "b": np.zeros(2)})


def test_sgd_rejects_bad_hyperparameters():
    with pytest.raises(TinyAlexError, match="momentum"):
        SGD({"a": np.zeros(1)}, momentum=1.5)
    with pytest.raises(TinyAlexError, match="weight decay"):
        SGD({"a": np.zeros(1)}, weight_decay=-1)


# --- schedules ------------------------------------------------------------------------------

def _all_lrs(schedule, epochs, steps):
    return [schedule.lr_at(e, s) for e in range(epochs) for s in range(steps)]


def test_onecycle_by_hand():
    # 40 epochs x 25 steps = 1000 iterations, peak 0.05: start 0.002, final 2e-7,
    # warm-up 15% = 150 iterations, end e = 149.
    sched = make_schedule("onecycle", epochs=40, steps_per_epoch=25)
    assert sched.name == "onecycle"
    lrs = _all_lrs(sched, 40, 25)
    assert lrs[0] == pytest.approx(0.002, rel=1e-12)
    assert lrs[1] == pytest.approx(0.002 + 0.048 / 149, rel=1e-12)
    assert lrs[149] == pytest.approx(0.05, rel=1e-12)                       # the peak
    # decay: lr = 0.05 + (2e-7 - 0.05) * (i - 149) / 850
    assert lrs[150] == pytest.approx(0.05 - (0.05 - 2e-7) / 850, rel=1e-12)
    assert lrs[999] == pytest.approx(2e-7, rel=1e-9)                        # peak/25/1e4
    assert max(lrs) == lrs[149]


def test_a_short_onecycle_warms_up_for_at_least_min_warmup_steps_or_half_the_run():
    # 200 iterations: 15% would be 30; the warm-up is MIN_WARMUP_STEPS (100), end e = 99
    lrs = _all_lrs(make_schedule("onecycle", epochs=2, steps_per_epoch=100), 2, 100)
    assert MIN_WARMUP_STEPS == 100
    assert lrs[50] == pytest.approx(0.002 + 0.048 * 50 / 99, rel=1e-12)
    assert max(lrs) == lrs[99] == pytest.approx(0.05, rel=1e-12)
    # 20 iterations: half the run, 10, end e = 9; then down to peak/25/1e4 at the last
    lrs = _all_lrs(make_schedule("onecycle", epochs=4, steps_per_epoch=5), 4, 5)
    assert lrs[3] == pytest.approx(0.002 + 0.048 * 3 / 9, rel=1e-12)
    assert max(lrs) == lrs[9] == pytest.approx(0.05, rel=1e-12)
    assert lrs[14] == pytest.approx(0.05 + (2e-7 - 0.05) * 5 / 10, rel=1e-12)
    assert lrs[19] == pytest.approx(2e-7, rel=1e-9)


def test_a_checkpoint_from_before_the_minimum_warm_up_keeps_its_schedule():
    sched = make_schedule("onecycle", epochs=4, steps_per_epoch=5)
    old = {k: v for k, v in sched.state_dict().items() if k != "warmup"}
    sched.load_state_dict(old)
    assert sched.warmup == pytest.approx(3.0) and sched.lr_at(0, 2) == pytest.approx(0.05)


def test_onecycle_defaults_per_model_and_override():
    assert make_schedule("onecycle", epochs=10, steps_per_epoch=100,
                         model="paper").lr_at(0, 0) == pytest.approx(0.02 / 25)
    assert make_schedule(epochs=10, steps_per_epoch=100).lr_at(0, 0) == pytest.approx(0.05 / 25)
    assert make_schedule("onecycle", lr=0.1, epochs=10,
                         steps_per_epoch=100).lr_at(1, 49) == pytest.approx(0.1)  # i=149


@pytest.mark.parametrize("epochs,steps", [(10, 352), (3, 7), (1, 1), (1, 2), (1, 3), (1, 4), (1, 5), (2, 3), (7, 1), (2, 100)])
@pytest.mark.parametrize("warmup", [0.15, 0.3])
def test_onecycle_matches_torch(epochs, steps, warmup, torch):
    """torch-train's scheduler (PyTorch's OneCycleLR, given train.py's warm-up) and tinyalex's
    give the same rate at every iteration."""
    from tinyalex.torch_train import make_scheduler
    peak = 0.05
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=peak, momentum=0.9)
    ref, per_batch = make_scheduler(torch, opt, "onecycle", peak, epochs, steps, warmup)
    assert per_batch
    torch_lrs = []
    for _ in range(epochs * steps):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    schedule = make_schedule("onecycle", lr=peak, epochs=epochs, steps_per_epoch=steps, warmup=warmup)
    ours = _all_lrs(schedule, epochs, steps)
    np.testing.assert_allclose(ours, torch_lrs, rtol=1e-9, atol=1e-15)
    if epochs * steps >= 1000:          # (shorter runs take the 100-step minimum)
        assert schedule.warmup == warmup * epochs * steps
        assert int(np.argmax(ours)) == round(warmup * epochs * steps) - 1


def test_step_schedule_by_hand_and_against_torch(torch):
    sched = make_schedule("step", epochs=10, steps_per_epoch=3)
    by_epoch = [sched.lr_at(e, 2) for e in range(10)]
    assert by_epoch == pytest.approx([0.01] * 5 + [0.001] * 3 + [0.0001] * 2, rel=1e-12)
    assert sched.lr_at(4, 0) == sched.lr_at(4, 2)          # constant within an epoch

    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.01)
    ref = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[5, 8], gamma=0.1)
    torch_lrs = []
    for _ in range(10):
        torch_lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        ref.step()
    np.testing.assert_allclose(by_epoch, torch_lrs, rtol=1e-12)


VAL_ACCS = [0.30, 0.40, 0.40, 0.35, 0.45, 0.44, 0.44, 0.46, 0.46, 0.46, 0.46]


def test_plateau_by_hand():
    # patience 2: the rate drops after two epochs in a row that do not beat the best.
    sched = make_schedule("plateau", epochs=11, steps_per_epoch=4, patience=2)
    seen = []
    for epoch, acc in enumerate(VAL_ACCS):
        seen.append(sched.lr_at(epoch, 0))
        sched.end_epoch(epoch, acc)
    # epoch: 0 1 2 (equal: not better, bad 1) 3 (bad 2 -> drop) 4 (best 0.45) 5 (bad 1)
    #        6 (bad 2 -> drop) 7 (best 0.46) 8 (bad 1) 9 (bad 2 -> drop) 10
    expected = [0.01] * 4 + [0.001] * 3 + [0.0001] * 3 + [0.00001]
    assert seen == pytest.approx(expected, rel=1e-12)
    assert sched.best == 0.46


@pytest.mark.parametrize("patience", [1, 2, 3])
def test_plateau_matches_torch(patience, torch):
    sched = make_schedule("plateau", epochs=len(VAL_ACCS), steps_per_epoch=1,
                          patience=patience)
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.01)
    ref = torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="max", factor=0.1, patience=patience - 1, threshold=0.0,
        threshold_mode="abs", eps=0.0)
    for epoch, acc in enumerate(VAL_ACCS):
        assert sched.lr_at(epoch, 0) == pytest.approx(opt.param_groups[0]["lr"], rel=1e-12)
        sched.end_epoch(epoch, acc)
        ref.step(acc)


def test_plateau_needs_validation_accuracy():
    sched = make_schedule("plateau", epochs=3, steps_per_epoch=1)
    with pytest.raises(ValueError, match="validation"):
        sched.end_epoch(0, None)
    with pytest.raises(ValueError, match="validation"):
        sched.end_epoch(0, float("nan"))


@pytest.mark.parametrize("name", ["onecycle", "step", "plateau"])
def test_schedule_state_dict_round_trip_resumes_exactly(name):
    epochs, steps = 11, 3
    whole = make_schedule(name, epochs=epochs, steps_per_epoch=steps, patience=2)
    expected = []
    for epoch, acc in enumerate(VAL_ACCS):
        expected += [whole.lr_at(epoch, s) for s in range(steps)]
        whole.end_epoch(epoch, acc)

    first = make_schedule(name, epochs=epochs, steps_per_epoch=steps, patience=2)
    got = []
    for epoch, acc in enumerate(VAL_ACCS[:5]):
        got += [first.lr_at(epoch, s) for s in range(steps)]
        first.end_epoch(epoch, acc)
    state = json.loads(json.dumps(first.state_dict()))            # through JSON, as saved
    # A fresh schedule built with other settings takes everything from the state.
    resumed = make_schedule(name, lr=0.5, epochs=epochs, steps_per_epoch=steps, patience=5)
    resumed.load_state_dict(state)
    for epoch, acc in enumerate(VAL_ACCS[5:], start=5):
        got += [resumed.lr_at(epoch, s) for s in range(steps)]
        resumed.end_epoch(epoch, acc)
    assert got == expected


def test_schedule_load_state_dict_rejects_other_schedule():
    sched = make_schedule("step", epochs=2, steps_per_epoch=2)
    other = make_schedule("plateau", epochs=2, steps_per_epoch=2).state_dict()
    with pytest.raises(CheckpointError, match="plateau"):
        sched.load_state_dict(other)
    with pytest.raises(CheckpointError):
        make_schedule("plateau", epochs=2, steps_per_epoch=2).load_state_dict({"name": "plateau"})


def test_make_schedule_rejects_bad_arguments():
    with pytest.raises(TinyAlexError, match="unknown schedule"):
        make_schedule("cosine", epochs=1, steps_per_epoch=1)
    with pytest.raises(TinyAlexError, match="learning rate"):
        make_schedule("step", lr=-0.1, epochs=1, steps_per_epoch=1)
    with pytest.raises(TinyAlexError, match="learning rate"):
        make_schedule("step", lr=math.inf, epochs=1, steps_per_epoch=1)
    with pytest.raises(TinyAlexError, match="epochs"):
        make_schedule("step", epochs=0, steps_per_epoch=1)
    with pytest.raises(TinyAlexError, match="model"):
        make_schedule("onecycle", epochs=1, steps_per_epoch=1, model="vgg")
    with pytest.raises(ValueError, match="outside"):
        make_schedule("onecycle", epochs=2, steps_per_epoch=3).lr_at(2, 0)
