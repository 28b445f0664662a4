"""The gradient checker passes on the real layers and fails on broken ones.

A checker that never fails proves nothing, so most tests here hand it a deliberately wrong
backward pass (through the `ops` namespace, or by monkeypatching `layers` in a subprocess
and calling main()) and assert that it reports FAIL on exactly the gradient that is wrong
and exits non-zero.
"""

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

import layers
import layers.fast
from tinyalex import gradcheck
from tinyalex.gradcheck import Check, rel_error

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def one_thread():
    # tiny arrays: thread pools only cost time (see gradcheck.single_threaded)
    with gradcheck.single_threaded():
        yield


def ops_with(route=layers, **overrides):
    """The real layer functions of a route (layers or layers.fast), some replaced."""
    funcs = {name: getattr(route, name) for name in route.__all__}
    funcs.update(overrides)
    return SimpleNamespace(**funcs)


def rows_by_key(rows):
    return {(r.name, r.what.split()[0]): r for r in rows}


# ---------------------------------------------------------------------------------------
# the measuring tools

def test_rel_error_definition():
    assert rel_error([0.0, 0.0], [0.0, 0.0]) == 0.0
    assert rel_error([1.0], [1.0]) == 0.0
    assert rel_error([1.0, 2.0], [1.0, 2.2]) == pytest.approx(0.2 / 4.2)
    # the 1e-8 floor: two tiny numbers are not "100% apart"
    assert rel_error([1e-12], [3e-12]) == pytest.approx(2e-12 / 1e-8)
    # the whole net's floor: a true 0 against a difference of one ulp of the loss over 2h
    # passes there, and a gradient 1% off still fails
    noise = np.spacing(4.0) / 2e-5                                    # 4.4e-11
    assert rel_error([0.0], [noise]) > gradcheck.NET_THRESHOLD
    assert rel_error([0.0], [noise], floor=gradcheck.NET_FLOOR) < gradcheck.NET_THRESHOLD / 2
    assert rel_error([1e-6], [1.01e-6], floor=gradcheck.NET_FLOOR) > gradcheck.NET_THRESHOLD
    assert rel_error([np.nan], [1.0]) == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        rel_error(np.zeros(3), np.zeros(4))


def test_check_row_with_nan_error_fails():
    assert not Check("x", "dx", float("nan"), 1e-7).passed
    assert not Check("x", "dx", 2e-7, 1e-7).passed
    assert Check("x", "dx", 5e-8, 1e-7).passed


def test_numerical_gradient_orders_and_restores_input():
    x = np.linspace(-1.0, 2.0, 7)
    before = x.copy()
    exact = np.cos(x)
    second = gradcheck.numerical_gradient(lambda: np.sin(x).sum(), x, np.arange(7), 1e-3)
    fourth = gradcheck.numerical_gradient(lambda: np.sin(x).sum(), x, np.arange(7), 1e-3, order=4)
    assert np.array_equal(x, before)                       # every nudge was undone
    # order 2: error ~ h^2/6 ~ 1.7e-7; order 4: ~ h^4/30, below rounding
    assert 1e-8 < np.max(np.abs(second - exact)) < 1e-6
    assert np.max(np.abs(fourth - exact)) < 1e-10


def test_numerical_vjp_equals_difference_of_weighted_sums():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    w = rng.standard_normal((5, 4))
    dout = rng.standard_normal((3, 5))
    numeric = gradcheck.numerical_vjp(lambda: np.tanh(x @ w.T), dout, x, np.arange(x.size),
                                      1e-3, order=4)
    exact = ((1 - np.tanh(x @ w.T) ** 2) * dout) @ w
    assert rel_error(numeric, exact.reshape(-1)) < 1e-9


def test_kink_entries_are_skipped_without_looking_at_the_gradient():
    # f = sum |x|: entries within 2h of 0 straddle the kink
    x = np.array([1.0, -0.5, 3e-6, 2.0, -1e-6, 0.7, -3.0])
    idx, numeric, kinks = gradcheck.kink_free_differences(
        lambda: np.abs(x).sum(), x, np.random.default_rng(0), count=5, h=1e-5)
    assert kinks == 2
    assert sorted(idx) == [0, 1, 3, 5, 6]
    assert np.allclose(numeric, np.sign(x[idx]), rtol=1e-9)


def test_inputs_avoid_non_differentiable_points():
    rng = np.random.default_rng(0)
    x = gradcheck.distinct_values((2, 3, 9, 11), rng)
    assert len(np.unique(x)) == x.size                     # no ties for max-pool
    assert np.min(np.diff(np.sort(x.ravel()))) == pytest.approx(4.0 / x.size)
    assert np.min(np.abs(gradcheck.away_from_zero((500,), rng))) >= 0.1


# ---------------------------------------------------------------------------------------
# the real layers pass

def test_every_check_passes_on_both_routes(capsys):
    code = gradcheck.main([])
    out = capsys.readouterr().out
    assert code == 0, out
    assert "FAIL" not in out
    rows = [line for line in out.splitlines() if line.endswith("PASS")]
    for route in ("readable", "fast"):
        mine = [line[len(route) + 2:] for line in rows if line.startswith(route + ": ")]
        # every family is in the table, and every conv/dense config checks dx, dw and db
        for family in ("conv", "maxpool", "lrn", "dropout", "dense", "relu", "softmax", "net tiny"):
            assert any(line.startswith(family) for line in mine), (route, family)
        assert sum(" dw " in line for line in mine) == 8        # 7 conv configs + dense
        assert sum(" db " in line for line in mine) == 8
        net = [line for line in mine if line.startswith("net tiny")]
        assert len(net) == 17                                    # 16 parameters + the input
    assert len(rows) == 108 and "108/108 checks passed, 0 failed" in out


@pytest.mark.parametrize("route", ["readable", "fast"])
def test_layer_option_runs_one_family(capsys, route):
    assert gradcheck.main(["--layer", "dense", "--seed", "5", "--route", route]) == 0
    out = capsys.readouterr().out
    assert f"{route}: dense 7->5" in out and "conv" not in out and "3/3 checks passed" in out


def test_rows_do_not_depend_on_which_families_run():
    alone = gradcheck.run_checks(["relu"], seed=3)
    together = [r for r in gradcheck.run_checks(["dense", "relu"], seed=3) if r.name == "relu"]
    assert alone == together


# ---------------------------------------------------------------------------------------
# broken backward passes are caught

@pytest.mark.parametrize("route", [layers, layers.fast], ids=["readable", "fast"])
def test_conv_dw_off_by_a_factor_fails_only_dw(route):
    def conv_backward(dout, cache):
        dx, dw, db = route.conv_backward(dout, cache)
        return dx, dw * 1.001, db
    rows = gradcheck.run_checks(["conv"], ops=ops_with(route, conv_backward=conv_backward))
    for r in rows:
        assert r.passed == (not r.what.startswith("dw")), r
    assert min(r.error for r in rows if r.what.startswith("dw")) > 1e-4


def test_conv_dx_of_wrong_group_fails():
    # a backward that swaps the two groups' input gradients (only visible with groups=2)
    def conv_backward(dout, cache):
        dx, dw, db = layers.conv_backward(dout, cache)
        if cache.groups == 2:
            C = dx.shape[1]
            dx = np.concatenate([dx[:, C // 2:], dx[:, :C // 2]], axis=1)
        return dx, dw, db
    rows = rows_by_key(gradcheck.run_checks(["conv"], ops=ops_with(conv_backward=conv_backward)))
    assert not rows["conv s1 p2 5x3 g2", "dx"].passed
    assert not rows["conv s2 p0 3x5 g2 C=6", "dx"].passed
    assert rows["conv s1 p1 3x3", "dx"].passed


def lrn_backward_diagonal_only(dout, cache):
    """The careless derivation: dL/da_j = g_j * s_j^(-beta), forgetting that a_j is in s."""
    return dout * cache.scale ** (-cache.beta)


def lrn_backward_self_term_only(dout, cache):
    """Differentiates s_j in b_j but forgets a_j's effect on its neighbours' s_i (i != j)."""
    return (dout * cache.scale ** (-cache.beta)
            - 2 * cache.alpha * cache.beta * cache.x * dout * cache.out / cache.scale)


@pytest.mark.parametrize("route", [layers, layers.fast], ids=["readable", "fast"])
@pytest.mark.parametrize("broken", [lrn_backward_diagonal_only, lrn_backward_self_term_only])
def test_lrn_backward_missing_the_cross_channel_term_fails_at_large_alpha(broken, route):
    rows = rows_by_key(gradcheck.run_checks(["lrn"], ops=ops_with(route, lrn_backward=broken)))
    large = rows["lrn large alpha=1.0", "dx"]
    assert not large.passed and large.error > 0.5           # caught by a wide margin
    # At the paper's alpha the same bug gives a worst entry of ~1e-2 (7e-3 to 2e-2 over
    # seeds): caught here only because the layer threshold is tight; the "< 1e-2 is
    # probably fine" rule of thumb for gradient checks would wave it through.
    paper = rows["lrn paper alpha=1e-4", "dx"]
    assert paper.error < large.error / 10


def test_maxpool_backward_that_assigns_instead_of_accumulating_fails_for_overlapping_pools():
    def maxpool_backward(dout, cache):
        N, C, H, W = cache.x_shape
        dx = np.zeros((N, C, H * W), dtype=dout.dtype)
        for n in range(N):
            for c in range(C):
                # fancy assignment: a pixel that wins two windows keeps only one gradient
                dx[n, c, cache.argmax[n, c].ravel()] = dout[n, c].ravel()
        return dx.reshape(cache.x_shape)
    rows = rows_by_key(gradcheck.run_checks(["pool"], ops=ops_with(layers.fast, maxpool_backward=maxpool_backward)))
    assert not rows["maxpool 3/2 (overlapping)", "dx"].passed
    assert not rows["maxpool 3x2/1", "dx"].passed           # stride 1 overlaps too
    assert rows["maxpool 2/2", "dx"].passed                 # no overlap, no difference


def test_dropout_backward_without_the_inverted_scale_fails():
    def dropout_backward(dout, cache):
        return dout if cache.mask is None else dout * cache.mask
    rows = rows_by_key(gradcheck.run_checks(["dropout"], ops=ops_with(dropout_backward=dropout_backward)))
    assert not rows["dropout 0.5 fixed mask", "dx"].passed
    assert not rows["dropout 0.3 generator", "dx"].passed
    assert rows["dropout eval (identity)", "dx"].passed


def test_relu_backward_using_the_wrong_side_fails():
    def relu_backward(dout, cache):
        return np.where(cache.out > 0, 0.0, dout)
    (row,) = gradcheck.run_checks(["relu"], ops=ops_with(relu_backward=relu_backward))
    assert not row.passed


def test_dense_dw_transposed_is_reported_as_a_shape_failure():
    def dense_backward(dout, cache):
        dx, dw, db = layers.dense_backward(dout, cache)
        return dx, dw.T, db
    rows = rows_by_key(gradcheck.run_checks(["dense"], ops=ops_with(dense_backward=dense_backward)))
    assert not rows["dense 7->5", "dw"].passed and "shape" in rows["dense 7->5", "dw"].what
    assert rows["dense 7->5", "dx"].passed and rows["dense 7->5", "db"].passed


def test_loss_gradient_not_averaged_over_the_batch_fails_except_at_batch_one():
    def softmax_cross_entropy(logits, y):
        loss, dlogits = layers.softmax_cross_entropy(logits, y)
        return loss, dlogits * len(y)
    rows = gradcheck.run_checks(["loss"], ops=ops_with(softmax_cross_entropy=softmax_cross_entropy))
    by_name = {r.name: r for r in rows}
    assert not by_name["softmax cross-entropy"].passed
    assert by_name["softmax cross-entropy N=1"].passed


def test_backward_that_writes_into_its_input_fails():
    def relu_forward(x):
        out, cache = layers.relu_forward(x)
        x *= 1.0 + 1e-3                                      # corrupts the caller's array
        return out, cache
    (row,) = gradcheck.run_checks(["relu"], ops=ops_with(relu_forward=relu_forward))
    assert not row.passed and "modified" in row.what


def test_main_exits_one_and_lists_the_failure(capsys):
    def dense_backward(dout, cache):
        dx, dw, db = layers.dense_backward(dout, cache)
        return dx, dw, db + 1e-3
    code = gradcheck.main(["--layer", "dense"], ops=ops_with(dense_backward=dense_backward))
    out = capsys.readouterr().out
    assert code == 1
    assert "4/6 checks passed, 2 failed" in out                # the broken ops stand in for both routes
    assert "FAILED: readable: dense 7->5 db; fast: dense 7->5 db" in out


def run_python(code, *args):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OPENBLAS_NUM_THREADS="1", NUMBA_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args, "-c", code] if code else [sys.executable, *args],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("route", ["layers", "layers.fast"])
def test_command_exits_nonzero_with_a_monkeypatched_backward(route):
    """A broken conv backward on either route fails that route's conv and whole-network rows
    (the model calls the route's functions), and only that route's."""
    code = textwrap.dedent(f"""
        import importlib
        ops = importlib.import_module("{route}")
        real = ops.conv_backward
        def conv_backward(dout, cache, **kwargs):
            dx, dw, db = real(dout, cache, **kwargs)
            return dx, dw * 1.01, db
        ops.conv_backward = conv_backward
        from tinyalex.gradcheck import main
        raise SystemExit(main(["--layer", "conv", "--layer", "net"]))
    """)
    result = run_python(code)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    broken = "fast" if route == "layers.fast" else "readable"
    failed = [line for line in lines if line.endswith("FAIL")]
    assert failed and all(line.startswith(broken + ": ") for line in failed)
    assert all(" dw " in line or "dconv" in line for line in failed)
    assert sum(line.startswith(f"{broken}: net tiny") and "dconv" in line for line in failed) == 5
    assert "FAILED:" in result.stdout


def test_root_script_passes_and_exits_zero():
    result = run_python(None, "gradcheck.py", "--layer", "pool", "--layer", "relu", "--seed", "2")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "8/8 checks passed, 0 failed (seed 2" in result.stdout
