"""The Winograd route for stride-1 3x3 and 5x5 convolutions (layers/fast/winograd.py) against the im2col
route (layers/fast/conv.py with Winograd switched off, itself held to the readable layers and to PyTorch), and the transform
matrices against the identity they exist for."""

import numpy as np
import pytest

import layers.fast
import layers.fast.conv as conv_module
from layers.fast import kernels, winograd
from tinyalex.model import ARCHS

TOL = {np.float64: 1e-12, np.float32: 2e-5}   # relative to the largest entry of the answer


def rel_err(ours, ref):
    return float(np.max(np.abs(ours.astype(np.float64) - ref))) / max(float(np.max(np.abs(ref))), 1e-30)


@pytest.mark.parametrize("K", [3, 5])
def test_one_dimensional_identity(K):
    """y = A^T [(G g) * (B^T d)] is the K-tap correlation y[i] = sum_k d[i + k] g[k], i = 0..3."""
    T = winograd.transforms(K)
    a = T.BT.shape[0]
    assert a == 4 + K - 1 and T.G.shape == (a, K) and T.AT.shape == (4, a)
    rng = np.random.default_rng(0)
    for _ in range(20):
        d, g = rng.standard_normal(a), rng.standard_normal(K)
        y = T.AT @ ((T.G @ g) * (T.BT @ d))
        np.testing.assert_allclose(y, [d[i:i + K] @ g for i in range(4)], rtol=0, atol=1e-13)


@pytest.mark.parametrize("K", [3, 5])
def test_two_dimensional_identity(K):
    """Y = A^T [(G g G^T) * (B^T d B)] A is the 4x4 correlation of an a x a tile with a KxK filter."""
    T = winograd.transforms(K)
    a = T.BT.shape[0]
    rng = np.random.default_rng(1)
    d, g = rng.standard_normal((a, a)), rng.standard_normal((K, K))
    y = T.AT @ ((T.G @ g @ T.G.T) * (T.BT @ d @ T.BT.T)) @ T.AT.T
    direct = [[np.sum(d[i:i + K, j:j + K] * g) for j in range(4)] for i in range(4)]
    np.testing.assert_allclose(y, direct, rtol=0, atol=1e-12)


@pytest.mark.parametrize("K", [3, 5])
@pytest.mark.parametrize("helper, matrix", [("_bt", "BT"), ("_b", "BT.T"), ("_at", "AT"), ("_a", "AT.T")])
def test_written_out_transforms_are_the_matrices(helper, matrix, K):
    """The kernels' written-out products (_bt6 = B^T v, _b6 = B v, _at6 = A^T v, _a6 = A v for
    3x3 filters, _bt8 ... for 5x5) apply exactly the matrices above, to every column of their
    input at once: given the unit vectors as columns, the answer's columns are the matrix's.
    They read and write rows any distance apart; the dispatching helpers (_bt, ...) pick the
    one of the right size."""
    T = winograd.transforms(K)
    want = eval(matrix, {"BT": T.BT, "AT": T.AT})
    rows, cols = want.shape
    size = T.BT.shape[0]
    for fn, a in ((getattr(winograd, f"{helper}{size}").py_func, None), (getattr(winograd, helper).py_func, size)):
        for (si, ss), (di, ds) in (((0, 1), (0, 1)), ((2, 3), (1, 2))):
            s = np.full((si + ss * cols, cols), np.nan)
            s[si:si + ss * cols:ss] = np.eye(cols)
            d = np.full((di + ds * rows, cols), np.nan)
            fn(*(() if a is None else (a,)), s, si, ss, d, di, ds)
            np.testing.assert_array_equal(d[di::ds], want)
            assert np.isnan(np.delete(d, np.s_[di::ds], axis=0)).all()   # no other row written


# (N, C, H, W, F, K, pad, groups): sizes that are not multiples of the 4x4 tile, H != W, one
# output row, no padding, padding 2 and 3, groups, more filters than channels and fewer
SHAPES = [
    (2, 8, 7, 7, 12, 3, 1, 1),     # cifar's conv3-5 size
    (3, 16, 9, 6, 8, 3, 1, 2),     # groups, H != W
    (1, 8, 13, 13, 16, 3, 1, 1),   # the paper's conv3-5 size
    (2, 8, 5, 11, 4, 3, 0, 1),     # no padding
    (1, 16, 4, 3, 6, 3, 2, 2),     # padding 2: a tile entirely in the padding
    (2, 8, 1, 1, 8, 3, 1, 1),      # one pixel in, one out
    (2, 16, 15, 15, 8, 5, 2, 2),   # cifar's conv2 size, groups
    (1, 8, 9, 7, 6, 5, 2, 1),      # 5x5, H != W
    (2, 8, 7, 6, 4, 5, 0, 1),      # 5x5, no padding: input rows no tile reads
    (1, 8, 3, 2, 4, 5, 3, 1),      # 5x5, padding 3: whole tiles in the padding
]


@pytest.fixture(params=["chunks", "pieces"])
def schedule(request, monkeypatch):
    """Both ways winograd.py goes through a batch (its docstring's Memory): every layer in
    chunks of images with threaded passes, or every layer in pieces run start to end."""
    monkeypatch.setattr(winograd, "PIECE_CHANNELS", 0 if request.param == "chunks" else 10**9)
    return request.param


def im2col_route(monkeypatch, fn, *args, **kwargs):
    with monkeypatch.context() as m:
        m.setattr(conv_module, "WINOGRAD_MIN_CHANNELS", 10**9)
        return fn(*args, **kwargs)


@pytest.mark.parametrize("threads", [1, 3])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("shape", SHAPES)
def test_winograd_matches_im2col_forward_and_backward(shape, relu, dtype, threads, monkeypatch,
                                                      work_sharing, schedule):
    work_sharing(threads)
    N, C, H, W, F, K, pad, groups = shape
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    w = rng.standard_normal((F, C // groups, K, K)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    forward = layers.fast.conv_relu_forward if relu else layers.fast.conv_forward
    assert conv_module.uses_winograd(w.shape, 1)
    out, cache = forward(x, w, b, stride=1, pad=pad, groups=groups)
    ref, ref_cache = im2col_route(monkeypatch, forward, x, w, b, stride=1, pad=pad, groups=groups)
    assert out.dtype == dtype and out.shape == ref.shape
    assert rel_err(out, ref) <= TOL[dtype]
    if relu:
        assert (ref == 0).any() and (ref > 0).any()
        np.testing.assert_array_equal(out > 0, ref > 0)   # (no sign flips on these inputs)

    dout = rng.standard_normal(out.shape).astype(dtype)
    grads = layers.fast.conv_backward(dout, cache)
    ref_grads = im2col_route(monkeypatch, layers.fast.conv_backward, dout, ref_cache)
    for name, ours, theirs in zip(("dx", "dw", "db"), grads, ref_grads):
        assert ours.dtype == dtype and ours.shape == theirs.shape, name
        assert rel_err(ours, theirs) <= TOL[dtype], name
    dx, dw, db = layers.fast.conv_backward(dout, cache, need_dx=False)
    assert dx is None
    np.testing.assert_array_equal(dw, grads[1])


def _one_image_a_part(monkeypatch, schedule):
    monkeypatch.setattr(winograd, "CHUNK_BYTES" if schedule == "chunks" else "PIECE_BYTES", 1)


@pytest.mark.parametrize("K", [3, 5])
def test_chunks_or_pieces_of_images_give_the_same_answer(K, monkeypatch, schedule):
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((5, 16, 6, 7)), rng.standard_normal((6, 8, K, K)), rng.standard_normal(6)
    out, cache = layers.fast.conv_relu_forward(x, w, b, stride=1, pad=K // 2, groups=2)
    dout = rng.standard_normal(out.shape)
    grads = layers.fast.conv_backward(dout, cache)
    _one_image_a_part(monkeypatch, schedule)
    chunk_out, chunk_cache = layers.fast.conv_relu_forward(x, w, b, stride=1, pad=K // 2, groups=2)
    assert rel_err(chunk_out, out) <= 1e-14
    for ours, theirs in zip(layers.fast.conv_backward(dout, chunk_cache), grads):
        assert rel_err(ours, theirs) <= 1e-14


@pytest.mark.parametrize("chunk_bytes", [None, 1])
@pytest.mark.parametrize("K", [3, 5])
def test_kept_tiles_give_the_rebuilt_tiles_answers(K, chunk_bytes, monkeypatch, schedule):
    """The forward keeps V for the backward when it is small; the backward then computes the
    same bits as one that rebuilds V, and leaves the kept V as it was (a second backward on
    the same cache agrees too)."""
    if chunk_bytes:
        _one_image_a_part(monkeypatch, schedule)
    rng = np.random.default_rng(7)
    x, w, b = rng.standard_normal((3, 16, 9, 6)), rng.standard_normal((6, 8, K, K)), rng.standard_normal(6)
    out, cache = layers.fast.conv_relu_forward(x, w, b, stride=1, pad=K // 2, groups=2)
    assert cache.tiles is not None and len(cache.tiles) == (3 if chunk_bytes else 1)
    dout = rng.standard_normal(out.shape)
    kept = [V.copy() for V in cache.tiles.values()]
    grads = layers.fast.conv_backward(dout, cache)
    for V, before in zip(cache.tiles.values(), kept):
        np.testing.assert_array_equal(V, before)
    for ours, again in zip(grads, layers.fast.conv_backward(dout, cache)):
        np.testing.assert_array_equal(ours, again)
    monkeypatch.setattr(winograd, "KEEP_BYTES", 0)                  # nothing kept: rebuilt
    rebuilt_out, rebuilt_cache = layers.fast.conv_relu_forward(x, w, b, stride=1, pad=K // 2, groups=2)
    assert rebuilt_cache.tiles is None
    np.testing.assert_array_equal(rebuilt_out, out)
    for ours, theirs in zip(grads, layers.fast.conv_backward(dout, rebuilt_cache)):
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("K", [3, 5])
def test_input_gradient_is_the_adjoint_of_the_forward(K):
    """<conv(x), dy> = <x, dx(dy)> for the bias-free convolution: the backward's transforms are
    the forward's transposed, tile overlaps and padding included."""
    rng = np.random.default_rng(6)
    x, w = rng.standard_normal((2, 8, 9, 5)), rng.standard_normal((4, 8, K, K))
    out, cache = layers.fast.conv_forward(x, w, np.zeros(4), stride=1, pad=2)
    dy = rng.standard_normal(out.shape)
    dx, dw, _ = layers.fast.conv_backward(dy, cache)
    assert np.isclose(np.sum(out * dy), np.sum(x * dx), rtol=1e-12)
    assert np.isclose(np.sum(out * dy), np.sum(w * dw), rtol=1e-12)


def test_which_layers_take_the_winograd_route():
    """conv2 to conv5 of every model; not conv1 (3 colour channels, or 11x11 stride 4). The tiny
    model takes the same routes as the real ones, so the warm-up (tinyalex.warm_up)
    loads the kernels a real step needs."""
    for name, arch in ARCHS.items():
        channels, routes = arch.input_shape[0], []
        for spec in arch.convs:
            routes.append(conv_module.uses_winograd((spec.filters, channels // spec.groups,
                                                     spec.kernel, spec.kernel), spec.stride))
            channels = spec.filters
        assert routes == [False, True, True, True, True], name
    # conv2 (48 channels per group) runs in pieces, conv3-5 (192-384) in chunks
    for arch in (ARCHS["cifar"], ARCHS["paper"]):
        channels = [arch.input_shape[0]] + [spec.filters for spec in arch.convs]
        pieces = [winograd.in_pieces((spec.filters, channels[i] // spec.groups, spec.kernel, spec.kernel))
                  for i, spec in enumerate(arch.convs)]
        assert pieces[1:] == [True, False, False, False], arch.name
    assert not conv_module.uses_winograd((8, 16, 3, 3), 2)          # strided
    assert not conv_module.uses_winograd((8, 7, 3, 3), 1)           # too few channels
    assert not conv_module.uses_winograd((8, 16, 3, 5), 1)          # not square
    assert not conv_module.uses_winograd((8, 16, 7, 7), 1)          # neither 3x3 nor 5x5
    with pytest.raises(ValueError, match="3x3 and 5x5"):
        winograd.transforms(7)
