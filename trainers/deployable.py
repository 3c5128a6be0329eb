"""What a trial ships: a deployable model in one runtime, measured as it runs there.

A `Deployable` knows how to run a batch, how many bytes it stores, how many parameters it holds and
how to save itself; measurement (`trainers.measure`) asks it, and never inspects layer types. A
`DeployFormat` is what the techniques ask of the deployed weights (bits, sparse storage): the
eager runtime gets it from the techniques' own export step, other runtimes realise it with their
own kernels from the trained float model.
"""

import functools
import io
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from trainers.checkpoints import DEPLOYABLE_FILE


@dataclass
class DeployFormat:
    """How the deployed weights are stored, as the techniques' export phase decided it.

    Attributes:
        weight_bits: 32 (float), 16 (half precision), 8, 4 or 2 (integer weights, symmetric,
            per output channel, on the grid quantisation-aware training used).
        sparse: whether pruned weights are stored sparse (only zeros are saved).
        notes: what the export decided, for the trial's tags (e.g. a conflict rule that applied).

    Example:
        >>> DeployFormat(weight_bits=8)
        DeployFormat(weight_bits=8, sparse=False, notes={})
    """

    weight_bits: int = 32
    sparse: bool = False
    notes: dict[str, str] = field(default_factory=dict)


class Deployable(ABC):
    """A trained model as one runtime runs it: float32 inputs in, float32 logits out.

    Subclasses set `runtime` (its name, e.g. "eager", "onnxruntime") and `mlflow_flavor`
    ("pytorch", "onnx"), and implement the four methods; one whose native call differs from
    `__call__` (inputs in the runtime's own form, no conversion) overrides `native_call`, which
    is what latency is timed on.

    Example:
        >>> deployable = EagerDeployable(nn.Linear(4, 2))
        >>> deployable(torch.zeros(3, 4)).shape
        torch.Size([3, 2])
    """

    runtime: str = ""
    mlflow_flavor: str = ""

    @abstractmethod
    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        """Logits for one batch of inputs (on the device the deployable runs on)."""

    def native_call(self, inputs: torch.Tensor) -> Callable[[], object]:
        """One call as a user of the runtime makes it, its inputs already in the runtime's own form:
        what latency times (the conversions `__call__` makes for a torch caller are left out).

        Args:
            inputs: one batch, on the device the deployable runs on.

        Returns:
            A callable of no arguments that runs the batch and returns the runtime's own output.

        Example:
            >>> EagerDeployable(nn.Linear(4, 2)).native_call(torch.zeros(3, 4))().shape
            torch.Size([3, 2])
        """
        return functools.partial(self, inputs)

    @abstractmethod
    def stored_bytes(self) -> int:
        """Bytes of the saved artifact: what storing the model really costs."""

    @abstractmethod
    def parameter_count(self) -> int:
        """Logical weight and bias elements it stores (a pruned weight stored sparse counts once per non-zero)."""

    @abstractmethod
    def save(self, directory: str) -> str:
        """Write the artifact into `directory`; returns the path of its main file."""


class EagerDeployable(Deployable):
    """An eager PyTorch module as deployed: its state_dict is the stored artifact.

    Layers that store their weights unusually (packed bits, sparse values, int8) say what they
    store with a `stored_numels()` method; every other module counts its own parameters.

    Args:
        module: the exported eval-mode module.

    Example:
        >>> EagerDeployable(nn.Linear(4, 2)).parameter_count()
        10
    """

    runtime = "eager"
    mlflow_flavor = "pytorch"

    def __init__(self, module: nn.Module):
        self.module = module.eval()

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(inputs)

    def native_call(self, inputs: torch.Tensor) -> Callable[[], object]:
        return functools.partial(self.module, inputs)  # the caller holds inference mode (`measure_latency`)

    def stored_bytes(self) -> int:
        buffer = io.BytesIO()
        torch.save(self.module.state_dict(), buffer)
        return buffer.getbuffer().nbytes

    def parameter_count(self) -> int:
        return sum(sum(_stored_numels(module)) for module in self.module.modules())

    def save(self, directory: str) -> str:
        path = os.path.join(directory, DEPLOYABLE_FILE)
        torch.save(self.module.state_dict(), path)
        return path


def _stored_numels(module):
    if hasattr(module, "stored_numels"):
        return module.stored_numels()
    return [parameter.numel() for parameter in module.parameters(recurse=False)]
