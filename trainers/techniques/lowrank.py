"""Low-rank factorisation: replace a layer's weight by the product of two thinner ones (truncated SVD)."""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from trainers.techniques import Technique, register
from trainers.techniques.common import format_number

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LowRank:
    """Factorise every nn.Linear and nn.Conv2d (groups=1) to a lower rank.

    Attributes:
        rank: an int >= 1 (the rank of every factorised layer), a float in (0, 1] (a fraction of
            each layer's full rank min(out, in), rounded, at least 1), or None for off.
    """

    key: ClassVar[str] = "rank"
    rank: int | float | None = None

    def __post_init__(self) -> None:
        is_int_rank = isinstance(self.rank, int) and not isinstance(self.rank, bool) and self.rank >= 1
        is_fraction = isinstance(self.rank, float) and 0.0 < self.rank <= 1.0
        if not (self.rank is None or is_int_rank or is_fraction):
            raise ValueError(f"LowRank.rank must be None, an int >= 1 or a float in (0, 1], got {self.rank!r}")

    @property
    def active(self) -> bool:
        """Whether the config changes the model (rank is not None)."""
        return self.rank is not None

    def label(self) -> str:
        """Short recipe text: "r16" for rank 16, "r0.25" for a quarter of full rank, "" when off.

        Example:
            >>> LowRank(16).label(), LowRank(0.25).label(), LowRank(1.0).label()
            ('r16', 'r0.25', 'r1.0')
        """
        if not self.active:
            return ""
        if self.rank == 1.0 and isinstance(self.rank, float):
            return "r1.0"  # full rank, kept apart from rank 1
        return f"r{format_number(self.rank)}"

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> LowRank(8).describe(), LowRank(0.25).describe()
            ('low-rank factorisation of the layers to rank 8 (where that saves weights)', 'low-rank factorisation of the layers to 25% of full rank (where that saves weights)')
        """
        if self.rank is None:
            return ""
        target = f"{self.rank:.0%} of full rank" if isinstance(self.rank, float) else f"rank {self.rank}"
        return f"low-rank factorisation of the layers to {target} (where that saves weights)"


def apply_low_rank(
    model: nn.Module,
    cfg: LowRank,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
) -> dict[str, str]:
    """Replace layers by two thinner layers initialised from the truncated SVD of their weight, in place.

    An nn.Linear (in -> out) becomes nn.Sequential(Linear(in -> r, no bias), Linear(r -> out, with
    the original bias)). An nn.Conv2d (groups=1, kernel k x k) becomes nn.Sequential(k x k conv
    in -> r with the original stride, padding and dilation, no bias; 1x1 conv r -> out with the
    original bias), from the SVD of the weight seen as an (out, in*k*k) matrix. The singular values
    are split as square roots into both factors; at full rank the outputs are unchanged. A layer is
    left alone, and listed in the notes, when r*(in+out) >= in*out (no parameter saving). The model
    itself (the root module) is never replaced.

    Args:
        model: the model to change.
        cfg: the rank to factorise to; an inactive config leaves the model alone.
        filter_fn: optional `filter_fn(module_name, module) -> bool`; only layers for which it
            returns True are considered.

    Returns:
        Notes for the trial's tags: "low_rank_factorised" (comma-separated layer names) and
        "low_rank_skipped" ("; "-separated "name (in->out, r=rank)"), each only when non-empty.

    Example:
        >>> model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
        >>> apply_low_rank(model, LowRank(16))
        {'low_rank_factorised': '0', 'low_rank_skipped': '2 (64->10, r=16)'}
    """
    if not cfg.active:
        return {}
    factorised, skipped = [], []
    for name, module in list(model.named_modules()):
        if name == "" or not _is_factorisable(module) or (filter_fn is not None and not filter_fn(name, module)):
            continue
        out_features, in_features = module.weight.flatten(1).shape
        rank = cfg.rank if isinstance(cfg.rank, int) else max(1, round(cfg.rank * min(out_features, in_features)))
        if rank * (in_features + out_features) >= in_features * out_features:
            skipped.append(f"{name} ({in_features}->{out_features}, r={rank})")
            continue
        model.set_submodule(name, _factorise(module, rank))
        factorised.append(name)
    logger.info("low rank %s: factorised %s; skipped %s", cfg.label(), factorised, skipped)
    notes = {}
    if factorised:
        notes["low_rank_factorised"] = ",".join(factorised)
    if skipped:
        notes["low_rank_skipped"] = "; ".join(skipped)
    return notes


def _is_factorisable(module: nn.Module) -> bool:
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


def _factorise(module: nn.Linear | nn.Conv2d, rank: int) -> nn.Sequential:
    weight = module.weight.detach()
    u, singular_values, vh = torch.linalg.svd(weight.flatten(1).double(), full_matrices=False)
    root = singular_values[:rank].sqrt()
    left = (u[:, :rank] * root).to(weight.dtype)  # (out, r)
    right = (root[:, None] * vh[:rank]).to(weight.dtype)  # (r, in or in*k*k)
    has_bias = module.bias is not None
    factory = {"device": weight.device, "dtype": weight.dtype}
    if isinstance(module, nn.Linear):
        first = nn.Linear(module.in_features, rank, bias=False, **factory)
        second = nn.Linear(rank, module.out_features, bias=has_bias, **factory)
    else:
        first = nn.Conv2d(
            module.in_channels,
            rank,
            module.kernel_size,
            stride=module.stride,
            padding=module.padding,
            dilation=module.dilation,
            bias=False,
            padding_mode=module.padding_mode,
            **factory,
        )
        second = nn.Conv2d(rank, module.out_channels, kernel_size=1, bias=has_bias, **factory)
    with torch.no_grad():
        first.weight.copy_(right.reshape(first.weight.shape))
        second.weight.copy_(left.reshape(second.weight.shape))
        if has_bias:
            second.bias.copy_(module.bias)
    return nn.Sequential(first, second)


TECHNIQUE = register(
    Technique(
        config=LowRank,
        position=10,
        needs_explicit_attention=True,
        applies_to=_is_factorisable,
        covers="nn.Linear and nn.Conv2d with groups=1",
        build=apply_low_rank,
    )
)
