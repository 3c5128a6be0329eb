"""L1 regularisation: add l1 * sum |w| over the weights to the loss, pushing weights to exactly zero."""

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from trainers.techniques import Technique, register
from trainers.techniques.common import check_number, format_number

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class L1:
    """L1 penalty on weights only (never on biases or normalisation parameters).

    Attributes:
        l1: the penalty's coefficient, >= 0; 0 is off.
    """

    key: ClassVar[str] = "l1"
    l1: float = 0.0

    def __post_init__(self) -> None:
        check_number("L1.l1", self.l1, 0.0)

    @property
    def active(self) -> bool:
        """Whether the config changes training (l1 > 0)."""
        return self.l1 > 0

    def label(self) -> str:
        """Short recipe text, e.g. "l1_1e-5"; "" when off.

        Example:
            >>> L1(1e-5).label()
            'l1_1e-5'
        """
        return f"l1_{format_number(self.l1)}" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> L1(1e-5).describe()
            'L1 penalty 1e-05'
        """
        return f"L1 penalty {self.l1:.3g}" if self.active else ""


def l1_penalty(model: nn.Module, cfg: L1) -> torch.Tensor:
    """The L1 penalty to add to the loss: cfg.l1 * sum of |w| over trainable tensors with dim >= 2.

    Differentiable: its gradient is cfg.l1 * sign(w) for weights and 0 for biases and other
    tensors with fewer than 2 dimensions. Call it on every training step, after the forward pass.

    Args:
        model: the model being trained (a DistributedDataParallel wrapper works too).
        cfg: the coefficient; an inactive config gives a constant zero.

    Returns:
        A scalar tensor on the model's device.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> loss = nn.functional.cross_entropy(model(torch.randn(3, 4)), torch.tensor([0, 1, 0])) + l1_penalty(model, L1(1e-5))
        >>> loss.backward()
    """
    weights = [parameter for parameter in model.parameters() if parameter.requires_grad and parameter.dim() >= 2]
    if not cfg.active or not weights:
        return torch.zeros((), device=next(model.parameters()).device)
    return cfg.l1 * sum(weight.abs().sum() for weight in weights)


def _loss_term(model, cfg, logits, targets, inputs):
    return l1_penalty(model, cfg) if cfg.active else None


TECHNIQUE = register(Technique(config=L1, position=60, loss=_loss_term))
