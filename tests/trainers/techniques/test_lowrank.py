import pytest
import torch
from torch import nn

from trainers.techniques.lowrank import LowRank, apply_low_rank


class TinyMLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(64, 64)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(64, 10)

    def forward(self, inputs):
        return self.fc2(self.act(self.fc1(inputs)))

    def example_inputs(self):
        return torch.randn(5, 64)


def parameter_count(model):
    return sum(parameter.numel() for parameter in model.parameters())


def set_rank_deficient_weight(module, rank):
    out_features = module.weight.shape[0]
    in_features = module.weight[0].numel()
    with torch.no_grad():
        low_rank = torch.randn(out_features, rank) @ torch.randn(rank, in_features) / in_features**0.5
        module.weight.copy_(low_rank.reshape(module.weight.shape))


@pytest.mark.parametrize("bad_rank", [0, -3, 1.5, 0.0, True, "16"])
def test_bad_rank_raises_naming_the_field(bad_rank):
    with pytest.raises(ValueError, match="LowRank.rank"):
        LowRank(bad_rank)


def test_mode_and_active():
    assert LowRank(16).label() == "r16"
    assert LowRank(0.25).label() == "r0.25"
    assert LowRank(1.0).label() == "r1.0"
    assert LowRank(1).label() == "r1"
    assert LowRank().label() == ""
    assert LowRank(16).active and not LowRank(None).active


def test_inactive_config_leaves_model_alone():
    model = TinyMLP()
    assert apply_low_rank(model, LowRank(None)) == {}
    assert isinstance(model.fc1, nn.Linear)


def test_linear_factorisation_is_exact_when_rank_covers_the_weight():
    torch.manual_seed(0)
    model = TinyMLP()
    set_rank_deficient_weight(model.fc1, rank=4)
    inputs = model.example_inputs()
    expected = model(inputs)
    apply_low_rank(model, LowRank(4), filter_fn=lambda name, module: name == "fc1")
    assert isinstance(model.fc1, nn.Sequential)
    assert model.fc1[0].bias is None and model.fc1[1].bias is not None
    torch.testing.assert_close(model(inputs), expected, atol=1e-5, rtol=1e-5)


def test_truncation_keeps_the_best_rank_r_approximation():
    torch.manual_seed(0)
    layer_model = nn.Sequential(nn.Linear(32, 24))
    weight = layer_model[0].weight.detach().clone()
    singular_values = torch.linalg.svdvals(weight)
    apply_low_rank(layer_model, LowRank(5))
    first, second = layer_model[0]
    product = second.weight @ first.weight
    error = torch.linalg.matrix_norm(product - weight)
    torch.testing.assert_close(error, singular_values[5:].square().sum().sqrt(), atol=1e-5, rtol=1e-4)


def test_conv_factorisation_is_exact_when_rank_covers_the_weight():
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 8, kernel_size=3, stride=2, padding=1, dilation=1)
    set_rank_deficient_weight(conv, rank=2)
    model = nn.Sequential(conv)
    inputs = torch.randn(2, 4, 9, 9)
    expected = model(inputs)
    notes = apply_low_rank(model, LowRank(2))
    first, second = model[0]
    assert (first.kernel_size, first.stride, first.padding, first.out_channels) == ((3, 3), (2, 2), (1, 1), 2)
    assert second.kernel_size == (1, 1) and first.bias is None
    assert notes == {"low_rank_factorised": "0"}
    torch.testing.assert_close(model(inputs), expected, atol=1e-5, rtol=1e-5)


def test_parameter_counts_and_notes_for_factorised_and_skipped_layers():
    model = TinyMLP()
    notes = apply_low_rank(model, LowRank(16))
    assert notes == {"low_rank_factorised": "fc1", "low_rank_skipped": "fc2 (64->10, r=16)"}
    factorised_fc1 = 64 * 16 + 16 * 64 + 64
    dense_fc2 = 64 * 10 + 10
    assert parameter_count(model) == factorised_fc1 + dense_fc2
    assert isinstance(model.fc2, nn.Linear)


def test_conv_parameter_count():
    model = nn.Sequential(nn.Conv2d(16, 32, kernel_size=3))
    apply_low_rank(model, LowRank(4))
    assert parameter_count(model) == 4 * 16 * 3 * 3 + 32 * 4 + 32


def test_fractional_rank_rounds_and_is_at_least_one():
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(400, 200))
    apply_low_rank(model, LowRank(0.25))
    assert model[0][0].out_features == 8  # round(0.25 * min(32, 64))
    tiny_fraction = nn.Sequential(nn.Linear(40, 20))
    apply_low_rank(tiny_fraction, LowRank(0.01))  # round(0.2) = 0 -> 1
    assert tiny_fraction[0][0].out_features == 1


def test_filter_fn_restricts_layers():
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 64))
    notes = apply_low_rank(model, LowRank(8), filter_fn=lambda name, module: name == "1")
    assert isinstance(model[0], nn.Linear) and isinstance(model[1], nn.Sequential)
    assert notes == {"low_rank_factorised": "1"}


def test_grouped_conv_is_left_alone():
    model = nn.Sequential(nn.Conv2d(16, 16, kernel_size=3, groups=4))
    assert apply_low_rank(model, LowRank(2)) == {}
    assert isinstance(model[0], nn.Conv2d)
