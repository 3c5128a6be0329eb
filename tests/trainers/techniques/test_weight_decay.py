import pytest
import torch
from torch import nn

from trainers.techniques.weight_decay import WeightDecay, param_groups


def tiny_model():
    return nn.Sequential(nn.Linear(6, 8), nn.LayerNorm(8), nn.Conv1d(1, 2, kernel_size=3))


def adamw_step_with_zero_gradients(model, groups, lr):
    optimizer = torch.optim.AdamW(groups, lr=lr)
    for parameter in model.parameters():
        parameter.grad = torch.zeros_like(parameter)
    optimizer.step()


@pytest.mark.parametrize("bad_value", [-1e-4, "1e-4", True, None])
def test_bad_value_raises_naming_the_field(bad_value):
    with pytest.raises(ValueError, match="WeightDecay.weight_decay"):
        WeightDecay(bad_value)


def test_mode_and_active():
    assert WeightDecay(1e-4).label() == "wd1e-4"
    assert WeightDecay(0.01).label() == "wd0.01"
    assert WeightDecay().label() == "" and not WeightDecay(0).active


def test_only_tensors_with_two_or_more_dimensions_are_decayed():
    model = tiny_model()
    decayed, not_decayed = param_groups(model, WeightDecay(0.1))
    assert decayed["weight_decay"] == 0.1 and not_decayed["weight_decay"] == 0.0
    assert {id(p) for p in decayed["params"]} == {id(model[0].weight), id(model[2].weight)}
    assert {id(p) for p in not_decayed["params"]} == {
        id(model[0].bias),
        id(model[1].weight),
        id(model[1].bias),
        id(model[2].bias),
    }


def test_adamw_step_shrinks_weights_and_leaves_biases_and_norms():
    torch.manual_seed(0)
    model = tiny_model()
    before = {name: parameter.detach().clone() for name, parameter in model.named_parameters()}
    lr, weight_decay = 0.1, 0.5
    adamw_step_with_zero_gradients(model, param_groups(model, WeightDecay(weight_decay)), lr)
    for name, parameter in model.named_parameters():
        if parameter.dim() >= 2:
            torch.testing.assert_close(parameter.detach(), before[name] * (1 - lr * weight_decay))
        else:
            torch.testing.assert_close(parameter.detach(), before[name], rtol=0, atol=0)


def test_inactive_config_overrides_the_optimizer_default_decay():
    model = tiny_model()
    before = model[0].weight.detach().clone()
    adamw_step_with_zero_gradients(model, param_groups(model, WeightDecay(0.0)), lr=0.1)
    torch.testing.assert_close(model[0].weight.detach(), before, rtol=0, atol=0)


def test_frozen_parameters_are_left_out():
    model = tiny_model()
    model[0].weight.requires_grad_(False)
    groups = param_groups(model, WeightDecay(0.1))
    grouped = {id(p) for group in groups for p in group["params"]}
    assert id(model[0].weight) not in grouped
    assert len(grouped) == 5
