"""A data set's own preprocessing as modules, so that a deployable carries it and takes raw rows.

`trainers.data.load_dataset` keeps the rows as the user stores them (pixels 0-255, a CSV's columns
as written) and names the preprocessing the model reads them through: one of these modules. The
training loop applies it once to whole splits; the exported deployable applies it inside its own
graph (ONNX `Sub`/`Div`), so the same arithmetic runs in training and in deployment.
"""

import numpy as np
import torch
from torch import nn


class Scale(nn.Module):
    """Divide every value by a constant: pixels as stored (0-16, 0-255) to [0, 1].

    Args:
        divisor: the largest stored value, e.g. 255.

    Example:
        >>> Scale(255.0)(torch.tensor([[0.0, 51.0, 255.0]]))
        tensor([[0.0000, 0.2000, 1.0000]])
    """

    def __init__(self, divisor: float):
        super().__init__()
        self.register_buffer("divisor", torch.tensor(divisor, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x / self.divisor


class Standardise(nn.Module):
    """Subtract a per-feature mean and divide by a per-feature standard deviation.

    Args:
        mean: the training split's mean, shape (*input_shape).
        std: its standard deviation, same shape, with no zeros.

    Example:
        >>> standardise = Standardise(torch.tensor([1.0, 2.0]), torch.tensor([2.0, 4.0]))
        >>> standardise(torch.tensor([[3.0, 2.0]]))
        tensor([[1., 0.]])
    """

    def __init__(self, mean: torch.Tensor, std: torch.Tensor):
        super().__init__()
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def standardisation(x_train: np.ndarray) -> Standardise:
    """The `Standardise` module of a training split: its mean and standard deviation per feature
    (a feature with no spread gets a deviation of 1, so it maps to 0 and never to NaN).

    Args:
        x_train: the training split's raw features, float32 (N, *input_shape).

    Returns:
        The module; applied to `x_train` it gives features with mean 0 and deviation 1.

    Example:
        >>> standardisation(np.array([[1.0, 5.0], [3.0, 5.0]], dtype=np.float32)).std
        tensor([1., 1.])
    """
    mean = x_train.mean(axis=0)
    std = x_train.std(axis=0)
    std[std < 1e-8] = 1.0
    return Standardise(torch.from_numpy(mean), torch.from_numpy(std))
