"""The compile runtime: torch.compile (Inductor) of the techniques' eager export.

The stored artifact is the eager module's state_dict (a compiled model is recompiled where it is
loaded); the one-off compilation, done on the example rows at export, is kept apart as
`compile_seconds` so that it never counts as latency.
"""

import functools
import logging
from collections.abc import Callable

import torch
from torch import nn

from trainers.deployable import EagerDeployable
from trainers.runtimes import ExportInputs, RuntimeUnavailable, first_line, register
from trainers.techniques.compile import timed_first_call

logger = logging.getLogger(__name__)


class CompiledDeployable(EagerDeployable):
    """An eager module run through `torch.compile`; stores, saves and counts what the eager module does.

    Args:
        module: the eager deployable module.
        example: input rows; the first call on them compiles the module (timed as `compile_seconds`).

    Example:
        >>> deployable = CompiledDeployable(nn.Linear(4, 2), torch.zeros(3, 4))  # doctest: +SKIP
        >>> deployable(torch.zeros(3, 4)).shape, deployable.compile_seconds > 0  # doctest: +SKIP
        (torch.Size([3, 2]), True)
    """

    runtime = "compile"

    def __init__(self, module: nn.Module, example: torch.Tensor):
        super().__init__(module)
        self.compiled = torch.compile(self.module)
        self.compile_seconds = timed_first_call(lambda: self(example))

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.compiled(inputs)

    def native_call(self, inputs: torch.Tensor) -> Callable[[], object]:
        return functools.partial(self.compiled, inputs)


@register("compile")
def export_compiled(inputs: ExportInputs) -> CompiledDeployable:
    """Compile the techniques' eager export with torch.compile (Inductor), compiling it once on the example rows.

    Args:
        inputs: the trained model, its eager export and example rows.

    Returns:
        The compiled deployable; `compile_seconds` holds the one-off compilation time.

    Raises:
        RuntimeUnavailable: when Inductor cannot compile the module here (the error is in the message).

    Example:
        >>> export_compiled(inputs).compile_seconds  # doctest: +SKIP
        3.2
    """
    try:
        deployable = CompiledDeployable(inputs.eager.module, inputs.example)
    except Exception as error:  # Inductor raises many types (BackendCompilerFailed, C++ build errors)
        raise RuntimeUnavailable(f"torch.compile failed: {type(error).__name__}: {first_line(error)}") from error
    logger.info("torch.compile took %.2f s", deployable.compile_seconds)
    return deployable
