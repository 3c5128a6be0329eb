"""Toy models and export inputs shared by the runtime tests: trained-looking weights put on the
grid the techniques leave them on (QAT levels, pruned zeros, low-rank factors), with the real
technique functions."""

import copy

import torch
from torch import nn

from trainers.deployable import DeployFormat
from trainers.loop import export_deployable
from trainers.runtimes import ExportInputs
from trainers.techniques import techniques_from_choices
from trainers.techniques.common import bake_weight_transforms
from trainers.techniques.lowrank import apply_low_rank
from trainers.techniques.prune import apply_pruning, update_pruning
from trainers.techniques.quantize import apply_fake_quant

CPU = torch.device("cpu")


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))


def cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(16 * 2 * 2, 10),
    )


def rows(model: nn.Module, count: int = 32) -> torch.Tensor:
    torch.manual_seed(1)
    shape = (64,) if isinstance(model[0], nn.Flatten) else (1, 8, 8)
    return torch.randn(count, *shape)


def export_inputs(model: nn.Module, bits: int = 32, sparsity: float = 0.0, rank: int | None = None) -> ExportInputs:
    """The model as training leaves it (factorised, pruned, on the `bits` grid) and the techniques' eager export."""
    configs = techniques_from_choices({"quant_bits": bits, "sparsity": sparsity, "rank": rank})
    model = model.eval()
    apply_low_rank(model, configs["rank"])
    apply_pruning(model, configs["sparsity"])
    update_pruning(model, configs["sparsity"], epoch=0, epochs=1)
    apply_fake_quant(model, configs["quant_bits"])
    x = rows(model)
    with torch.no_grad():
        model.train()(x)  # activation quantisers observe their ranges, as in training
    model = bake_weight_transforms(model).eval()
    exported = export_deployable(copy.deepcopy(model), configs, nn.Identity(), x[:1])
    return ExportInputs(model, exported.eager, DeployFormat(bits, sparse=sparsity > 0), x[:4], x, CPU)
