"""The AOTInductor runtime: the techniques' eager export compiled ahead of time into a shared library.

`torch.export` captures the eager deployable module with a dynamic batch dimension,
`torch._inductor.aoti_compile_and_package` compiles it with the system's C++ compiler into a
`.pt2` package (generated code, a shared library and the weights), and
`torch._inductor.aoti_load_package` loads it back to run without Python-level module dispatch.
The package is the stored artifact, so its size includes the compiled library (about 1.5 MB even
for a tiny model). Building takes tens of seconds on a small CPU; a module torch.export cannot
capture, or a failed build, makes the runtime unavailable for that model, with the reason.
"""

import functools
import logging
import os
import tempfile
import time
from collections.abc import Callable

import torch

from trainers.deployable import Deployable
from trainers.runtimes import ExportInputs, RuntimeUnavailable, first_line, register

logger = logging.getLogger(__name__)

FILE = "model.pt2"


class AOTInductorDeployable(Deployable):
    """An AOTInductor package and the loaded model it holds.

    Args:
        package: the `.pt2` package's bytes (the stored artifact).
        parameters: logical weight and bias elements of the module it was compiled from.
        compile_seconds: the one-off export and build time.

    Example:
        >>> deployable = export_aotinductor(inputs)  # doctest: +SKIP
        >>> deployable(inputs.example).shape  # doctest: +SKIP
        torch.Size([4, 10])
    """

    runtime = "aotinductor"
    mlflow_flavor = "pytorch"

    def __init__(self, package: bytes, parameters: int, compile_seconds: float = 0.0):
        self.package = package
        self.parameters = parameters
        self.compile_seconds = compile_seconds
        self.directory = tempfile.TemporaryDirectory(prefix="aotinductor-")
        self.model = torch._inductor.aoti_load_package(self.save(self.directory.name))

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(inputs)

    def native_call(self, inputs: torch.Tensor) -> Callable[[], object]:
        return functools.partial(self.model, inputs)

    def stored_bytes(self) -> int:
        return len(self.package)

    def parameter_count(self) -> int:
        return self.parameters

    def save(self, directory: str) -> str:
        path = os.path.join(directory, FILE)
        with open(path, "wb") as file:
            file.write(self.package)
        return path


@register("aotinductor")
def export_aotinductor(inputs: ExportInputs) -> AOTInductorDeployable:
    """Compile the techniques' eager export ahead of time with AOTInductor and load the package.

    Args:
        inputs: the eager export and example rows.

    Returns:
        The loaded package; `compile_seconds` holds the export and build time.

    Raises:
        RuntimeUnavailable: when torch.export cannot capture the module or the C++ build fails.

    Example:
        >>> export_aotinductor(inputs).stored_bytes()  # doctest: +SKIP
        1536431
    """
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="aotinductor-build-") as directory:
        try:
            program = torch.export.export(
                inputs.eager.module, (inputs.batch_example(),), dynamic_shapes=({0: torch.export.Dim("batch")},)
            )
            path = torch._inductor.aoti_compile_and_package(program, package_path=os.path.join(directory, FILE))
        except Exception as error:  # torch.export and the C++ toolchain raise many types
            reason = f"{type(error).__name__}: {first_line(error)}"
            raise RuntimeUnavailable(f"AOTInductor build failed: {reason}") from error
        with open(path, "rb") as file:
            package = file.read()
    deployable = AOTInductorDeployable(package, inputs.eager.parameter_count(), time.perf_counter() - started)
    logger.info("AOTInductor build took %.1f s, package %d bytes", deployable.compile_seconds, len(package))
    return deployable
