"""Weight decay (L2): shrink weight matrices and kernels toward zero at every optimizer step."""

import logging
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from trainers.techniques import Technique, register
from trainers.techniques.common import check_number, format_number

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WeightDecay:
    """Decoupled weight decay on weights only (never on biases or normalisation parameters).

    Attributes:
        weight_decay: the optimizer's weight_decay for weight tensors, >= 0; 0 is off.
    """

    key: ClassVar[str] = "weight_decay"
    weight_decay: float = 0.0

    def __post_init__(self) -> None:
        check_number("WeightDecay.weight_decay", self.weight_decay, 0.0)

    @property
    def active(self) -> bool:
        """Whether the config changes training (weight_decay > 0)."""
        return self.weight_decay > 0

    def label(self) -> str:
        """Short recipe text, e.g. "wd1e-4"; "" when off.

        Example:
            >>> WeightDecay(1e-4).label()
            'wd1e-4'
        """
        return f"wd{format_number(self.weight_decay)}" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> WeightDecay(1e-4).describe()
            'weight decay 0.0001'
        """
        return f"weight decay {self.weight_decay:.3g}" if self.active else ""


def param_groups(model: nn.Module, cfg: WeightDecay) -> list[dict]:
    """Split the trainable parameters into optimizer groups with and without weight decay.

    Tensors with 2 or more dimensions (Linear and conv weights, embeddings, low-rank factors, the
    `original` of a parametrized weight) get `cfg.weight_decay`; tensors with fewer (biases,
    normalisation scales and shifts, quantisation scales) get 0. Every group sets weight_decay
    explicitly, so the optimizer's own default (0.01 for AdamW) never applies. Empty groups are
    left out, and an inactive config gives one group (a second group costs time every step).

    Args:
        model: the model whose parameters are optimised.
        cfg: the weight decay for weight tensors; inactive means 0 for every group.

    Returns:
        A list of `{"params": [...], "weight_decay": float}` dicts for a torch.optim optimizer.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> [group["weight_decay"] for group in param_groups(model, WeightDecay(1e-4))]
        [0.0001, 0.0]
    """
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if not cfg.active:
        return [{"params": trainable, "weight_decay": 0.0}]
    groups = [
        {"params": [p for p in trainable if p.dim() >= 2], "weight_decay": float(cfg.weight_decay)},
        {"params": [p for p in trainable if p.dim() < 2], "weight_decay": 0.0},
    ]
    logger.debug("weight decay %s on %d tensors", cfg.weight_decay, len(groups[0]["params"]))
    return [group for group in groups if group["params"]]


TECHNIQUE = register(Technique(config=WeightDecay, position=50, param_groups=param_groups))
