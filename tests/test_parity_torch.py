"""Every layer, and the whole model, on both routes (layers/ and layers/fast/), against
PyTorch: the independent oracle.

Same inputs, same weights, same upstream gradient (a random one, pushed through torch
autograd with `out.backward(dout)`), then values and every gradient compared:
float64 to 1e-10 and float32 to 1e-4, relative to the largest entry of PyTorch's answer.
Shapes are chosen to be awkward: stride 4 with 11x11 kernels, padding, H != W, KH != KW,
odd channel counts, groups=2, overlapping pools.

torch is a test dependency (pyproject's `test` extra): it is imported, not skipped.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from types import SimpleNamespace

import layers
import layers.fast
import layers.fast.conv as conv_module
from layers.fast import winograd
from tinyalex.gradcheck import single_threaded
from tinyalex.model import build_model

TOL = {np.float64: 1e-10, np.float32: 1e-4}
DTYPES = [np.float64, np.float32]


@pytest.fixture(scope="module", autouse=True)
def small_thread_pools():
    """The arrays here are small: one thread for numpy/Numba/torch (restored afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    with single_threaded():
        yield
    torch.set_num_threads(threads)


def assert_close(ours, theirs, dtype, what):
    theirs = theirs.detach().numpy() if isinstance(theirs, torch.Tensor) else np.asarray(theirs)
    ours = np.asarray(ours)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs torch {theirs.shape}"
    assert ours.dtype == np.dtype(dtype), f"{what}: dtype {ours.dtype}, expected {np.dtype(dtype)}"
    scale = max(float(np.max(np.abs(theirs))), 1e-30) if theirs.size else 1.0
    err = float(np.max(np.abs(ours.astype(np.float64) - theirs.astype(np.float64)))) / scale \
        if theirs.size else 0.0
    assert err <= TOL[dtype], f"{what}: relative difference {err:.2e} > {TOL[dtype]:.0e}"


@pytest.fixture(params=["readable", "fast"])
def ops(request):
    """The layers of one route: each layer test runs on both."""
    return layers if request.param == "readable" else layers.fast


def leaf(a):
    return torch.from_numpy(np.array(a, copy=True)).requires_grad_(True)


# ---------------------------------------------------------------------------------------
# layers

CONV_CASES = [
    # x (N, C, H, W), w (F, C/groups, KH, KW), stride, pad, groups
    ((2, 3, 23, 19), (4, 3, 11, 11), 4, 2, 1),     # AlexNet's conv1 shape class, H != W
    ((2, 6, 9, 8), (6, 3, 5, 3), 1, 2, 2),         # groups=2, KH != KW, padding
    ((1, 5, 7, 9), (3, 5, 4, 2), 3, 1, 1),         # odd channels, stride 3, even kernel
    ((3, 4, 10, 7), (6, 2, 3, 3), 2, 0, 2),        # groups=2, stride 2, no padding
    ((2, 2, 3, 4), (2, 2, 5, 5), 1, 1, 1),         # kernel exactly as large as the padded input
    ((1, 6, 13, 13), (4, 3, 1, 1), 1, 0, 2),       # 1x1 grouped
    # 3x3 or 5x5, stride 1, >= 8 channels per group: Winograd on the fast route
    ((2, 16, 9, 7), (6, 8, 3, 3), 1, 1, 2),        # groups, sizes not multiples of its 4x4 tiles
    ((1, 8, 6, 13), (5, 8, 3, 3), 1, 2, 1),        # padding 2
    ((2, 16, 15, 11), (4, 8, 5, 5), 1, 2, 2),      # Winograd 5x5, groups
]
WINOGRAD_CASES = CONV_CASES[-3:]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, pad, groups", CONV_CASES)
def test_conv_matches_torch(ops, xs, ws, stride, pad, groups, dtype):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    out, cache = ops.conv_forward(x, w, b, stride=stride, pad=pad, groups=groups)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    ref = F.conv2d(xt, wt, bt, stride=stride, padding=pad, groups=groups)
    assert_close(out, ref, dtype, "conv out")

    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = ops.conv_backward(dout, cache)
    ref.backward(torch.from_numpy(dout))
    assert_close(dx, xt.grad, dtype, "conv dx")
    assert_close(dw, wt.grad, dtype, "conv dw")
    assert_close(db, bt.grad, dtype, "conv db")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, stride, pad, groups", CONV_CASES[:4] + WINOGRAD_CASES[::2])
@pytest.mark.parametrize("chunked", [False, True])
def test_fused_conv_relu_matches_torch_relu_of_conv2d(xs, ws, stride, pad, groups, dtype, chunked, monkeypatch):
    if chunked:
        monkeypatch.setattr(conv_module, "PIECE_COLS_BYTES", 1)      # one image per piece
        monkeypatch.setattr(winograd, "CHUNK_BYTES", 1)
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(xs).astype(dtype), rng.standard_normal(ws).astype(dtype)
    b = rng.standard_normal(ws[0]).astype(dtype)
    out, cache = layers.fast.conv_relu_forward(x, w, b, stride=stride, pad=pad, groups=groups)
    assert (out == 0).any() and (out > 0).any()                 # the ReLU mask matters here
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    ref = torch.relu(F.conv2d(xt, wt, bt, stride=stride, padding=pad, groups=groups))
    assert_close(out, ref, dtype, "conv+relu out")
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = layers.fast.conv_backward(dout, cache)
    ref.backward(torch.from_numpy(dout))
    assert_close(dx, xt.grad, dtype, "conv+relu dx")
    assert_close(dw, wt.grad, dtype, "conv+relu dw")
    assert_close(db, bt.grad, dtype, "conv+relu db")


def test_conv_chunked_batch_matches_torch(monkeypatch):
    """Batches larger than one im2col buffer are processed in chunks: same answer."""
    monkeypatch.setattr(conv_module, "PIECE_COLS_BYTES", 1)      # one image per piece
    rng = np.random.default_rng(1)
    x, w, b = rng.standard_normal((3, 4, 9, 8)), rng.standard_normal((6, 2, 3, 3)), rng.standard_normal(6)
    out, cache = layers.fast.conv_forward(x, w, b, stride=1, pad=1, groups=2)
    dout = rng.standard_normal(out.shape)
    dx, dw, db = layers.fast.conv_backward(dout, cache)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    ref = F.conv2d(xt, wt, bt, padding=1, groups=2)
    ref.backward(torch.from_numpy(dout))
    for ours, theirs, what in ((out, ref, "out"), (dx, xt.grad, "dx"), (dw, wt.grad, "dw"), (db, bt.grad, "db")):
        assert_close(ours, theirs, np.float64, f"chunked conv {what}")


POOL_CASES = [
    # x shape, size, stride
    ((2, 3, 13, 11), 3, 2),        # AlexNet's overlapping pool, H != W
    ((2, 3, 8, 6), 2, 2),
    ((1, 5, 7, 8), 3, 2),          # odd channels, partial last window dropped
    ((2, 2, 9, 7), (3, 2), 2),     # KH != KW
    ((1, 1, 3, 3), 3, 1),          # window = input
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, size, stride", POOL_CASES)
def test_maxpool_matches_torch(ops, xs, size, stride, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(xs).astype(dtype)
    out, cache = ops.maxpool_forward(x, size=size, stride=stride)
    xt = leaf(x)
    ref = F.max_pool2d(xt, kernel_size=size, stride=stride)
    assert_close(out, ref, dtype, "pool out")
    dout = rng.standard_normal(out.shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    assert_close(ops.maxpool_backward(dout, cache), xt.grad, dtype, "pool dx")


def test_maxpool_ties_go_where_torch_sends_them(ops):
    """After a ReLU many window entries are exactly 0: the documented tie rule (first
    maximum in row-major order) must route the gradient as PyTorch's CPU kernel does."""
    rng = np.random.default_rng(2)
    x = np.maximum(rng.standard_normal((2, 3, 11, 9)), 0.0)
    x[0, 0] = 0.0                                          # a whole plane of ties
    x[1, 1, ::2] = 1.5                                     # ties at a positive value
    out, cache = ops.maxpool_forward(x, size=3, stride=2)
    dout = rng.standard_normal(out.shape)
    xt = leaf(x)
    ref = F.max_pool2d(xt, 3, 2)
    ref.backward(torch.from_numpy(dout))
    assert_close(out, ref, np.float64, "pool out with ties")
    assert_close(ops.maxpool_backward(dout, cache), xt.grad, np.float64, "pool dx with ties")


LRN_CASES = [
    # x shape, size, k, alpha, beta
    ((2, 7, 5, 6), 5, 2.0, 1e-4, 0.75),       # the paper's constants
    ((2, 7, 5, 6), 5, 2.0, 0.5, 0.75),        # large alpha: the cross-channel term matters
    ((1, 3, 4, 4), 5, 1.0, 1.0, 0.5),         # fewer channels than the window
    ((2, 6, 3, 5), 4, 2.0, 0.3, 0.75),        # even window (asymmetric, like PyTorch)
    ((1, 1, 3, 2), 5, 2.0, 2.0, 0.75),        # one channel
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("alpha_over_n", [False, True])
@pytest.mark.parametrize("xs, size, k, alpha, beta", LRN_CASES)
def test_lrn_matches_torch(ops, xs, size, k, alpha, beta, alpha_over_n, dtype):
    rng = np.random.default_rng(0)
    x = (2.0 * rng.standard_normal(xs)).astype(dtype)
    out, cache = ops.lrn_forward(x, size=size, k=k, alpha=alpha, beta=beta,
                                    alpha_over_n=alpha_over_n)
    # PyTorch divides alpha by size: the paper's alpha is PyTorch's alpha / size
    torch_alpha = alpha if alpha_over_n else alpha * size
    xt = leaf(x)
    ref = F.local_response_norm(xt, size, alpha=torch_alpha, beta=beta, k=k)
    assert_close(out, ref, dtype, "lrn out")
    dout = rng.standard_normal(out.shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    assert_close(ops.lrn_backward(dout, cache), xt.grad, dtype, "lrn dx")


def test_lrn_paper_layer_is_torch_local_response_norm_with_alpha_times_n(ops):
    x = np.random.default_rng(3).standard_normal((2, 96, 4, 4)) * 10
    out, _ = ops.lrn_forward(x)                          # defaults: the paper's layer
    ref = torch.nn.LocalResponseNorm(5, alpha=5e-4, beta=0.75, k=2.0)(torch.from_numpy(x))
    assert_close(out, ref, np.float64, "paper LRN")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("drop_prob", [0.5, 0.2])
def test_dropout_with_torchs_mask_matches_torch(ops, drop_prob, dtype):
    rng = np.random.default_rng(0)
    x = (np.abs(rng.standard_normal((6, 50))) + 0.1).astype(dtype)   # no zeros: mask = out != 0
    xt = leaf(x)
    torch.manual_seed(0)
    ref = F.dropout(xt, p=drop_prob, training=True)
    mask = ref.detach().numpy() != 0
    assert 0 < mask.mean() < 1
    out, cache = ops.dropout_forward(x, drop_prob=drop_prob, train=True, mask=mask)
    assert_close(out, ref, dtype, "dropout out")
    dout = rng.standard_normal(x.shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    assert_close(ops.dropout_backward(dout, cache), xt.grad, dtype, "dropout dx")


def test_dropout_eval_is_the_identity_like_torch(ops):
    x = np.random.default_rng(0).standard_normal((4, 3, 5, 5))
    out, cache = ops.dropout_forward(x, drop_prob=0.5, train=False)
    assert_close(out, F.dropout(torch.from_numpy(x), 0.5, training=False), np.float64, "eval dropout")
    dout = np.random.default_rng(1).standard_normal(x.shape)
    assert np.array_equal(ops.dropout_backward(dout, cache), dout)


def test_dropout_generator_mask_has_the_stated_drop_probability(ops):
    x = np.ones((400, 500))
    out, cache = ops.dropout_forward(x, drop_prob=0.3, train=True, rng=np.random.default_rng(0))
    dropped = np.mean(out == 0)
    assert abs(dropped - 0.3) < 0.005                       # drop_prob is P(zeroed)
    assert np.allclose(out[out != 0], 1 / 0.7)              # inverted scaling
    again, _ = ops.dropout_forward(x, drop_prob=0.3, train=True, rng=np.random.default_rng(0))
    assert np.array_equal(out, again)                       # same generator state, same mask


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, d, m", [(4, 7, 5), (1, 13, 3), (3, 1, 1)])
def test_dense_matches_torch(ops, n, d, m, dtype):
    rng = np.random.default_rng(0)
    x, w, b = (rng.standard_normal(s).astype(dtype) for s in ((n, d), (m, d), (m,)))
    out, cache = ops.dense_forward(x, w, b)
    xt, wt, bt = leaf(x), leaf(w), leaf(b)
    ref = F.linear(xt, wt, bt)
    assert_close(out, ref, dtype, "dense out")
    dout = rng.standard_normal(out.shape).astype(dtype)
    dx, dw, db = ops.dense_backward(dout, cache)
    ref.backward(torch.from_numpy(dout))
    assert_close(dx, xt.grad, dtype, "dense dx")
    assert_close(dw, wt.grad, dtype, "dense dw")
    assert_close(db, bt.grad, dtype, "dense db")


@pytest.mark.parametrize("dtype", DTYPES)
def test_relu_matches_torch_including_exact_zeros(ops, dtype):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 5, 4, 7)).astype(dtype)
    x[0, 0] = 0.0                                           # the kink: both take slope 0
    out, cache = ops.relu_forward(x)
    xt = leaf(x)
    ref = F.relu(xt)
    assert_close(out, ref, dtype, "relu out")
    dout = rng.standard_normal(x.shape).astype(dtype)
    ref.backward(torch.from_numpy(dout))
    assert_close(ops.relu_backward(dout, cache), xt.grad, dtype, "relu dx")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("n, m, scale, shift", [(6, 10, 1.0, 0.0), (1, 3, 1.0, 0.0),
                                               (5, 7, 30.0, 1000.0), (4, 10, 5.0, -500.0)])
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_softmax_cross_entropy_matches_torch(ops, n, m, scale, shift, dtype, smoothing):
    rng = np.random.default_rng(0)
    logits = (rng.standard_normal((n, m)) * scale + shift).astype(dtype)
    y = rng.integers(0, m, size=n)
    loss, dlogits = ops.softmax_cross_entropy(logits, y, smoothing)
    lt = leaf(logits)
    ref = F.cross_entropy(lt, torch.from_numpy(y), label_smoothing=smoothing)   # batch mean
    ref.backward()
    assert np.isfinite(loss)
    assert abs(loss - ref.item()) <= TOL[dtype] * max(1.0, abs(ref.item()))
    assert_close(dlogits, lt.grad, dtype, "dlogits")


# ---------------------------------------------------------------------------------------
# the whole model
#
# The PyTorch network below is written from the architecture table (README, "The models"),
# not from tinyalex.model: strides, padding, where ReLU / LRN / pooling / dropout go.
# Filter counts, kernel sizes and groups are read off the parameter shapes and, for the
# paper and cifar models, checked against the table.

CONV_LAYOUT = {
    # conv: (stride, pad, LRN after ReLU, pool after)
    "paper": [(4, 2, True, True), (1, 2, True, True), (1, 1, False, False),
              (1, 1, False, False), (1, 1, False, True)],
    "cifar": [(1, 1, True, True), (1, 2, True, True), (1, 1, False, False),
              (1, 1, False, False), (1, 1, False, True)],
}
CONV_LAYOUT["tiny"] = CONV_LAYOUT["cifar"]
PAPER_TABLE = {  # filters, kernel, groups of conv1..conv5; fc widths
    "paper": ([96, 256, 384, 384, 256], [11, 5, 3, 3, 3], [1, 2, 1, 2, 2], [9216, 4096, 4096]),
    "cifar": ([96, 256, 384, 384, 256], [3, 5, 3, 3, 3], [1, 2, 1, 2, 2], [2304, 4096, 4096]),
}


def torch_alexnet(name, params, x, masks=None, pool_inputs=None):
    """Logits of the PyTorch AlexNet with tinyalex's parameters. masks: the two dropout
    keep-masks (fc6's input, fc7's input), or None for evaluation mode. pool_inputs: a list
    that gets what enters each max-pool."""
    h, channels = x, x.shape[1]
    for i, (stride, pad, lrn, pool) in enumerate(CONV_LAYOUT[name], start=1):
        w = params[f"conv{i}.w"]
        groups = channels // w.shape[1]
        h = F.relu(F.conv2d(h, w, params[f"conv{i}.b"], stride=stride, padding=pad, groups=groups))
        if lrn:
            h = F.local_response_norm(h, 5, alpha=5 * 1e-4, beta=0.75, k=2.0)
        if pool:
            if pool_inputs is not None:
                pool_inputs.append(h)
            h = F.max_pool2d(h, 3, 2)
        channels = w.shape[0]
    h = torch.flatten(h, 1)
    for j, layer in enumerate(("fc6", "fc7")):
        if masks is not None:
            h = h * torch.from_numpy(masks[j]) / (1 - 0.5)
        h = F.relu(F.linear(h, params[f"{layer}.w"], params[f"{layer}.b"]))
    return F.linear(h, params["fc8.w"], params["fc8.b"])


def check_architecture_against_the_table(name, params):
    if name not in PAPER_TABLE:
        return
    filters, kernels, groups, fc_in = PAPER_TABLE[name]
    channels = 3
    for i in range(5):
        w = params[f"conv{i + 1}.w"]
        assert w.shape == (filters[i], channels // groups[i], kernels[i], kernels[i]), f"conv{i + 1}"
        channels = filters[i]
    assert [params[f"fc{j}.w"].shape[1] for j in (6, 7, 8)] == fc_in
    assert params["fc8.w"].shape[0] == 10


def record_dropout_masks(model):
    """Wrap the model's dropout so the keep-masks it draws can be handed to PyTorch."""
    masks = []
    real = model.ops.dropout_forward

    def recording(x, **kwargs):
        out, cache = real(x, **kwargs)
        if cache.mask is not None:
            masks.append(cache.mask.copy())
        return out, cache
    funcs = {name: getattr(model.ops, name) for name in model.ops.__all__}
    model.ops = SimpleNamespace(**dict(funcs, dropout_forward=recording))
    return masks


def near_ties(pool_inputs, margin):
    """How many max-pool windows (3x3, stride 2) have a positive maximum with a runner-up
    within `margin` of it (relative to the largest value entering that pool: float32's
    rounding differences between routes scale with it)."""
    count = 0
    for h in pool_inputs:
        windows = F.unfold(h.detach().reshape(-1, 1, *h.shape[2:]), 3, stride=2)   # (N*C, 9, L)
        first, second = windows.topk(2, dim=1).values.unbind(1)
        count += int(((first > 0) & (first - second <= margin * h.max())).sum())
    return count


def batch_without_near_ties(name, model, batch, tparams):
    """A random batch (x, y); in float32, the first one whose max-pool windows all have a clear
    winner. Where two candidates of a window are within rounding of each other, the last bit of
    any sum (Winograd's or im2col's, PyTorch's or ours) decides which one the gradient goes
    to, and a whole-model comparison measures that choice instead of the layers."""
    dtype = model.params["fc8.w"].dtype
    for seed in range(20):
        rng = np.random.default_rng(seed)
        x = rng.standard_normal((batch,) + tuple(model.input_shape)).astype(dtype)
        y = rng.integers(0, model.num_classes, size=batch)
        if dtype != np.float32:
            return x, y
        pools = []
        with torch.no_grad():
            torch_alexnet(name, tparams, torch.from_numpy(x), pool_inputs=pools)
        if near_ties(pools, margin=1e-5) == 0:
            return x, y
    raise AssertionError("no batch without near-ties in 20 draws")


def test_near_ties_are_counted():
    h = torch.zeros(1, 1, 3, 3)
    assert near_ties([h], 1e-4) == 0                                  # all zero: no gradient to route
    h[0, 0, 1, 1] = 1.0
    assert near_ties([h], 1e-4) == 0
    h[0, 0, 2, 2] = 1.0 - 1e-6
    assert near_ties([h], 1e-4) == 1


def compare_model_with_torch(name, batch, dtype, route, init="torch", train=True):
    model = build_model(name, dtype=dtype, init=init, seed=1, route=route)
    check_architecture_against_the_table(name, model.params)
    tparams = {k: leaf(v) for k, v in model.params.items()}
    x, y = batch_without_near_ties(name, model, batch, tparams)
    xt, yt = leaf(x), torch.from_numpy(y)

    # evaluation mode: logits, loss, every gradient
    logits = model.forward(x)
    ref_logits = torch_alexnet(name, tparams, xt)
    assert_close(logits, ref_logits, dtype, f"{name} eval logits")
    result = model.loss(x, y, train=False, need_dx=True)
    loss, grads, dx = result.loss, result.grads, result.dx
    ref_loss = F.cross_entropy(ref_logits, yt)
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) <= TOL[dtype] * ref_loss.item()
    assert list(grads) == list(model.params)
    for k in model.params:
        assert_close(grads[k], tparams[k].grad, dtype, f"{name} eval d{k}")
    assert_close(dx, xt.grad, dtype, f"{name} eval dx")

    if not train:
        return
    # training mode: the masks our dropout drew, applied in PyTorch too
    masks = record_dropout_masks(model)
    result = model.loss(x, y, rng=np.random.default_rng(7), need_dx=True, need_logits=True)
    loss, grads, dx, logits = result.loss, result.grads, result.dx, result.logits
    assert len(masks) == 2 and all(0 < m.mean() < 1 for m in masks)
    for p in list(tparams.values()) + [xt]:
        p.grad = None
    ref_logits = torch_alexnet(name, tparams, xt, masks)
    ref_loss = F.cross_entropy(ref_logits, yt)
    ref_loss.backward()
    assert_close(logits, ref_logits, dtype, f"{name} train logits")
    assert abs(loss - ref_loss.item()) <= TOL[dtype] * ref_loss.item()
    for k in model.params:
        assert_close(grads[k], tparams[k].grad, dtype, f"{name} train d{k}")
    assert_close(dx, xt.grad, dtype, f"{name} train dx")


ROUTE_NAMES = ["readable", "fast"]


@pytest.mark.parametrize("route", ROUTE_NAMES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("init", ["torch", "he"])
def test_tiny_model_matches_torch(dtype, init, route):
    compare_model_with_torch("tiny", 4, dtype, route, init=init)


@pytest.mark.parametrize("route", ROUTE_NAMES)
def test_cifar_model_matches_torch(route):
    compare_model_with_torch("cifar", 2, np.float64, route)


@pytest.mark.parametrize("route", ROUTE_NAMES)
def test_paper_model_matches_torch(route):
    # one image, evaluation mode only (~5 s): dropout masks are covered by tiny and cifar
    compare_model_with_torch("paper", 1, np.float64, route, train=False)
