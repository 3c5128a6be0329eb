"""Dropout: zero a random fraction of hidden activations during training."""

import logging
from dataclasses import dataclass
from typing import ClassVar

from torch import nn

from trainers.techniques import Technique, register
from trainers.techniques.common import check_number, format_number

logger = logging.getLogger(__name__)

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Hardswish, nn.Tanh, nn.LeakyReLU, nn.ELU)


@dataclass(frozen=True)
class Dropout:
    """Dropout after every hidden activation module.

    Attributes:
        dropout: the probability of zeroing an activation, 0 <= dropout < 1; 0 is off.
    """

    key: ClassVar[str] = "dropout"
    dropout: float = 0.0

    def __post_init__(self) -> None:
        check_number("Dropout.dropout", self.dropout, 0.0, 1.0, include_high=False)

    @property
    def active(self) -> bool:
        """Whether the config changes the model (dropout > 0)."""
        return self.dropout > 0

    def label(self) -> str:
        """Short recipe text, e.g. "d0.1"; "" when off.

        Example:
            >>> Dropout(0.1).label()
            'd0.1'
        """
        return f"d{format_number(self.dropout)}" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> Dropout(0.1).describe()
            'dropout 0.1 on hidden activations (training only)'
        """
        return f"dropout {self.dropout:g} on hidden activations (training only)" if self.active else ""


def apply_dropout(model: nn.Module, cfg: Dropout) -> dict[str, str]:
    """Put nn.Dropout after every activation module, in place.

    Each activation module (`ACTIVATIONS`: nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, ...) is replaced
    by nn.Sequential(activation, nn.Dropout(p)). Activations called as functions in `forward`
    (torch.nn.functional.relu, say) are not modules and get no dropout. Dropout acts only in
    training mode; in eval mode the model computes exactly what it did before.

    Args:
        model: the model to change.
        cfg: the dropout probability; an inactive config leaves the model alone.

    Returns:
        Notes for the trial's tags: "dropout_after" (comma-separated names of the activations
        followed by dropout, or "none" when the model has no activation modules); empty when the
        config is inactive.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> apply_dropout(model, Dropout(0.1))
        {'dropout_after': '1'}
    """
    if not cfg.active:
        return {}
    wrapped = []
    for name, module in list(model.named_modules(remove_duplicate=False)):
        if name != "" and isinstance(module, ACTIVATIONS):
            model.set_submodule(name, nn.Sequential(module, nn.Dropout(cfg.dropout)))
            wrapped.append(name)
    if not wrapped:
        logger.warning("dropout %s: the model has no activation modules, nothing was added", cfg.label())
    logger.info("dropout %s after %s", cfg.label(), wrapped)
    return {"dropout_after": ",".join(wrapped) or "none"}


def _refusals(model, cfg):
    if any(isinstance(module, ACTIVATIONS) for module in model.modules()):
        return []
    return [
        f"dropout on {type(model).__name__}: no activation module ({', '.join(f'nn.{a.__name__}' for a in ACTIVATIONS)}); "
        f"activations called as functions get none: {cfg.label()} would change nothing"
    ]


TECHNIQUE = register(
    Technique(config=Dropout, position=40, needs_explicit_attention=True, refusals=_refusals, build=apply_dropout)
)
