"""layers/loss.py with label smoothing: its gradient by finite differences, its value by
another formula, the plain loss at smoothing 0, bad values refused, and the model's loss.
(PyTorch's cross_entropy(label_smoothing=...) is the oracle in test_parity_torch.py.)"""

import numpy as np
import pytest

import layers
import layers.fast
from tinyalex import gradcheck
from tinyalex.gradcheck import LAYER_THRESHOLD, SMOOTH_STEP, rel_error
from tinyalex.model import build_model

SHAPES = [(6, 7), (1, 10), (5, 3)]


def draw(shape, seed=0, dtype=np.float64):
    rng = np.random.default_rng(seed)
    logits = np.ascontiguousarray(rng.standard_normal(shape) * 2, dtype=dtype)
    return logits, rng.integers(0, shape[1], size=shape[0])


def finite_difference_error(loss_fn, logits, y, smoothing):
    """Worst relative error of loss_fn's dlogits against fourth-order centred differences of
    its loss, every entry (the style of gradcheck.check_loss)."""
    _, dlogits = loss_fn(logits, y, smoothing)
    numeric = gradcheck.numerical_gradient(lambda: loss_fn(logits, y, smoothing)[0], logits,
                                           np.arange(logits.size), SMOOTH_STEP, order=4)
    return rel_error(np.asarray(dlogits).reshape(-1), numeric)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("smoothing", [0.1, 0.5, 1.0])
def test_smoothed_gradient_passes_the_finite_difference_check(shape, smoothing):
    logits, y = draw(shape)
    with gradcheck.single_threaded():
        assert finite_difference_error(layers.softmax_cross_entropy, logits, y, smoothing) < LAYER_THRESHOLD


def test_the_check_fails_a_gradient_that_ignores_the_smoothing():
    """(p - onehot) / N, the plain gradient, under the smoothed loss: the check has teeth."""
    def plain_gradient(logits, y, smoothing):
        loss, _ = layers.softmax_cross_entropy(logits, y, smoothing)
        return loss, layers.softmax_cross_entropy(logits, y)[1]
    logits, y = draw((6, 7))
    assert finite_difference_error(plain_gradient, logits, y, 0.1) > 1e-3


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
def test_value_is_the_mix_of_two_cross_entropies(shape, smoothing):
    # -sum_m q_m log p_m with q = (1-e) onehot + e/M is (1-e) (-log p_y) + e mean_m(-log p_m):
    # computed here from log p directly, without the target matrix q
    logits, y = draw(shape, seed=1)
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    expected = np.mean((1 - smoothing) * -log_p[np.arange(len(y)), y] - smoothing * log_p.mean(axis=1))
    loss, dlogits = layers.softmax_cross_entropy(logits, y, smoothing)
    assert loss == pytest.approx(expected, rel=1e-12)
    np.testing.assert_allclose(dlogits.sum(axis=1), 0, atol=1e-15)   # p and q both sum to 1


def test_uniform_logits_cost_log_m_whatever_the_smoothing():
    logits = np.zeros((4, 5))
    y = np.array([0, 1, 4, 4])
    for smoothing in (0.0, 0.3, 1.0):
        loss, dlogits = layers.softmax_cross_entropy(logits, y, smoothing)
        assert loss == pytest.approx(np.log(5), rel=1e-12)
        q = np.full((4, 5), smoothing / 5)
        q[np.arange(4), y] += 1 - smoothing
        np.testing.assert_allclose(dlogits, (0.2 - q) / 4, rtol=1e-12, atol=1e-17)
    # at smoothing 1 the target is uniform: nothing to learn from uniform logits
    assert not layers.softmax_cross_entropy(logits, y, 1.0)[1].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_smoothing_zero_is_the_plain_loss_bit_for_bit(dtype):
    logits, y = draw((8, 10), seed=2, dtype=dtype)
    # the loss before label smoothing (layers/loss.py's docstring): -mean log p_y, (p - onehot)/N
    z = logits - logits.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    plain_loss = float(-log_p[np.arange(8), y].mean())
    plain_grad = np.exp(log_p)
    plain_grad[np.arange(8), y] -= 1
    plain_grad /= 8
    for loss, dlogits in (layers.softmax_cross_entropy(logits, y),
                          layers.softmax_cross_entropy(logits, y, 0.0)):
        assert loss == plain_loss
        assert dlogits.dtype == dtype
        np.testing.assert_array_equal(dlogits, plain_grad)
    assert layers.softmax_cross_entropy(logits, y, 0.1)[0] != plain_loss


@pytest.mark.parametrize("smoothing", [-0.1, 1.01, float("nan"), float("inf")])
def test_smoothing_outside_zero_to_one_is_refused(smoothing):
    logits, y = draw((3, 4))
    with pytest.raises(ValueError, match=r"label smoothing must be in \[0, 1\]"):
        layers.softmax_cross_entropy(logits, y, smoothing)
    with pytest.raises(ValueError, match="label smoothing"):
        layers.fast.softmax_cross_entropy(logits, y, smoothing)


@pytest.mark.parametrize("route", ["readable", "fast"])
def test_the_model_s_loss_takes_the_smoothing(route):
    model = build_model("tiny", 10, init="he", seed=0, dtype=np.float64, route=route)
    x = np.random.default_rng(0).standard_normal((3,) + model.input_shape)
    y = np.array([1, 5, 9])
    logits = model.forward(x)
    for smoothing in (0.0, 0.1):
        result = model.loss(x, y, train=False, smoothing=smoothing)
        loss, grads = result.loss, result.grads
        assert loss == pytest.approx(layers.softmax_cross_entropy(logits, y, smoothing)[0], rel=1e-12)
        # fc8's bias gradient is dlogits summed over the batch: (p - q) summed
        expected = layers.softmax_cross_entropy(logits, y, smoothing)[1].sum(axis=0)
        np.testing.assert_allclose(grads["fc8.b"], expected, rtol=1e-10, atol=1e-14)
    assert model.loss(x, y, train=False, smoothing=0.1).loss != model.loss(x, y, train=False).loss
