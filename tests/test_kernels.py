"""Every Numba kernel of the fast route (layers/fast/kernels.py) returns what its plain-loop
reference returns, on awkward shapes, on one thread and cut across three. (The readable
route's im2col kernels: tests/test_routes.py.)"""


import numpy as np
import pytest

from layers import reference
from layers.fast import kernels

# (N, C, H, W, KH, KW, stride, pad): stride 4 with 11x11, padding, H != W, KH != KW, odd C
CONV_SHAPES = [
    (2, 3, 23, 19, 11, 11, 4, 2),
    (2, 5, 9, 7, 3, 5, 1, 1),
    (1, 3, 8, 10, 3, 3, 2, 0),
    (3, 1, 6, 5, 6, 5, 1, 0),     # kernel as large as the input: one output position
    (2, 2, 5, 7, 3, 2, 3, 2),     # stride larger than kernel (pixels never read), big pad
    (1, 2, 4, 3, 2, 2, 1, 3),     # pad larger than the kernel: whole windows in the padding
]
POOL_SHAPES = [(2, 3, 13, 11, 3, 3, 2), (2, 3, 16, 10, 3, 3, 2), (1, 2, 3, 3, 3, 3, 2),   # 3x3/2: written out
               (2, 5, 8, 8, 2, 2, 2), (1, 2, 9, 6, 3, 2, 1), (1, 1, 7, 7, 3, 3, 3)]
LRN_SHAPES = [(2, 7, 5, 3), (1, 1, 2, 2), (2, 4, 3, 6)]


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, params=["serial", "parallel"])
def threading(request, work_sharing):
    """Run every test on one thread, and cut into pieces of one row on three threads."""
    work_sharing(3 if request.param == "parallel" else 1)
    return request.param


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", CONV_SHAPES)
def test_im2col_and_col2im_match_reference(shape, dtype, rng):
    N, C, H, W, KH, KW, stride, pad = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    cols = kernels.im2col(x, KH, KW, stride, pad)
    np.testing.assert_array_equal(cols, reference.im2col(x, KH, KW, stride, pad))
    dcols = rng.standard_normal(cols.shape).astype(dtype)
    # exactly equal: every pixel sums the same terms in the same order as the reference
    np.testing.assert_array_equal(kernels.col2im(dcols, x.shape, KH, KW, stride, pad),
                                  reference.col2im(dcols, x.shape, KH, KW, stride, pad))


def test_im2col_writes_into_a_reused_buffer(rng):
    x = rng.standard_normal((2, 3, 6, 6))
    buf = np.full((3 * 9, 2 * 36), np.nan)
    out = kernels.im2col(x, 3, 3, 1, 1, out=buf)
    assert out is buf
    np.testing.assert_array_equal(buf, reference.im2col(x, 3, 3, 1, 1))  # padding zeroed, no NaN left


@pytest.mark.parametrize("stride, pad", [(1, 0), (2, 0), (2, 1)])
def test_im2col_and_col2im_take_strided_views(stride, pad, rng):
    # the kernels index their arrays as flat memory: views that skip channels go through a copy
    x = rng.standard_normal((3, 8, 9, 8))[:, ::2]                      # (3, 4, 9, 8), not contiguous
    cols = kernels.im2col(x, 3, 2, stride, pad)
    np.testing.assert_array_equal(cols, reference.im2col(x, 3, 2, stride, pad))
    out = np.full((3, 8, 9, 8), np.nan)[:, ::2]
    kernels.col2im(cols, x.shape, 3, 2, stride, pad, out=out)
    np.testing.assert_array_equal(out, reference.col2im(cols, x.shape, 3, 2, stride, pad))


def test_col2im_is_the_adjoint_of_im2col(rng):
    # <im2col(x), c> == <x, col2im(c)> for every x, c: the defining property of the backward pass
    x = rng.standard_normal((2, 3, 11, 9))
    cols = kernels.im2col(x, 5, 3, 2, 2)
    c = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * c)
    rhs = np.sum(x * kernels.col2im(c, x.shape, 5, 3, 2, 2))
    assert abs(lhs - rhs) < 1e-10 * abs(lhs)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_maxpool_matches_reference(shape, dtype, rng):
    N, C, H, W, KH, KW, stride = shape
    x = rng.standard_normal((N, C, H, W)).astype(dtype)
    out, argmax = kernels.maxpool(x, KH, KW, stride)
    ref_out, ref_argmax = reference.maxpool(x, KH, KW, stride)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(argmax, ref_argmax)
    dout = rng.standard_normal(out.shape).astype(dtype)
    np.testing.assert_allclose(kernels.maxpool_grad(dout, argmax, x.shape),
                               reference.maxpool_grad(dout, ref_argmax, x.shape), rtol=1e-6)


def test_maxpool_ties_go_to_the_first_maximum_and_overlaps_accumulate():
    x = np.zeros((1, 1, 5, 5))          # all ties: every window's winner is its top-left pixel
    out, argmax = kernels.maxpool(x, 3, 3, 2)
    assert argmax.ravel().tolist() == [0, 2, 10, 12]
    x[0, 0, 2, 2] = 1.0                  # the centre pixel wins all four overlapping windows
    out, argmax = kernels.maxpool(x, 3, 3, 2)
    dx = kernels.maxpool_grad(np.ones_like(out), argmax, x.shape)
    assert dx[0, 0, 2, 2] == 4.0 and dx.sum() == 4.0


@pytest.mark.parametrize("shape", POOL_SHAPES)
def test_maxpool_breaks_ties_as_the_reference_does(shape, rng):
    """The kernel finds each column's maximum first and then the window's: among equal maxima
    it must still pick the reference's, the first in row-major order (the earliest row, then
    the leftmost column), not the leftmost column. Values from {0, 1, 2} tie everywhere."""
    N, C, H, W, KH, KW, stride = shape
    x = rng.integers(0, 3, (N, C, H, W)).astype(np.float32)
    out, argmax = kernels.maxpool(x, KH, KW, stride)
    ref_out, ref_argmax = reference.maxpool(x, KH, KW, stride)
    np.testing.assert_array_equal(out, ref_out)
    np.testing.assert_array_equal(argmax, ref_argmax)
    x = np.zeros((1, 1, 3, 3), np.float32)
    x[0, 0, 1, 0] = x[0, 0, 0, 2] = 1.0    # the left column's 1 is in a later row
    assert kernels.maxpool(x, 3, 3, 2)[1].ravel().tolist() == [2]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", LRN_SHAPES)
@pytest.mark.parametrize("size,alpha,beta", [(5, 1e-4, 0.75), (5, 0.7, 0.75), (4, 0.3, 0.6), (1, 0.5, 1.0), (9, 0.2, 0.75)])
def test_lrn_matches_reference(shape, size, alpha, beta, dtype, rng):
    x = rng.standard_normal(shape).astype(dtype)
    out, scale = kernels.lrn(x, size, 2.0, alpha, beta, keep_scale=True)
    ref_out, ref_scale = reference.lrn(x, size, 2.0, alpha, beta)
    tol = 1e-5 if dtype == np.float32 else 1e-13
    np.testing.assert_allclose(scale, ref_scale, rtol=tol)
    np.testing.assert_allclose(out, ref_out, rtol=tol, atol=tol)
    out_only, none = kernels.lrn(x, size, 2.0, alpha, beta)      # the fast route's call
    assert none is None
    np.testing.assert_array_equal(out_only, out)
    dout = rng.standard_normal(shape).astype(dtype)
    # from x alone: s and b recomputed inside
    np.testing.assert_allclose(kernels.lrn_grad(dout, x, size, 2.0, alpha, beta),
                               reference.lrn_grad(dout, x, ref_out, ref_scale, size, alpha, beta),
                               rtol=tol, atol=tol)


def test_conv_layout_helpers_are_inverse_transposes(rng):
    a = rng.standard_normal((3, 4, 5))                       # (N, F, P)
    mat = np.empty((4, 15))
    sums = np.empty((3, 4))
    kernels.nchw_to_mat(a, a, False, sums, mat)
    np.testing.assert_array_equal(mat, a.transpose(1, 0, 2).reshape(4, 15))
    np.testing.assert_allclose(sums, a.sum(axis=2), rtol=1e-13)
    b = rng.standard_normal(4)
    back = np.empty_like(a)
    kernels.mat_to_nchw(mat, b, False, back)
    np.testing.assert_array_equal(back, a + b[None, :, None])


def test_relu_fused_layout_helpers(rng):
    mat = rng.standard_normal((4, 15))                       # (F, N*P) with N=3, P=5
    b = rng.standard_normal(4)
    out = np.empty((3, 4, 5))
    kernels.mat_to_nchw(mat, b, True, out)
    np.testing.assert_array_equal(out, np.maximum(mat.reshape(4, 3, 5).transpose(1, 0, 2) + b[None, :, None], 0))
    dout = rng.standard_normal((3, 4, 5))
    back = np.empty((4, 15))
    sums = np.empty((3, 4))
    kernels.nchw_to_mat(dout, out, True, sums, back)
    masked = np.where(out > 0, dout, 0)
    np.testing.assert_array_equal(back, masked.transpose(1, 0, 2).reshape(4, 15))
    np.testing.assert_allclose(sums, masked.sum(axis=2), rtol=1e-13)
    assert not np.allclose(sums, dout.sum(axis=2))         # the mask mattered
