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

from trainers.techniques import Technique, register

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

    def label(self) -> str:
        return "compiled" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> Compile(True).describe()
            'torch.compile for training and inference'
        """
        return "torch.compile for training and inference" if self.active else ""


def compile_model(model: nn.Module, cfg: Compile) -> nn.Module:
    """`torch.compile(model)` when active, else the model itself (compilation happens at the first call).

    Args:
        model: the module to compile (a DDP wrapper is fine).
        cfg: whether to compile.

    Returns:
        The compiled module, or `model`.

    Example:
        >>> model = nn.Linear(4, 2)
        >>> compile_model(model, Compile(False)) is model
        True
        >>> fast = compile_model(model, Compile(True))  # compiles at its first call
    """
    return torch.compile(model) if cfg.active else model


def timed_first_call(run: Callable[[], object]) -> float:
    """Seconds one call of `run` takes: for a compiled model, its first call is the compilation.

    Args:
        run: the call to time, e.g. one forward and backward pass.

    Returns:
        Wall seconds.

    Example:
        >>> fast = compile_model(nn.Linear(4, 2), Compile(True))
        >>> compile_seconds = timed_first_call(lambda: fast(torch.randn(3, 4)).sum().backward())  # doctest: +SKIP
    """
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


def _wrap(model, cfg, warmup):
    if not cfg.active:
        return model, {}
    compiled = compile_model(model, cfg)
    return compiled, {"compile_seconds": timed_first_call(lambda: warmup(compiled))}


def _export(model, cfg, context):
    if not cfg.active:
        return model
    runnable = compile_model(model, cfg)
    try:
        with torch.no_grad():
            seconds = timed_first_call(lambda: runnable(context.example))
    except Exception as error:  # torch.compile fails in many ways on exotic kernels: measure eager then
        logger.warning("torch.compile failed on the deployable model, measuring it eager: %s", error)
        context.notes["compile_inference"] = f"failed ({type(error).__name__}); measured eager"
        return model
    context.metrics["inference_compile_seconds"] = seconds
    context.notes["compile_inference"] = "compiled"
    return runnable


TECHNIQUE = register(
    # compile last: it compiles the deployable the other techniques exported
    Technique(config=Compile, position=90, after=("quant_bits", "sparsity"), wrap=_wrap, export=_export)
)
