"""Mixed-precision training: autocast to bf16 or fp16 (with a gradient scaler for fp16).

The weights stay fp32 (autocast runs matmuls and convolutions in the lower precision); what this
buys is training throughput on hardware with bf16/fp16 units. On a CPU without them the trial
runs and its (slower) throughput is what gets reported. The deployed model's precision is
`quant_bits: 16`'s business, not this technique's.
"""

import contextlib
import logging
from dataclasses import dataclass
from typing import ClassVar

import torch

from trainers.techniques import Technique, register

logger = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Precision:
    """Training precision: "fp32" (off), "bf16" or "fp16" autocast."""

    key: ClassVar[str] = "precision"
    precision: str = "fp32"

    def __post_init__(self):
        if self.precision not in PRECISIONS:
            raise ValueError(f"Precision.precision must be one of {tuple(PRECISIONS)}, got {self.precision!r}")

    @property
    def active(self) -> bool:
        return self.precision != "fp32"

    def label(self) -> str:
        return self.precision if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> Precision("bf16").describe()
            'bf16 autocast training'
        """
        return f"{self.precision} autocast training" if self.active else ""


def autocast(cfg: Precision, device: torch.device):
    """The context that runs a forward pass (and its loss) in the configured precision.

    Args:
        cfg: the precision.
        device: where the model runs.

    Returns:
        `torch.autocast` for bf16/fp16, a no-op context for fp32.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> with autocast(Precision("bf16"), torch.device("cpu")):
        ...     loss = model(torch.randn(3, 4)).sum()
        >>> loss.dtype
        torch.bfloat16
    """
    if not cfg.active:
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=PRECISIONS[cfg.precision])


def grad_scaler(cfg: Precision, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled for fp16 only (bf16 has fp32's range and needs none).

    Args:
        cfg: the precision.
        device: where the model trains.

    Returns:
        A `torch.amp.GradScaler`; a disabled one passes `scale`, `step` and `update` straight through.

    Example:
        >>> model = torch.nn.Linear(4, 2)
        >>> optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        >>> loss = model(torch.randn(3, 4)).sum()
        >>> scaler = grad_scaler(Precision("fp16"), torch.device("cpu"))
        >>> scaler.scale(loss).backward(); scaler.step(optimizer); scaler.update()
    """
    return torch.amp.GradScaler(device.type, enabled=cfg.precision == "fp16")


def _autocast_or_none(cfg, device):
    return autocast(cfg, device) if cfg.active else None


TECHNIQUE = register(
    Technique(config=Precision, position=80, autocast=_autocast_or_none, grad_scaler=grad_scaler)
)
