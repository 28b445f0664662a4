"""Bad arguments to the layers raise a ValueError that names the problem.

The point is where the error surfaces: at the layer's door with a sentence a user can act
on, not as an IndexError or a Numba typing error deep inside a kernel. Each case below
gives a bad call and a pattern the message must contain.
"""

import numpy as np
import pytest

import layers

rng = np.random.default_rng(0)


def normal(*shape, dtype=np.float64):
    return rng.standard_normal(shape).astype(dtype)


X = normal(2, 4, 9, 7)                  # (N, C, H, W), H != W
W = normal(6, 4, 3, 3)                  # (F, C, KH, KW)
B = normal(6)

CASES = {
    # --- convolution
    "conv x not 4-D": (lambda: layers.conv_forward(X[0], W, B), r"conv input x must be 4-D"),
    "conv w not 4-D": (lambda: layers.conv_forward(X, W[0], B), r"conv weight w must be 4-D"),
    "conv b not 1-D": (lambda: layers.conv_forward(X, W, B[None]), r"conv bias b must be 1-D"),
    "conv x not an array": (lambda: layers.conv_forward(X.tolist(), W, B), r"numpy array"),
    "conv integer input": (lambda: layers.conv_forward(X.astype(np.int32), W, B),
                           r"float32 or float64.*int32"),
    "conv float16 weight": (lambda: layers.conv_forward(X, W.astype(np.float16), B),
                            r"float32 or float64.*float16"),
    "conv mixed dtypes": (lambda: layers.conv_forward(X.astype(np.float32), W, B),
                          r"dtypes must match.*float32.*float64"),
    "conv channels not divisible by groups": (
        lambda: layers.conv_forward(normal(2, 5, 8, 8), normal(6, 2, 3, 3), B, groups=2),
        r"channels \(5\).*divisible by groups \(2\)"),
    "conv filters not divisible by groups": (
        lambda: layers.conv_forward(X, normal(5, 2, 3, 3), normal(5), groups=2),
        r"filters \(5\).*divisible by groups \(2\)"),
    "conv weight/input channel mismatch": (
        lambda: layers.conv_forward(X, normal(6, 3, 3, 3), B),
        r"weight expects 3 channels.*input has 4 channels"),
    "conv grouped weight with full channels": (
        lambda: layers.conv_forward(X, W, B, groups=2),
        r"weight expects 4 channels per group.*2 per group"),
    "conv bias length": (lambda: layers.conv_forward(X, W, normal(5)), r"bias has 5 entries for 6 filters"),
    "conv kernel larger than padded input": (
        lambda: layers.conv_forward(X, normal(6, 4, 11, 3), B, pad=0),
        r"kernel 11x3 is larger than the padded input 9x7"),
    "conv kernel larger than padded input (width)": (
        lambda: layers.conv_forward(X, normal(6, 4, 3, 11), B, pad=1),
        r"kernel 3x11 is larger than the padded input 11x9"),
    "conv stride 0": (lambda: layers.conv_forward(X, W, B, stride=0), r"stride must be a positive integer"),
    "conv fractional stride": (lambda: layers.conv_forward(X, W, B, stride=1.5), r"stride must be a positive integer"),
    "conv negative pad": (lambda: layers.conv_forward(X, W, B, pad=-1), r"pad must be a non-negative integer"),
    "conv groups 0": (lambda: layers.conv_forward(X, W, B, groups=0), r"groups must be a positive integer"),
    # --- max-pool
    "pool x not 4-D": (lambda: layers.maxpool_forward(X[0]), r"max-pool input x must be 4-D"),
    "pool integer input": (lambda: layers.maxpool_forward(np.ones((1, 1, 4, 4), np.int64)),
                           r"float32 or float64.*int64"),
    "pool window larger than input": (lambda: layers.maxpool_forward(normal(1, 2, 2, 5), size=3),
                                      r"pool window 3x3 is larger than the input 2x5"),
    "pool window wider than input": (lambda: layers.maxpool_forward(normal(1, 2, 5, 2), size=(2, 3)),
                                     r"pool window 2x3 is larger than the input 5x2"),
    "pool size 0": (lambda: layers.maxpool_forward(X, size=0), r"pool size must be a positive integer"),
    "pool size triple": (lambda: layers.maxpool_forward(X, size=(3, 3, 3)), r"pool size must be an int or a pair"),
    "pool stride 0": (lambda: layers.maxpool_forward(X, stride=0), r"pool stride must be a positive integer"),
    # --- LRN
    "lrn x not 4-D": (lambda: layers.lrn_forward(X[0]), r"LRN input x must be 4-D"),
    "lrn integer input": (lambda: layers.lrn_forward(np.ones((1, 3, 2, 2), np.int16)), r"float32 or float64"),
    "lrn size 0": (lambda: layers.lrn_forward(X, size=0), r"LRN size must be a positive integer"),
    "lrn fractional size": (lambda: layers.lrn_forward(X, size=2.5), r"LRN size must be a positive integer"),
    "lrn k 0": (lambda: layers.lrn_forward(X, k=0.0), r"k > 0"),
    "lrn negative alpha": (lambda: layers.lrn_forward(X, alpha=-1e-4), r"alpha >= 0"),
    "lrn negative beta": (lambda: layers.lrn_forward(X, beta=-0.75), r"beta >= 0"),
    # --- dropout
    "dropout drop_prob 1": (lambda: layers.dropout_forward(X, drop_prob=1.0, rng=rng),
                            r"drop_prob.*must be in \[0, 1\), got 1.0"),
    "dropout drop_prob negative": (lambda: layers.dropout_forward(X, drop_prob=-0.1, rng=rng),
                                   r"drop_prob.*must be in \[0, 1\), got -0.1"),
    "dropout drop_prob above 1": (lambda: layers.dropout_forward(X, drop_prob=1.5, rng=rng),
                                  r"drop_prob.*\[0, 1\)"),
    "dropout drop_prob nan": (lambda: layers.dropout_forward(X, drop_prob=float("nan"), rng=rng),
                              r"drop_prob.*\[0, 1\)"),
    "dropout train without rng or mask": (lambda: layers.dropout_forward(X, drop_prob=0.5),
                                          r"needs an rng.*or a mask"),
    "dropout mask of the wrong shape": (
        lambda: layers.dropout_forward(X, mask=np.ones((2, 4), bool)), r"mask must be a boolean array of shape"),
    "dropout mask not boolean": (
        lambda: layers.dropout_forward(X, mask=np.ones(X.shape, np.int64)), r"mask must be a boolean array.*int64"),
    "dropout integer input": (lambda: layers.dropout_forward(np.ones((2, 3), np.int64), rng=rng),
                              r"float32 or float64"),
    # --- dense
    "dense x not 2-D": (lambda: layers.dense_forward(normal(5), normal(3, 5), normal(3)),
                        r"dense input x must be 2-D"),
    "dense w not 2-D": (lambda: layers.dense_forward(normal(2, 5), normal(15), normal(3)),
                        r"dense weight w must be 2-D"),
    "dense input size mismatch": (lambda: layers.dense_forward(normal(2, 4), normal(3, 5), normal(3)),
                                  r"weight expects 5 inputs, x has 4"),
    "dense bias length": (lambda: layers.dense_forward(normal(2, 5), normal(3, 5), normal(4)),
                          r"bias has 4 entries for 3 outputs"),
    "dense mixed dtypes": (lambda: layers.dense_forward(normal(2, 5), normal(3, 5, dtype=np.float32), normal(3)),
                           r"dtypes must match"),
    "dense integer input": (lambda: layers.dense_forward(np.ones((2, 5), int), normal(3, 5), normal(3)),
                            r"float32 or float64"),
    # --- ReLU
    "relu integer input": (lambda: layers.relu_forward(np.arange(4)), r"ReLU input x must be float32 or float64"),
    # --- softmax cross-entropy
    "loss label = classes": (lambda: layers.softmax_cross_entropy(normal(3, 10), np.array([0, 10, 2])),
                             r"labels must be in \[0, 10\).*0 to 10"),
    "loss negative label": (lambda: layers.softmax_cross_entropy(normal(2, 10), np.array([-1, 3])),
                            r"labels must be in \[0, 10\).*-1"),
    "loss float labels": (lambda: layers.softmax_cross_entropy(normal(2, 10), np.array([1.0, 2.0])),
                          r"labels must be 2 integers.*float64"),
    "loss label count": (lambda: layers.softmax_cross_entropy(normal(2, 10), np.array([1, 2, 3])),
                         r"labels must be 2 integers.*shape \(3,\)"),
    "loss logits not 2-D": (lambda: layers.softmax_cross_entropy(normal(10), np.array([1])),
                            r"logits must be 2-D"),
    "loss integer logits": (lambda: layers.softmax_cross_entropy(np.ones((2, 3), int), np.array([0, 1])),
                            r"logits must be float32 or float64"),
    "loss empty batch": (lambda: layers.softmax_cross_entropy(normal(0, 10), np.array([], int)),
                         r"no examples"),
    # --- gaps found by review: empty batches, bools, NaN, dtypes and shapes of backward inputs
    "conv empty batch": (lambda: layers.conv_forward(normal(0, 3, 8, 8), normal(4, 3, 3, 3), normal(4)),
                         r"no images"),
    "conv pad True": (lambda: layers.conv_forward(normal(1, 3, 8, 8), normal(4, 3, 3, 3), normal(4), pad=True),
                      r"pad must be a non-negative integer"),
    "lrn k nan": (lambda: layers.lrn_forward(normal(1, 4, 3, 3), k=float("nan")), r"k > 0"),
    "dropout rng not a generator": (lambda: layers.dropout_forward(X, rng=0), r"needs an rng"),
    "dropout mask a list": (lambda: layers.dropout_forward(normal(1, 2), mask=[[True, False]]),
                            r"mask must be a boolean array"),
    "dropout backward wrong shape": (
        lambda: layers.dropout_backward(normal(1, 3), layers.dropout_forward(normal(2, 3), rng=rng)[1]),
        r"dout has shape \(1, 3\)"),
    "pool backward dtype": (
        lambda: layers.maxpool_backward(normal(1, 2, 3, 3, dtype=np.float32),
                                        layers.maxpool_forward(normal(1, 2, 7, 7))[1]), r"dtypes must match"),
    "lrn backward dtype": (
        lambda: layers.lrn_backward(normal(1, 4, 3, 3, dtype=np.float32), layers.lrn_forward(normal(1, 4, 3, 3))[1]),
        r"dtypes must match"),
    "dense backward dtype": (
        lambda: layers.dense_backward(normal(2, 3, dtype=np.float32),
                                      layers.dense_forward(normal(2, 5), normal(3, 5), normal(3))[1]),
        r"dtypes must match"),
    "relu backward dtype": (
        lambda: layers.relu_backward(normal(2, 3, dtype=np.float32), layers.relu_forward(normal(2, 3))[1]),
        r"dtypes must match"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_bad_argument_raises_a_clear_value_error(case):
    call, message = CASES[case]
    with pytest.raises(ValueError, match=message):
        call()


def backward_cases():
    conv_out, conv_cache = layers.conv_forward(X, W, B, pad=1)
    pool_out, pool_cache = layers.maxpool_forward(X)
    lrn_out, lrn_cache = layers.lrn_forward(X)
    dense_out, dense_cache = layers.dense_forward(normal(2, 5), normal(3, 5), normal(3))
    relu_out, relu_cache = layers.relu_forward(X)
    return {
        "conv dout of the wrong shape": (lambda: layers.conv_backward(conv_out[:, :3], conv_cache),
                                         r"dout has shape \(2, 3, 9, 7\).*\(2, 6, 9, 7\)"),
        "conv dout not 4-D": (lambda: layers.conv_backward(conv_out[0], conv_cache), r"must be 4-D"),
        "conv dout of another dtype": (lambda: layers.conv_backward(conv_out.astype(np.float32), conv_cache),
                                       r"dtypes must match"),
        "pool dout of the wrong shape": (lambda: layers.maxpool_backward(pool_out[:1], pool_cache),
                                         r"dout has shape.*pool's output"),
        "lrn dout of the wrong shape": (lambda: layers.lrn_backward(lrn_out[:, :2], lrn_cache),
                                        r"dout has shape.*LRN's output"),
        "dense dout of the wrong shape": (lambda: layers.dense_backward(dense_out.T, dense_cache),
                                          r"dout has shape \(3, 2\).*\(2, 3\)"),
        "relu dout of the wrong shape": (lambda: layers.relu_backward(relu_out[:1], relu_cache),
                                         r"dout has shape.*ReLU's output"),
    }


@pytest.mark.parametrize("case", list(backward_cases()))
def test_bad_upstream_gradient_raises_a_clear_value_error(case):
    call, message = backward_cases()[case]
    with pytest.raises(ValueError, match=message):
        call()


def test_borderline_arguments_are_accepted():
    """The edges of the valid range are valid: no over-eager checks."""
    # kernel exactly as large as the padded input -> a 1x1 output
    out, _ = layers.conv_forward(normal(1, 2, 3, 4), normal(2, 2, 5, 6), normal(2), pad=1)
    assert out.shape == (1, 2, 1, 1)
    # pool window exactly the input
    assert layers.maxpool_forward(normal(1, 2, 3, 3), size=3, stride=5)[0].shape == (1, 2, 1, 1)
    # an even LRN window is supported (asymmetric, as in PyTorch; see test_parity_torch)
    assert layers.lrn_forward(normal(1, 6, 2, 2), size=4)[0].shape == (1, 6, 2, 2)
    # drop_prob 0 is the identity even in training mode, with no generator needed
    x = normal(3, 4)
    assert np.array_equal(layers.dropout_forward(x, drop_prob=0.0, train=True)[0], x)
    # labels may be any integer dtype, including the largest valid class
    loss, _ = layers.softmax_cross_entropy(normal(2, 10), np.array([9, 0], dtype=np.uint8))
    assert np.isfinite(loss)
    # a strided (non-contiguous) input is a valid input
    xt = normal(2, 8, 8, 4).transpose(0, 3, 1, 2)
    out_t, _ = layers.conv_forward(xt, W, B, pad=1)
    out_c, _ = layers.conv_forward(np.ascontiguousarray(xt), W, B, pad=1)
    assert np.array_equal(out_t, out_c)


def test_float32_is_kept_float32():
    x, w, b = normal(2, 4, 9, 7, dtype=np.float32), normal(6, 4, 3, 3, dtype=np.float32), normal(6, dtype=np.float32)
    out, cache = layers.conv_forward(x, w, b, pad=1)
    assert out.dtype == np.float32
    assert all(g.dtype == np.float32 for g in layers.conv_backward(out, cache))
    assert layers.maxpool_forward(out)[0].dtype == np.float32
    assert layers.lrn_forward(out)[0].dtype == np.float32


@pytest.mark.parametrize("kwargs,message", [
    (dict(dtype=np.int32), r"float32 or float64"),
    (dict(num_classes=0), r"num_classes must be a positive integer"),
    (dict(name="vgg"), r"unknown model 'vgg'"),
    (dict(init="xavier"), r"unknown init 'xavier'"),
])
def test_bad_model_arguments_raise_a_clear_value_error(kwargs, message):
    from tinyalex.model import build_model
    with pytest.raises(ValueError, match=message):
        build_model(**{"name": "tiny", **kwargs})
