"""The two routes through the layers give the same answers.

The readable layers (`layers/`) are the definition; they are held to the plain loops of
`layers/reference.py` here, and the fast route (`layers/fast/`) is held to them: every
function, values and every gradient, float32 and float64, on awkward shapes (stride 4 with
11x11 kernels, padding, H != W, KH != KW, odd channel counts, groups=2, overlapping pools,
the Winograd layers' 3x3 and 5x5 with 8+ channels per group). Tolerances are relative to the
largest entry: 1e-12 in float64, 2e-5 in float32 (Winograd's transforms round differently
from direct sums). Whole models on both routes are compared at the end.
"""

import inspect
import weakref

import numpy as np
import pytest

import layers
import layers.fast as fast
from layers import im2col as readable_im2col
from layers import reference
from tinyalex.gradcheck import single_threaded
from tinyalex.model import build_model

TOL = {np.float64: 1e-12, np.float32: 2e-5}
DTYPES = [np.float64, np.float32]


@pytest.fixture(autouse=True)
def one_thread():
    with single_threaded():
        yield


def close(ours, theirs, dtype, what):
    ours, theirs = np.asarray(ours), np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: {ours.shape} vs {theirs.shape}"
    assert ours.dtype == theirs.dtype == np.dtype(dtype), f"{what}: {ours.dtype} vs {theirs.dtype}"
    scale = max(float(np.max(np.abs(theirs))), 1e-30)
    err = float(np.max(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)))) / scale
    assert err <= TOL[dtype], f"{what}: relative difference {err:.2e} > {TOL[dtype]:.0e}"


# (N, C, H, W), (F, C/groups, KH, KW), stride, pad, groups
CONV_CASES = [
    ((2, 3, 23, 19), (4, 3, 11, 11), 4, 2, 1),
    ((2, 6, 9, 8), (6, 3, 5, 3), 1, 2, 2),
    ((1, 5, 7, 9), (3, 5, 4, 2), 3, 1, 1),
    ((3, 4, 10, 7), (6, 2, 3, 3), 2, 0, 2),
    ((1, 2, 4, 3), (2, 2, 2, 2), 1, 3, 1),         # pad larger than the kernel
    ((2, 16, 9, 7), (6, 8, 3, 3), 1, 1, 2),        # Winograd 3x3 on the fast route
    ((2, 16, 15, 11), (4, 8, 5, 5), 1, 2, 2),      # Winograd 5x5
    ((1, 3, 32, 32), (8, 3, 3, 3), 1, 1, 1),       # cifar's conv1 shape class
]


LOOP_CASES = [case for case in CONV_CASES if case[0][2] <= 20]   # (the Python loops are slow)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", LOOP_CASES)
def test_readable_conv_is_the_loop_definition(case, dtype):
    xs, ws, stride, pad, groups = case
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    out, cache = layers.conv_forward(x, w, b, stride=stride, pad=pad, groups=groups)
    close(out, reference.conv_forward_loops(x, w, b, stride, pad, groups), dtype, "out")
    dout = rng.standard_normal(out.shape).astype(dtype)
    want = reference.conv_backward_loops(dout, x, w, stride, pad, groups)
    for got, ref, what in zip(layers.conv_backward(dout, cache), want, ("dx", "dw", "db")):
        close(got, ref, dtype, what)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", CONV_CASES)
def test_readable_im2col_and_col2im_match_the_loops(case, dtype):
    (N, C, H, W), (F, Cg, KH, KW), stride, pad, _ = case
    x = np.random.default_rng(1).standard_normal((N, C, H, W)).astype(dtype)
    cols = readable_im2col.im2col(x, KH, KW, stride, pad)
    np.testing.assert_array_equal(cols, reference.im2col(x, KH, KW, stride, pad))
    dcols = np.random.default_rng(2).standard_normal(cols.shape).astype(dtype)
    np.testing.assert_array_equal(readable_im2col.col2im(dcols, x.shape, KH, KW, stride, pad),
                                  reference.col2im(dcols, x.shape, KH, KW, stride, pad))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("relu", [False, True])
def test_fast_conv_equals_readable(case, dtype, relu):
    xs, ws, stride, pad, groups = case
    rng = np.random.default_rng(3)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in (xs, ws, ws[:1]))
    want, cache = layers.conv_forward(x, w, b, stride=stride, pad=pad, groups=groups)
    dout = rng.standard_normal(want.shape).astype(dtype)
    if relu:   # fast's fused conv+ReLU against readable conv, then ReLU
        want, relu_cache = layers.relu_forward(want)
        grads = layers.conv_backward(layers.relu_backward(dout, relu_cache), cache)
        got, fast_cache = fast.conv_relu_forward(x, w, b, stride=stride, pad=pad, groups=groups)
        assert (want == 0).any() and (want > 0).any()
    else:
        grads = layers.conv_backward(dout, cache)
        got, fast_cache = fast.conv_forward(x, w, b, stride=stride, pad=pad, groups=groups)
    close(got, want, dtype, "out")
    for mine, ref, what in zip(fast.conv_backward(dout, fast_cache), grads, ("dx", "dw", "db")):
        close(mine, ref, dtype, what)
    dx, dw, db = fast.conv_backward(dout, fast_cache, need_dx=False)   # conv1's shortcut
    assert dx is None
    close(dw, grads[1], dtype, "dw without dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, size, stride", [
    ((2, 3, 13, 11), 3, 2), ((2, 5, 8, 8), 2, 2), ((1, 2, 9, 6), (3, 2), 1), ((3, 4, 7, 7), 3, 3)])
def test_fast_pool_equals_readable(shape, size, stride, dtype):
    rng = np.random.default_rng(4)
    x = rng.standard_normal(shape).astype(dtype)
    x[0, 0, :3, :3] = 1.0                                     # a tie: the first maximum wins in both
    want, cache = layers.maxpool_forward(x, size=size, stride=stride)
    got, fast_cache = fast.maxpool_forward(x, size=size, stride=stride)
    np.testing.assert_array_equal(got, want)
    np.testing.assert_array_equal(fast_cache.argmax, cache.argmax)
    dout = rng.standard_normal(want.shape).astype(dtype)
    close(fast.maxpool_backward(dout, fast_cache), layers.maxpool_backward(dout, cache), dtype, "dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, kwargs", [
    ((2, 7, 5, 3), dict()),                                    # the paper's constants
    ((2, 7, 4, 5), dict(size=5, alpha=1.0)),                  # a large alpha: the cross term counts
    ((1, 6, 3, 3), dict(size=4, k=1.0, alpha=0.5, beta=0.6)), # even window, another beta
    ((2, 3, 2, 2), dict(size=3, alpha=0.5, alpha_over_n=True)),
    ((1, 1, 2, 2), dict(size=5, alpha=2.0)),                  # one channel
])
def test_fast_lrn_equals_readable(shape, kwargs, dtype):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(shape).astype(dtype)
    want, cache = layers.lrn_forward(x, **kwargs)
    got, fast_cache = fast.lrn_forward(x, **kwargs)
    close(got, want, dtype, "out")
    close(fast_cache.scale, cache.scale, dtype, "scale")     # not kept, computed when asked
    dout = rng.standard_normal(shape).astype(dtype)
    close(fast.lrn_backward(dout, fast_cache), layers.lrn_backward(dout, cache), dtype, "dx")


def test_readable_lrn_and_pool_are_the_loop_definitions():
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 7, 3, 4))
    out, cache = layers.lrn_forward(x, size=4, alpha=0.7)
    ref_out, ref_scale = reference.lrn(x, 4, 2.0, 0.7, 0.75)
    close(out, ref_out, np.float64, "lrn out")
    dout = rng.standard_normal(x.shape)
    close(layers.lrn_backward(dout, cache), reference.lrn_grad(dout, x, ref_out, ref_scale, 4, 0.7, 0.75),
          np.float64, "lrn dx")
    x = rng.standard_normal((2, 3, 9, 8))
    out, cache = layers.maxpool_forward(x, size=3, stride=2)
    ref_out, ref_argmax = reference.maxpool(x, 3, 3, 2)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(cache.argmax, ref_argmax)
    dout = rng.standard_normal(out.shape)
    close(layers.maxpool_backward(dout, cache), reference.maxpool_grad(dout, ref_argmax, x.shape),
          np.float64, "pool dx")


@pytest.mark.parametrize("dtype", DTYPES)
def test_fast_dense_equals_readable(dtype):
    rng = np.random.default_rng(7)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((5, 13), (3, 13), (3,)))
    want, cache = layers.dense_forward(x, w, b)
    got, fast_cache = fast.dense_forward(x, w, b)
    close(got, want, dtype, "out")
    dout = rng.standard_normal(want.shape).astype(dtype)
    for mine, ref, what in zip(fast.dense_backward(dout, fast_cache), layers.dense_backward(dout, cache),
                               ("dx", "dw", "db")):
        close(mine, ref, dtype, what)


def test_both_routes_export_the_same_functions_with_the_same_signatures():
    """A model calls either route with the same arguments and keywords (conv_backward's
    need_dx included); the fast route may offer more (conv_relu_forward, its fusion)."""
    readable = set(layers.__all__)
    assert readable <= set(fast.__all__)
    for name in readable:
        if name.endswith("Cache"):
            continue
        mine, theirs = getattr(fast, name), getattr(layers, name)
        assert callable(mine) and callable(theirs)
        assert inspect.signature(mine) == inspect.signature(theirs), name


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name, batch", [("tiny", 3), ("cifar", 2)])
def test_models_on_both_routes_agree(name, batch, dtype):
    """The whole training step: loss, every parameter's gradient, the input's gradient and the
    logits, with the same dropout masks (the same generator seed).

    Not the gradients of the `cifar` model in float32: its ReLU inputs always include some
    within float32 rounding of zero (the smallest is 3e-8 to 3e-6 of its layer's largest, over
    30 input seeds, and the routes' rounding differs by about 2e-6 of it), so the two routes
    may put such a unit on different sides of zero, and that one unit moves the gradient of
    every earlier layer by about 1%: the comparison would measure the flip, not the layers.
    Its values are compared (a flipped unit is within rounding of 0 either way); its gradients
    in float64, and every layer's in float32 above."""
    readable = build_model(name, seed=1, dtype=dtype, route="readable")
    quick = build_model(name, seed=1, dtype=dtype, route="fast")
    rng = np.random.default_rng(8)
    x = rng.standard_normal((batch,) + readable.input_shape).astype(dtype)
    y = rng.integers(0, 10, size=batch)
    want = readable.loss(x, y, rng=np.random.default_rng(9), need_dx=True, need_logits=True)
    got = quick.loss(x, y, rng=np.random.default_rng(9), need_dx=True, need_logits=True)
    assert got.loss == pytest.approx(want.loss, rel=TOL[dtype] * 10)
    assert list(got.grads) == list(want.grads) == list(readable.params)
    if not (name == "cifar" and dtype == np.float32):
        for key in want.grads:
            close(got.grads[key], want.grads[key], dtype, key)
        close(got.dx, want.dx, dtype, "dx")
    close(got.logits, want.logits, dtype, "logits")
    close(quick.forward(x, upto="relu7"), readable.forward(x, upto="relu7"), dtype, "fc7 features")


@pytest.mark.parametrize("route", ["fast", "readable"])
def test_evaluation_keeps_no_caches(route):
    """model.forward (evaluation) drops each layer's cache once the next layer has run, where
    forward_tape keeps them all for the backward pass (the fast convolutions' caches hold
    their transformed input too): while a layer runs, at most two outputs older than its
    input's input are still alive (flatten's output is a view of pool5's, and evaluation's
    dropout hands its input on). Both give the same logits."""
    model = build_model("tiny", seed=1, route=route)
    outputs, alive = [], []        # weak references to each step's output; old ones alive
    steps = model.forward_steps

    def spied(train, rng):
        def spy(step):
            def run(h, name, opts):
                alive.append(sum(ref() is not None for ref in outputs[:-2]))
                out, cache = step(h, name, opts)
                outputs.append(weakref.ref(out))
                return out, cache
            return run
        return {kind: spy(step) for kind, step in steps(train, rng).items()}
    model.forward_steps = spied
    x = np.random.default_rng(3).standard_normal((2,) + model.input_shape).astype(np.float32)
    logits, tape = model.forward_tape(x)
    assert max(alive) >= 10                               # the tape holds them
    outputs.clear(), alive.clear()
    np.testing.assert_array_equal(model.forward(x), logits)
    assert len(alive) == len(model.plan) and max(alive) <= 2


def test_a_broken_fast_kernel_is_caught(monkeypatch):
    """The comparison can fail: a fast LRN backward that drops the cross-channel term."""
    x = np.random.default_rng(10).standard_normal((2, 7, 4, 5))
    want, cache = layers.lrn_forward(x, alpha=1.0)
    _, fast_cache = fast.lrn_forward(x, alpha=1.0)
    dout = np.ones_like(x)
    monkeypatch.setattr(fast.lrn.kernels, "lrn_grad",
                        lambda dout, x, size, k, alpha, beta: dout * fast_cache.scale ** -beta)
    with pytest.raises(AssertionError, match="relative difference"):
        close(fast.lrn_backward(dout, fast_cache), layers.lrn_backward(dout, cache), np.float64, "dx")
