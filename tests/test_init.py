"""The initialisations (--init): per-layer spread of the weights and the biases, drawn by
tinyalex (model.init_params) and by torch-train with PyTorch's own functions
(torch_train.init_weights), against the formulas.

Every weight is checked by its sample variance s^2 against the formula's sigma^2: for n
independent draws, s^2 / sigma^2 has mean 1 and standard deviation sqrt(2/n) (exactly for a
normal, below that for a uniform), so a tolerance of 5 standard deviations never fails on a
right draw (the seeds are fixed anyway) and still tells gain^2 2 from 1 on the tiny model's
smallest layers (n = 320 for fc8: 5 * sqrt(2/320) = 0.40 < 0.5).
"""

import numpy as np
import pytest

from tinyalex.model import ARCHS, INITS, PAPER_BIAS_ONE, followed_by_relu, init_params, \
    layer_plan

WEIGHT_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")


def fan_in(weight_shape):
    """Inputs per output: (C/groups)*KH*KW for a conv (F, C/groups, KH, KW), D for (M, D)."""
    return int(np.prod(weight_shape[1:]))


def expected_variance(init, layer, shape):
    if init == "he":
        return (1.0 if layer == "fc8" else 2.0) / fan_in(shape)
    if init == "paper":
        return 0.01 ** 2
    return 1.0 / (3 * fan_in(shape))      # torch: U(-b, b) with b = 1/sqrt(fan_in)


def assert_spread(w, variance, what):
    w = np.asarray(w, np.float64).ravel()
    ratio = w.var() / variance
    assert abs(ratio - 1) < 5 * np.sqrt(2 / w.size), f"{what}: variance {ratio:.3f} x the formula's"
    assert abs(w.mean()) < 5 * np.sqrt(variance / w.size), f"{what}: mean {w.mean():.3g}"


def assert_biases(b, init, layer, fan, what):
    b = np.asarray(b, np.float64)
    if init == "he":
        assert np.all(b == 0), what
    elif init == "paper":
        assert np.all(b == (1.0 if layer in PAPER_BIAS_ONE else 0.0)), what
    else:
        assert np.all(np.abs(b) <= 1 / np.sqrt(fan)) and len(np.unique(b)) == b.size, what


@pytest.mark.parametrize("name", list(ARCHS))
def test_every_weight_layer_but_fc8_is_followed_by_a_relu(name):
    assert followed_by_relu(ARCHS[name]) == set(WEIGHT_LAYERS) - {"fc8"}
    assert [n for n, kind, _ in layer_plan(ARCHS[name]) if kind in ("conv", "dense")] == list(WEIGHT_LAYERS)


@pytest.mark.parametrize("init", INITS)
def test_init_params_spread_per_layer(init):
    params = init_params(ARCHS["tiny"], 10, init=init, seed=0)
    for layer in WEIGHT_LAYERS:
        w, b = params[f"{layer}.w"], params[f"{layer}.b"]
        assert_spread(w, expected_variance(init, layer, w.shape), f"{init} {layer}.w")
        assert_biases(b, init, layer, fan_in(w.shape), f"{init} {layer}.b")


def test_he_gives_fc8_half_the_variance_of_a_layer_before_a_relu():
    """fc8's logits go to the softmax without a ReLU: gain 1, where the layers before a ReLU
    have gain sqrt(2) (He et al.; PyTorch's kaiming_normal_ "linear" and "relu")."""
    params = init_params(ARCHS["cifar"], 10, init="he", seed=1)
    fc7, fc8 = params["fc7.w"], params["fc8.w"]
    assert fc7.shape[1] == fc8.shape[1] == 4096                 # the same fan-in: 4096
    assert np.std(fc7) == pytest.approx(np.sqrt(2 / 4096), rel=0.01)   # 16.8 M draws
    assert np.std(fc8) == pytest.approx(np.sqrt(1 / 4096), rel=0.02)   # 40,960 draws


@pytest.mark.parametrize("init", INITS)
def test_torch_train_draws_the_same_spread_with_pytorch_s_functions(torch, init):
    from tinyalex.torch_train import init_weights
    from tinyalex.torch_twin import torch_model
    arch = ARCHS["tiny"]
    torch.manual_seed(0)
    net = torch_model(arch, 10)
    init_weights(torch, net, init, arch)
    ours = init_params(arch, 10, init=init, seed=0)
    for layer in WEIGHT_LAYERS:
        module = getattr(net, layer)
        w, b = module.weight.detach().numpy(), module.bias.detach().numpy()
        assert w.shape == ours[f"{layer}.w"].shape
        variance = expected_variance(init, layer, w.shape)
        assert_spread(w, variance, f"torch {init} {layer}.w")
        assert_biases(b, init, layer, fan_in(w.shape), f"torch {init} {layer}.b")
        # and the two draws agree with each other: an F test at 5 standard deviations
        ratio = w.var() / ours[f"{layer}.w"].var()
        assert abs(ratio - 1) < 5 * np.sqrt(4 / w.size), f"{init} {layer}: torch/tinyalex {ratio:.3f}"
