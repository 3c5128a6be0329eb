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
