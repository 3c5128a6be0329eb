"""Magnitude pruning: a 0/1 mask on each weight, tightened over training; sparse storage at export."""

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trainers.techniques import Technique, register
from trainers.techniques.common import check_number, format_number

logger = logging.getLogger(__name__)

PRUNABLE = (nn.Linear, nn.Conv2d)
SCOPES = ("global", "layer")
SCHEDULES = ("gradual", "oneshot")
INDEX_DTYPE = torch.int32  # CSR indices of exported weights; 4 bytes each


@dataclass(frozen=True)
class Prune:
    """Magnitude pruning of every nn.Linear and nn.Conv2d weight.

    Attributes:
        sparsity: the target fraction of weights set to zero, 0 <= sparsity <= 0.99; 0 is off.
        scope: "global" ranks |w| across all layers together (layers end up with different
            sparsities); "layer" prunes each layer to the target on its own.
        schedule: "gradual" raises the sparsity along a cubic curve (Zhu & Gupta 2017), reaching
            the target at the start of the last epoch; "oneshot" prunes to the target at epoch 0.
    """

    key: ClassVar[str] = "sparsity"
    sparsity: float = 0.0
    scope: str = "global"
    schedule: str = "gradual"

    def __post_init__(self) -> None:
        check_number("Prune.sparsity", self.sparsity, 0.0, 0.99)
        if self.scope not in SCOPES:
            raise ValueError(f"Prune.scope must be one of {SCOPES}, got {self.scope!r}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"Prune.schedule must be one of {SCHEDULES}, got {self.schedule!r}")

    @property
    def active(self) -> bool:
        """Whether the config changes the model (sparsity > 0)."""
        return self.sparsity > 0

    def label(self) -> str:
        """Short recipe text: the target sparsity in percent, e.g. "sp50", "sp12.5"; "" when off.

        Example:
            >>> Prune(0.5).label()
            'sp50'
        """
        return f"sp{format_number(round(self.sparsity * 100, 1))}" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> Prune(0.5).describe()
            'magnitude pruning to 50% sparsity'
        """
        return f"magnitude pruning to {self.sparsity:.0%} sparsity" if self.active else ""


class WeightMask(nn.Module):
    """Parametrization that multiplies a weight by `mask`, a 0/1 buffer of the same shape.

    The mask is a buffer, so it is saved in the state_dict (checkpoints restore it) and
    DistributedDataParallel broadcasts it from rank 0.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("mask", torch.ones_like(weight))

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return weight * self.mask


class SparseLinear(nn.Module):
    """A Linear layer whose weight is stored in CSR form and multiplied as a sparse CSR tensor.

    The stored tensors are the buffers `values`, `col_indices` and `crow_indices` (int32) and
    `bias`; forward wraps them, without copying, in a torch.sparse_csr_tensor and calls
    torch.nn.functional.linear on it.

    Args:
        weight: the dense (out_features, in_features) weight to store.
        bias: the bias, or None.

    Example:
        >>> layer = SparseLinear(torch.eye(4), None)
        >>> layer(torch.ones(2, 4)).shape
        torch.Size([2, 4])
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        csr = weight.detach().to_sparse_csr()
        self.register_buffer("values", csr.values().clone())
        self.register_buffer("col_indices", csr.col_indices().to(INDEX_DTYPE))
        self.register_buffer("crow_indices", csr.crow_indices().to(INDEX_DTYPE))
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        weight = torch.sparse_csr_tensor(
            self.crow_indices,
            self.col_indices,
            self.values,
            size=(self.out_features, self.in_features),
            check_invariants=False,
        )
        return F.linear(inputs, weight, self.bias)

    def stored_numels(self) -> list[int]:
        """The elements it stores: its non-zero weights and its bias."""
        return [self.values.numel()] + ([] if self.bias is None else [self.bias.numel()])

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, nnz={self.values.numel()}"


def sparsity_at(cfg: Prune, epoch: int, epochs: int) -> float:
    """The scheduled sparsity at the start of `epoch` (0-based) of `epochs`.

    Gradual: target * (1 - (1 - epoch / (epochs - 1)) ** 3), so 0 at epoch 0 and the target from
    epoch epochs - 1 on (at once when epochs == 1). Oneshot: the target from epoch 0.

    Args:
        cfg: the pruning config.
        epoch: the epoch about to start, 0 <= epoch < epochs.
        epochs: the number of epochs of the run, >= 1.

    Returns:
        The fraction of weights to prune.

    Example:
        >>> [round(sparsity_at(Prune(0.8), epoch, 4), 3) for epoch in range(4)]
        [0.0, 0.563, 0.77, 0.8]
    """
    if epochs < 1 or not 0 <= epoch < epochs:
        raise ValueError(f"need 0 <= epoch < epochs and epochs >= 1, got epoch={epoch}, epochs={epochs}")
    last_epoch = epochs - 1
    if cfg.schedule == "oneshot" or epoch >= last_epoch:
        return cfg.sparsity
    return cfg.sparsity * (1 - (1 - epoch / last_epoch) ** 3)


def apply_pruning(model: nn.Module, cfg: Prune) -> dict[str, str]:
    """Register a WeightMask parametrization (all ones) on the weight of every nn.Linear and nn.Conv2d.

    Must run before any other weight parametrization (the fake quantisation) so that the mask is
    applied first. The masks are set by `update_pruning`, which the training loop calls at the
    start of every epoch; the mask acts in forward, so pruned weights stay zero whatever the
    optimizer does to the stored values.

    Args:
        model: the model to change, in place.
        cfg: the pruning config; an inactive config leaves the model alone.

    Returns:
        Notes for the trial's tags: "pruned_layers" (comma-separated layer names); empty when
        the config is inactive.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> apply_pruning(model, Prune(0.5))
        {'pruned_layers': '0,2'}
    """
    if not cfg.active:
        return {}
    names = []
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE):
            continue
        if parametrize.is_parametrized(module, "weight"):
            raise RuntimeError(f"apply_pruning must run before other weight parametrizations; {name!r} has one")
        parametrize.register_parametrization(module, "weight", WeightMask(module.weight))
        names.append(name)
    logger.info("pruning %s (%s, %s) on %s", cfg.label(), cfg.scope, cfg.schedule, names)
    return {"pruned_layers": ",".join(names)}


def update_pruning(model: nn.Module, cfg: Prune, epoch: int, epochs: int) -> float:
    """Set the masks by weight magnitude to the scheduled sparsity of `epoch`; call at each epoch start.

    The weights ranked are the masked ones, so a pruned weight (magnitude 0) stays pruned as the
    sparsity grows. Exactly round(sparsity * n) weights are masked, n counted over all layers
    (global scope) or per layer (layer scope). After the epoch that reaches the target, the masks
    are left as they are.

    Args:
        model: a model prepared by `apply_pruning` (a DistributedDataParallel wrapper works too).
        cfg: the same config given to `apply_pruning`.
        epoch: the epoch about to start, 0-based.
        epochs: the number of epochs of the run.

    Returns:
        The scheduled sparsity for this epoch (0.0 when the config is inactive).

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> notes = apply_pruning(model, Prune(0.8))
        >>> [round(update_pruning(model, Prune(0.8), epoch, 4), 3) for epoch in range(4)]  # one call per epoch
        [0.0, 0.563, 0.77, 0.8]
    """
    if not cfg.active:
        return 0.0
    sparsity = sparsity_at(cfg, epoch, epochs)
    last_update = 0 if cfg.schedule == "oneshot" else epochs - 1
    if epoch > last_update:
        return sparsity
    layers = [
        (module.parametrizations.weight.original, weight_mask.mask)
        for module in model.modules()
        if (weight_mask := _weight_mask(module)) is not None
    ]
    if not layers:
        raise RuntimeError("update_pruning found no WeightMask; call apply_pruning first")
    with torch.no_grad():
        scores = [(original * mask).abs().flatten() for original, mask in layers]
        if cfg.scope == "global":
            new_masks = _keep_largest(torch.cat(scores), sparsity).split([score.numel() for score in scores])
        else:
            new_masks = [_keep_largest(score, sparsity) for score in scores]
        for (_, mask), new_mask in zip(layers, new_masks):
            mask.copy_(new_mask.view_as(mask))
    logger.info("epoch %d: pruned to sparsity %.4f (%s)", epoch, sparsity, cfg.scope)
    return sparsity


def sparsity_of(model: nn.Module) -> float:
    """The fraction of zero entries among the (masked) weights of all nn.Linear and nn.Conv2d layers.

    Args:
        model: a model, with or without pruning masks (layers already turned into SparseLinear
            are not counted).

    Returns:
        Zeros / entries, 0.0 when the model has no such layer.

    Example:
        >>> sparsity_of(nn.Linear(4, 2))
        0.0
    """
    zeros, entries = 0, 0
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, PRUNABLE):
                weight = module.weight
                zeros += int((weight == 0).sum())
                entries += weight.numel()
    return zeros / entries if entries else 0.0


def export_sparse(model: nn.Module) -> nn.Module:
    """Replace each nn.Linear by a SparseLinear where CSR storage takes fewer bytes than dense, in place.

    CSR bytes are nnz * (value bytes + 4) + (out_features + 1) * 4, so with fp32 weights a layer
    converts when fewer than about half its weights are non-zero. Outputs are unchanged (up to
    float rounding). The converted layers are logged and can be found as SparseLinear modules.
    The model itself (the root module) is never replaced.

    Args:
        model: a plain model, its pruning masks already folded in by `bake_weight_transforms`.

    Returns:
        The same model.

    Example:
        >>> from trainers.techniques.common import bake_weight_transforms
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> notes = apply_pruning(model, Prune(0.9, schedule="oneshot"))
        >>> update_pruning(model, Prune(0.9, schedule="oneshot"), epoch=0, epochs=1)
        0.9
        >>> model = export_sparse(bake_weight_transforms(model))
        >>> [name for name, module in model.named_modules() if isinstance(module, SparseLinear)]
        ['0', '2']
    """
    if any(parametrize.is_parametrized(module) for module in model.modules()):
        raise RuntimeError("export_sparse needs a plain model; call bake_weight_transforms first")
    converted = []
    index_bytes = torch.empty((), dtype=INDEX_DTYPE).element_size()
    for name, module in list(model.named_modules()):
        if name == "" or not isinstance(module, nn.Linear):
            continue
        weight = module.weight.detach()
        nonzeros = int(torch.count_nonzero(weight))
        sparse_bytes = nonzeros * (weight.element_size() + index_bytes) + (module.out_features + 1) * index_bytes
        if sparse_bytes < weight.numel() * weight.element_size():
            model.set_submodule(name, SparseLinear(weight, module.bias))
            converted.append(name)
    logger.info("export_sparse: stored %s as CSR", converted or "no layer")
    return model


def _weight_mask(module: nn.Module) -> WeightMask | None:
    if not parametrize.is_parametrized(module, "weight"):
        return None
    first = module.parametrizations.weight[0]
    return first if isinstance(first, WeightMask) else None


def _keep_largest(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    mask = torch.ones_like(scores)
    pruned_count = round(sparsity * scores.numel())
    if pruned_count:
        mask[torch.topk(scores, pruned_count, largest=False).indices] = 0
    return mask


def _epoch_start(model, cfg, epoch, epochs):
    return {"sparsity": update_pruning(model, cfg, epoch, epochs)}


def dense_storage_note(model: nn.Module, cfg: Prune) -> str:
    """Say plainly which pruned layers of an exported model are still stored (and run) dense.

    A pruned nn.Conv2d, or an nn.Linear whose CSR form would not be smaller (more than about half
    its weights non-zero), keeps its zeros: the same bytes and the same dense kernel as unpruned.

    Args:
        model: the model after `export_sparse`.
        cfg: the pruning config (for its label).

    Returns:
        The note, e.g. "sp50: 2 of 2 pruned layers stored dense, their zeros stored and multiplied
        (no smaller, no faster than dense): 0 (Linear), 2 (Linear)"; "" when every pruned layer is sparse.

    Example:
        >>> dense_storage_note(nn.Sequential(nn.Linear(8, 2)), Prune(0.5))
        'sp50: 1 of 1 pruned layers stored dense, their zeros stored and multiplied (no smaller, no faster than dense): 0 (Linear)'
    """
    dense = [f"{name} ({type(module).__name__})" for name, module in model.named_modules() if isinstance(module, PRUNABLE)]
    sparse_count = sum(isinstance(module, SparseLinear) for module in model.modules())
    if not dense:
        return ""
    return (
        f"{cfg.label()}: {len(dense)} of {len(dense) + sparse_count} pruned layers stored dense, their zeros stored and "
        f"multiplied (no smaller, no faster than dense): {', '.join(dense)}"
    )


def _export(model, cfg, context):
    if not cfg.active:
        return model
    context.fmt.sparse = True
    model = export_sparse(model)
    note = dense_storage_note(model, cfg)
    if note:
        context.notes["sparsity_dense"] = note
    return model


TECHNIQUE = register(
    Technique(
        config=Prune,
        position=30,
        after=("rank",),  # masks go on the factorised layers
        needs_explicit_attention=True,
        applies_to=lambda module: isinstance(module, PRUNABLE),
        covers="nn.Linear and nn.Conv2d",
        export_yields_to=("quant_bits",),  # quantised weights are stored dense: int8 beats CSR below ~75% sparsity
        build=apply_pruning,
        epoch_start=_epoch_start,
        export=_export,
    )
)
