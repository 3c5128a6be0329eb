import pytest
import torch
from torch import nn

from trainers.techniques.l1 import L1, l1_penalty


def tiny_model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Linear(8, 2))


@pytest.mark.parametrize("bad_value", [-1e-5, "1e-5", False, None])
def test_bad_value_raises_naming_the_field(bad_value):
    with pytest.raises(ValueError, match="L1.l1"):
        L1(bad_value)


def test_mode_and_active():
    assert L1(1e-5).label() == "l1_1e-5"
    assert L1(3e-3).label() == "l1_3e-3"
    assert L1().label() == "" and not L1(0.0).active


def test_penalty_sums_absolute_weights_only():
    model = tiny_model()
    expected = 0.01 * (model[0].weight.abs().sum() + model[2].weight.abs().sum())
    torch.testing.assert_close(l1_penalty(model, L1(0.01)), expected)


def test_gradient_is_sign_of_weights_and_zero_for_biases():
    model = tiny_model()
    l1_penalty(model, L1(0.01)).backward()
    for layer in (model[0], model[2]):
        torch.testing.assert_close(layer.weight.grad, 0.01 * layer.weight.detach().sign())
    for parameter in (model[0].bias, model[1].weight, model[1].bias, model[2].bias):
        assert parameter.grad is None or not parameter.grad.any()


def test_frozen_weights_are_left_out():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    expected = 0.01 * model[2].weight.abs().sum()
    torch.testing.assert_close(l1_penalty(model, L1(0.01)), expected)


def test_inactive_config_gives_zero():
    penalty = l1_penalty(tiny_model(), L1(0.0))
    assert penalty.shape == () and penalty.item() == 0.0
