"""Model factories for tests/trainers/test_models.py, named as "tests.trainers.toy_factory:<name>"."""

import math

from torch import nn

NOT_CALLABLE = 3


def make(input_shape, num_classes, width=8):
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(input_shape), width), nn.ReLU(), nn.Linear(width, num_classes)
    )


def make_not_a_module(input_shape, num_classes):
    return {"input_shape": input_shape, "num_classes": num_classes}


def make_refusing(input_shape, num_classes):
    raise ValueError(f"no model for {num_classes} classes")


def make_torchvision_style(num_classes=1000, width=8):
    """Like torchvision's `resnet18(num_classes=...)`: takes no input shape (fixed to 1x8x8 here)."""
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))


def make_from_kwargs(**kwargs):
    width = kwargs.get("width", 8)
    return nn.Sequential(
        nn.Flatten(), nn.Linear(math.prod(kwargs["input_shape"]), width), nn.ReLU(), nn.Linear(width, kwargs["num_classes"])
    )


def make_needing_depth(num_classes, depth):
    return nn.Sequential(nn.Flatten(), *[nn.LazyLinear(8) for _ in range(depth)], nn.LazyLinear(num_classes))


def make_three_logits(input_shape):
    """Ignores the data's classes: three logits whatever the data has."""
    return nn.Sequential(nn.Flatten(), nn.Linear(math.prod(input_shape), 3))


def make_for_100_inputs(num_classes):
    """Built for 100 input columns, whatever the data has."""
    return nn.Sequential(nn.Flatten(), nn.Linear(100, num_classes))
