import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from trainers.techniques.common import bake_weight_transforms, check_number, format_number


class Doubled(nn.Module):
    def forward(self, weight):
        return weight * 2


@pytest.mark.parametrize(
    ("value", "text"),
    [(1e-4, "1e-4"), (0.1, "0.1"), (16, "16"), (3e-3, "3e-3"), (0.25, "0.25"), (1e-5, "1e-5"),
     (0.01, "0.01"), (2.5e-4, "2.5e-4"), (50.0, "50"), (12.5, "12.5"), (1e6, "1e6")],
)
def test_format_number_is_short(value, text):
    assert format_number(value) == text


def accepts(value, high=1.0, include_high=True):
    try:
        check_number("X.y", value, 0.0, high, include_high=include_high)
    except ValueError:
        return False
    return True


@pytest.mark.parametrize(
    ("value", "high", "include_high", "accepted"),
    [(0, 1.0, False, True), (0.999, 1.0, False, True), (1.0, 1.0, False, False),
     (1.0, 1.0, True, True), (1.001, 1.0, True, False), (-1e-9, 1.0, True, False),
     (7, float("inf"), True, True), (1e300, float("inf"), True, True)],
)
def test_check_number_draws_the_line_exactly_at_the_bounds(value, high, include_high, accepted):
    assert accepts(value, high, include_high) is accepted


@pytest.mark.parametrize(
    ("value", "high", "include_high"),
    [(-0.1, 1.0, True), (1.0, 1.0, False), (1.5, 1.0, True), (True, 1.0, True), ("0.5", 1.0, True),
     (float("nan"), 1.0, True)],
)
def test_check_number_rejects_with_the_field_and_value(value, high, include_high):
    with pytest.raises(ValueError, match=r"X\.y must be a number .*got"):
        check_number("X.y", value, 0.0, high, include_high=include_high)


def test_bake_weight_transforms_folds_parametrizations_into_plain_weights():
    model = nn.Sequential(nn.Linear(3, 2), nn.Linear(2, 2))
    parametrize.register_parametrization(model[0], "weight", Doubled())
    inputs = torch.randn(4, 3)
    expected = model(inputs)
    doubled = model[0].weight.detach().clone()
    bake_weight_transforms(model)
    assert not parametrize.is_parametrized(model[0])
    assert isinstance(model[0].weight, nn.Parameter)
    torch.testing.assert_close(model[0].weight.detach(), doubled)
    torch.testing.assert_close(model(inputs), expected)


def test_baking_a_deep_copy_leaves_the_original_working():
    model = nn.Sequential(nn.Linear(3, 2))
    parametrize.register_parametrization(model[0], "weight", Doubled())
    inputs = torch.randn(4, 3)
    expected = model(inputs)
    baked_copy = bake_weight_transforms(copy.deepcopy(model))
    torch.testing.assert_close(baked_copy(inputs), expected)
    assert parametrize.is_parametrized(model[0])
    torch.testing.assert_close(model(inputs), expected)
    bake_weight_transforms(model)
    torch.testing.assert_close(model(inputs), expected)
