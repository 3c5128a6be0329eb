"""The eager runtime: the techniques' own eager PyTorch export, run as it is."""

from trainers.deployable import EagerDeployable
from trainers.runtimes import ExportInputs, register


@register("eager")
def export_eager(inputs: ExportInputs) -> EagerDeployable:
    """The techniques' eager export, unchanged (int8 as torch.ao dynamic Linear, packed low-bit
    weights unpacked in forward, sparse CSR weights).

    Args:
        inputs: the trained model and its eager export.

    Returns:
        `inputs.eager` itself.

    Example:
        >>> import torch
        >>> from trainers.deployable import DeployFormat
        >>> model, x = torch.nn.Linear(8, 10), torch.randn(4, 8)
        >>> inputs = ExportInputs(model, EagerDeployable(model), DeployFormat(), x, x, torch.device("cpu"))
        >>> export_eager(inputs) is inputs.eager
        True
    """
    return inputs.eager
