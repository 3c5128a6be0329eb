"""Deployment runtimes: export one trained model to each runtime that could ship it.

A runtime is a module of this package that registers an export function with `@register(name)`:
the function takes the `ExportInputs` of a trained model and returns a `Deployable` that runs in
that runtime, or raises `RuntimeUnavailable` saying why it cannot run this model here. Modules are
found automatically (`discover`), so adding a runtime is its module and its test, nothing else.
They load on first use (`export_to`, `runtime_versions`), not with this package: a worker that
only trains never imports ONNX (0.7 s of a worker's start here).
The runtime changes how a trained model runs, not what was trained: every trial can be exported
to every runtime in milliseconds to seconds, without retraining.
"""

import importlib
import logging
import pkgutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from importlib import metadata

import torch
from torch import nn

from trainers.deployable import Deployable, DeployFormat, EagerDeployable

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ExportInputs:
    """Everything a runtime needs to export one trained model.

    Attributes:
        model: the trained float model in eval mode with no parametrizations left: low-rank layers
            already factorised (nn.Sequential of two Linear/Conv2d), pruned weights already zero,
            quantised weights already on the per-channel symmetric grid (scale = max|w| per output
            channel / (2^(bits-1) - 1)); the data's preprocessing (scaling, standardisation,
            feature selection) runs first inside it, so it takes raw rows.
        eager: the techniques' own eager export of the same model, with the same preprocessing first.
        fmt: what the techniques ask of the deployed weights (bits, sparse storage).
        example: a few raw input rows (N, *raw input_shape), float32, on `device`.
        calibration: up to a few hundred raw rows of the training split, for static quantisation.
        device: where the deployable runs.
        threads: intra-op threads the runtime may use.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 10)).eval()
        >>> x = torch.randn(256, 8)
        >>> inputs = ExportInputs(model, EagerDeployable(model), DeployFormat(8), x[:4], x, torch.device("cpu"))
        >>> inputs.example.shape, inputs.threads
        (torch.Size([4, 8]), 1)
    """

    model: nn.Module
    eager: EagerDeployable
    fmt: DeployFormat
    example: torch.Tensor
    calibration: torch.Tensor
    device: torch.device
    threads: int = 1

    def batch_example(self) -> torch.Tensor:
        """The example rows, repeated to at least two: exporters specialise a batch of one to the constant 1.

        Example:
            >>> model, x = nn.Linear(8, 10), torch.randn(1, 8)
            >>> inputs = ExportInputs(model, EagerDeployable(model), DeployFormat(), x, x, torch.device("cpu"))
            >>> len(inputs.batch_example())
            2
        """
        if len(self.example) > 1:
            return self.example
        return self.example.repeat(2, *([1] * (self.example.dim() - 1)))


class RuntimeUnavailable(Exception):
    """The runtime cannot run this deployable here; the message says why (a missing package, no
    kernel for these bits on this device, a failed build)."""


def first_line(error: BaseException) -> str:
    """The first line of an error's message, short enough for a tag (compilers' errors run to pages).

    Example:
        >>> first_line(RuntimeError("no compiler\\nsearched: /usr/bin"))
        'no compiler'
    """
    text = str(error).strip()
    return text.splitlines()[0] if text else ""


Exporter = Callable[[ExportInputs], Deployable]
RUNTIMES: dict[str, Exporter] = {}
_PACKAGES: dict[str, tuple[str, ...]] = {}


def register(name: str, packages: tuple[str, ...] = ("torch",)) -> Callable[[Exporter], Exporter]:
    """Register an export function as runtime `name` (a decorator).

    Args:
        name: the runtime's name, as specs and MLflow tags spell it.
        packages: the distributions whose versions identify the runtime, for `runtime_versions`.

    Returns:
        The decorator, which returns the function unchanged.

    Example:
        >>> @register("eager")  # doctest: +SKIP
        ... def export_eager(inputs: ExportInputs) -> Deployable:
        ...     return inputs.eager
    """

    def decorator(export: Exporter) -> Exporter:
        if name in RUNTIMES and RUNTIMES[name] is not export:
            raise ValueError(f"runtime {name!r} is registered twice: {RUNTIMES[name]} and {export}")
        RUNTIMES[name] = export
        _PACKAGES[name] = packages
        return export

    return decorator


def discover() -> list[str]:
    """Import every module of this package (every directory in its `__path__`) so that each
    registers its runtime. `export_to` and `runtime_versions` run it; call it again to find
    modules added later.

    Returns:
        The module names imported.

    Example:
        >>> discover()
        ['aotinductor', 'compile', 'eager', 'onnxruntime']
    """
    names = [info.name for info in pkgutil.iter_modules(__path__) if not info.name.startswith("_")]
    for name in names:
        importlib.import_module(f"{__name__}.{name}")
    return names


def export_to(runtime: str, inputs: ExportInputs) -> Deployable:
    """Export a trained model to one runtime.

    Args:
        runtime: a name in `RUNTIMES`, e.g. "onnxruntime".
        inputs: the trained model, its eager export, its format and sample rows.

    Returns:
        The deployable in that runtime.

    Raises:
        KeyError: for an unknown runtime; the message lists the valid names.
        RuntimeUnavailable: when the runtime cannot run this model here; the message says why.

    Example:
        >>> model, x = nn.Linear(8, 10).eval(), torch.randn(256, 8)
        >>> inputs = ExportInputs(model, EagerDeployable(model), DeployFormat(), x[:4], x, torch.device("cpu"))
        >>> export_to("onnxruntime", inputs)(inputs.example).shape
        torch.Size([4, 10])
    """
    discover()
    if runtime not in RUNTIMES:
        raise KeyError(f"unknown runtime {runtime!r}; valid runtimes: {', '.join(sorted(RUNTIMES))}")
    deployable = RUNTIMES[runtime](inputs)
    logger.info("exported to %s: %d stored bytes", runtime, deployable.stored_bytes())
    return deployable


def runtime_versions(names: Iterable[str]) -> dict[str, str]:
    """Versions of the packages the named runtimes run on, for MLflow tags.

    Args:
        names: runtime names, e.g. ["onnxruntime", "eager"].

    Returns:
        Package name to installed version, e.g. {"torch": "2.13.0", "onnxruntime": "1.32.0"};
        "not installed" for a package that is missing.

    Example:
        >>> runtime_versions(["eager"])
        {'torch': '2.13.0+cpu'}
    """
    discover()
    versions = {}
    for name in names:
        for package in _PACKAGES[name]:
            try:
                versions[package] = metadata.version(package)
            except metadata.PackageNotFoundError:
                versions[package] = "not installed"
    return versions


def max_abs_diff(deployable: Deployable, reference: Deployable, inputs: torch.Tensor) -> float:
    """Largest absolute difference between two deployables' logits on the same inputs.

    Args:
        deployable: the runtime's deployable.
        reference: what it is compared with, usually the eager deployable.
        inputs: input rows on the deployables' device.

    Returns:
        max |deployable(inputs) - reference(inputs)| as a float.

    Example:
        >>> model, x = nn.Linear(8, 10).eval(), torch.randn(256, 8)
        >>> inputs = ExportInputs(model, EagerDeployable(model), DeployFormat(), x[:4], x, torch.device("cpu"))
        >>> max_abs_diff(export_to("onnxruntime", inputs), inputs.eager, inputs.example) < 1e-5
        True
    """
    return (deployable(inputs).float() - reference(inputs).float()).abs().max().item()

