"""Compilation: `torch.compile` of the training model and of the deployable model.

Compiling costs time once (tracing and code generation) and may then make every step faster.
The loop reports that one-off cost separately (`compile_seconds`, `inference_compile_seconds`)
from the steady-state throughput and latency.
"""

import logging
import time
from dataclasses import dataclass
from typing import Callable, ClassVar

import torch
from torch import nn

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Compile:
    """Whether to `torch.compile` the model for training and inference."""

    key: ClassVar[str] = "compile"
    compile: bool = False

    def __post_init__(self):
        if not isinstance(self.compile, bool):
            raise ValueError(f"Compile.compile must be true or false, got {self.compile!r}")

    @property
    def active(self) -> bool:
        return self.compile

    def mode(self) -> str:
        return "compiled" if self.active else ""


def compile_model(model: nn.Module, cfg: Compile) -> nn.Module:
    """`torch.compile(model)` when active, else the model itself (compilation happens at the first call).

    Args:
        model: the module to compile (a DDP wrapper is fine).
        cfg: whether to compile.

    Returns:
        The compiled module, or `model`.

    Example:
        >>> fast = compile_model(model, Compile(True))
    """
    return torch.compile(model) if cfg.active else model


def timed_first_call(run: Callable[[], object]) -> float:
    """Seconds one call of `run` takes: for a compiled model, its first call is the compilation.

    Args:
        run: the call to time, e.g. one forward and backward pass.

    Returns:
        Wall seconds.

    Example:
        >>> compile_seconds = timed_first_call(lambda: fast(x).sum().backward())
    """
    started = time.perf_counter()
    run()
    return time.perf_counter() - started
