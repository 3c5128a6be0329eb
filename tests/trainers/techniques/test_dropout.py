import copy

import pytest
import torch
from torch import nn

from trainers.techniques.dropout import Dropout, apply_dropout


class TinyNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(16, 32)
        self.act1 = nn.ReLU()
        self.block = nn.Sequential(nn.Linear(32, 32), nn.GELU())
        self.fc2 = nn.Linear(32, 4)

    def forward(self, inputs):
        return self.fc2(self.block(self.act1(self.fc1(inputs))))

    def example_inputs(self):
        return torch.randn(8, 16)


@pytest.mark.parametrize("bad_p", [1.0, -0.1, 1.5, "0.1", None])
def test_bad_probability_raises_naming_the_field(bad_p):
    with pytest.raises(ValueError, match="Dropout.dropout"):
        Dropout(bad_p)


def test_mode_and_active():
    assert Dropout(0.1).label() == "d0.1"
    assert Dropout(0.5).label() == "d0.5"
    assert Dropout().label() == "" and not Dropout(0).active


def test_inserts_dropout_after_every_activation():
    model = TinyNet()
    notes = apply_dropout(model, Dropout(0.3))
    assert notes == {"dropout_after": "act1,block.1"}
    for wrapped in (model.act1, model.block[1]):
        assert isinstance(wrapped, nn.Sequential)
        assert isinstance(wrapped[1], nn.Dropout) and wrapped[1].p == 0.3
    assert isinstance(model.act1[0], nn.ReLU) and isinstance(model.block[1][0], nn.GELU)


def test_eval_output_is_unchanged_and_deterministic():
    torch.manual_seed(0)
    model = TinyNet()
    reference = copy.deepcopy(model).eval()
    apply_dropout(model, Dropout(0.5))
    model.eval()
    inputs = model.example_inputs()
    torch.testing.assert_close(model(inputs), reference(inputs), rtol=0, atol=0)
    torch.testing.assert_close(model(inputs), model(inputs), rtol=0, atol=0)


def test_training_output_is_random_with_zeroed_activations():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 256), nn.Tanh())
    apply_dropout(model, Dropout(0.5))
    model.train()
    inputs = torch.randn(4, 16)
    first, second = model(inputs), model(inputs)
    assert not torch.equal(first, second)
    zero_fraction = (first == 0).float().mean().item()
    assert 0.4 < zero_fraction < 0.6


def test_inactive_config_leaves_model_alone():
    model = TinyNet()
    assert apply_dropout(model, Dropout(0.0)) == {}
    assert isinstance(model.act1, nn.ReLU)


def test_model_without_activation_modules_is_noted():
    model = nn.Sequential(nn.Linear(4, 4))
    assert apply_dropout(model, Dropout(0.2)) == {"dropout_after": "none"}
