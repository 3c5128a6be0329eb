"""Structured pruning: whole output channels, neurons and attention heads removed, for a smaller dense model.

torch-pruning's dependency graph finds what must shrink together (the next layer's inputs, a
BatchNorm, both sides of a residual add, a depthwise conv and the layer feeding it, a learned
positional parameter) and cuts every such group by the same channels, ranked by the L2 norm of
their weights (`MagnitudeImportance`). The pruned model is an ordinary dense model with smaller
shapes: its exported ONNX graph has them, so it is faster and smaller on every runtime. The
model's input and the classifier's output (the last Linear or Conv2d to run) are never pruned.

When: magnitude only means something on trained weights. A trial that starts from a baseline's
trained weights (`TrialRecipe.start_from` "baseline") is pruned before its first epoch and
fine-tunes for all of them: train, prune the trained model, fine-tune, the recipe of torch-pruning,
NNCF and ModelOpt. A trial that starts from scratch trains dense for the first half of its epochs,
is pruned once at the start of epoch `epochs // 2` (the `reshape` phase), and fine-tunes for the
rest; a one-epoch one is pruned before it trains, by the initial weights' norms. Either way the loop
then builds a new optimizer over the smaller parameters (Adam's moments restart).

Every DDP rank prunes identically: the number of channels cut from each group depends on the
ratio and the shapes only (local pruning, not global), the ranked weights are the same on every
replica, and the new DDP wrapper broadcasts rank 0's weights. For the same reason a resumed or
rebuilt trial gets the checkpoint's shapes by pruning a fresh model (`replay_reshapes`) before
the weights load.

Composes with low rank (the factors' inner rank shrinks too), fake quantisation (the stateless
FakeQuantize is lifted off, the weights pruned, and put back), dropout, weight decay, L1,
precision, feature selection, distillation and compile (recompiled after pruning), and with 8-bit
quantisation's activation fake quantisers (static ones around convolutions, dynamic ones on Linear
inputs), which torch-pruning's trace does not follow: they are lifted off for the cut and put back,
keeping their per-tensor ranges. It refuses, before training, a weight parametrization that holds
tensors shaped like the weight: the unstructured pruning mask (`sparsity`), which cannot follow the
channels being removed.
"""

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch_pruning as tp
from torch import nn
from torch.nn.utils import parametrize

from trainers.attention import Attention
from trainers.techniques import Technique, register
from trainers.techniques.common import check_number, format_number, remove_parametrizations_alone
from trainers.techniques.quantize import lift_activation_quantizers

logger = logging.getLogger(__name__)

PRUNED_LAYERS = (nn.Linear, nn.Conv2d)
MAX_CHANNEL_SPARSITY = 0.9


@dataclass(frozen=True)
class ChannelPrune:
    """Structured pruning of convolution channels, Linear neurons and attention heads.

    Attributes:
        channel_sparsity: the fraction of each prunable group's channels removed,
            0 <= channel_sparsity <= 0.9; 0 is off.
        starts_from_trained: the trial's weights are trained before its first epoch (set from
            `trainers.loop.starts_from_trained`): it is pruned at once (`pruning_epoch`).
    """

    key: ClassVar[str] = "channel_sparsity"
    channel_sparsity: float = 0.0
    starts_from_trained: bool = False

    def __post_init__(self) -> None:
        check_number("ChannelPrune.channel_sparsity", self.channel_sparsity, 0.0, MAX_CHANNEL_SPARSITY)

    @property
    def active(self) -> bool:
        """Whether the config changes the model (channel_sparsity > 0)."""
        return self.channel_sparsity > 0

    def label(self) -> str:
        """Short recipe text: the removed fraction in percent, e.g. "cp50"; "" when off.

        Example:
            >>> ChannelPrune(0.5).label()
            'cp50'
        """
        return f"cp{format_number(round(self.channel_sparsity * 100, 1))}" if self.active else ""

    def describe(self) -> str:
        """One sentence on what the config does.

        Example:
            >>> ChannelPrune(0.5).describe()
            'structured pruning: 50% of channels, neurons and heads removed'
        """
        return f"structured pruning: {format_number(round(self.channel_sparsity * 100, 1))}% of channels, neurons and heads removed"


def pruning_epoch(epochs: int, starts_from_trained: bool = False) -> int:
    """The epoch (0-based) at whose start the model is pruned: dense training before, fine-tuning after.

    Args:
        epochs: the trial's epochs.
        starts_from_trained: the trial starts from trained weights: pruned before the first epoch.

    Example:
        >>> pruning_epoch(6), pruning_epoch(1), pruning_epoch(6, starts_from_trained=True)
        (3, 0, 0)
    """
    return 0 if starts_from_trained else epochs // 2


def check_composable(model: nn.Module, cfg: ChannelPrune) -> dict[str, str]:
    """Refuse, before training, weight parametrizations that cannot follow a change of shape.

    Args:
        model: the model after the other techniques' build phase.
        cfg: the config; an inactive one checks nothing.

    Returns:
        No notes (an empty dict).

    Raises:
        ValueError: a parametrization holds tensors (the unstructured pruning mask of `sparsity`).

    Example:
        >>> check_composable(nn.Sequential(nn.Linear(4, 2)), ChannelPrune(0.5))
        {}
    """
    if not cfg.active:
        return {}
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for tensor_name, chain in module.parametrizations.items():
            holding = [type(p).__name__ for p in chain if list(p.parameters()) or list(p.buffers())]
            if holding:
                raise ValueError(
                    f"channel_sparsity cannot compose with {', '.join(holding)} on {name}.{tensor_name}: it holds "
                    "tensors shaped like the weight (the unstructured `sparsity` mask), which cannot follow the "
                    "removed channels; sweep channel_sparsity and sparsity in separate trials"
                )
    return {}


def apply_channel_pruning(model: nn.Module, cfg: ChannelPrune, example: torch.Tensor) -> dict[str, float]:
    """Remove `cfg.channel_sparsity` of the channels of every prunable group, for real, in place.

    The model is traced on `example` in training mode (the two forward passes move BatchNorm
    statistics as two training batches would) to build torch-pruning's dependency graph, with 8-bit
    quantisation's activation fake quantisers lifted off for the trace and put back after the cut
    (their ranges are per tensor: they fit the smaller layers); every group's channels with the smallest L2 norms are
    cut from all the layers that share them. In attention rewritten into explicit projections
    (`trainers.attention.Attention`) whole heads are removed (the same ones from q, k and v, and
    out's inputs) and the module's `num_heads` follows. Stateless weight parametrizations (fake
    quantisation) are lifted off for the cut and put back. The parameters are new tensors after
    this: build a new optimizer.

    Args:
        model: the model (not DDP-wrapped); its weights should be trained.
        cfg: the ratio; an inactive config leaves the model alone.
        example: one batch of the model's inputs, on its device.

    Returns:
        {"parameters_before_pruning", "parameters_after_pruning"}; empty when inactive.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> apply_channel_pruning(model, ChannelPrune(0.5), torch.randn(4, 8))
        {'parameters_before_pruning': 178.0, 'parameters_after_pruning': 90.0}
        >>> model[0].out_features, model[2].out_features
        (8, 2)
    """
    if not cfg.active:
        return {}
    before = _parameter_count(model)
    was_training = model.training
    model.train()  # torch-pruning traces the autograd graph of a training step
    lifted = _lift_parametrizations(model)
    restore_quantizers = lift_activation_quantizers(model)  # torch-pruning's trace does not follow them
    attentions = [module for module in model.modules() if isinstance(module, Attention)]
    heads = {
        _head_layer(projection): attention.num_heads
        for attention in attentions
        for projection in (attention.q_proj, attention.k_proj, attention.v_proj)
    }
    pruner = tp.pruner.MetaPruner(
        model,
        example,
        importance=tp.importance.MagnitudeImportance(p=2),
        pruning_ratio=cfg.channel_sparsity,
        ignored_layers=[_output_layer(model, example)],
        unwrapped_parameters=_bare_parameters(model),
        num_heads=heads,
        prune_num_heads=bool(heads),
        prune_head_dims=False,  # whole heads go; each kept head keeps its width
        head_pruning_ratio=cfg.channel_sparsity,
    )
    pruner.step()
    for attention in attentions:
        attention.embed_dim = _head_layer(attention.q_proj).out_features
        attention.num_heads = attention.embed_dim // attention.head_dim
    restore_quantizers()
    for module, tensor_name, chain in lifted:
        for parametrization in chain:
            parametrize.register_parametrization(module, tensor_name, parametrization)
    model.train(was_training)
    after = _parameter_count(model)
    if after == before:
        raise RuntimeError(f"channel pruning {cfg.label()} found no channel group to remove in {type(model).__name__}")
    logger.info("channel pruning %s: %d -> %d parameters", cfg.label(), before, after)
    return {"parameters_before_pruning": float(before), "parameters_after_pruning": float(after)}


def _parameter_count(model):
    return sum(parameter.numel() for parameter in model.parameters())


def _lift_parametrizations(model):
    lifted = []
    for module in model.modules():
        if parametrize.is_parametrized(module):
            for tensor_name in list(module.parametrizations.keys()):
                chain = list(module.parametrizations[tensor_name])
                remove_parametrizations_alone(module, tensor_name, leave_parametrized=False)
                lifted.append((module, tensor_name, chain))
    return lifted


def _head_layer(projection):
    # the Linear whose outputs are the heads (the second factor of a low-rank projection)
    return [module for module in projection.modules() if isinstance(module, nn.Linear)][-1]


def _output_layer(model, example):
    order = []
    handles = [
        module.register_forward_hook(lambda module, inputs, output: order.append(module))
        for module in model.modules()
        if isinstance(module, PRUNED_LAYERS)
    ]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for handle in handles:
            handle.remove()
    if not order:
        raise ValueError("channel_sparsity found no nn.Linear or nn.Conv2d layer to prune")
    return order[-1]


def _bare_parameters(model):
    # parameters used directly in a user module's forward (a learned positional embedding): their
    # last dimension is the feature one, the one that follows the layers producing those features
    return [
        (parameter, parameter.dim() - 1)
        for module in model.modules()
        if not type(module).__module__.startswith("torch.")
        for parameter in module.parameters(recurse=False)
    ]


def _refusals(model, cfg):
    if any(isinstance(module, PRUNED_LAYERS) for module in model.modules()):
        return []
    return [f"channel_sparsity on {type(model).__name__}: no nn.Linear or nn.Conv2d layer: {cfg.label()} would change nothing"]


def _reshape(model, cfg, epoch, epochs, example):
    if not cfg.active or epoch != pruning_epoch(epochs, cfg.starts_from_trained):
        return None
    return apply_channel_pruning(model, cfg, example)


TECHNIQUE = register(
    Technique(
        config=ChannelPrune,
        position=35,
        after=("rank", "sparsity", "quant_bits", "dropout"),  # checks the parametrizations they leave
        build=check_composable,
        needs_explicit_attention=True,  # torch-pruning cuts heads of explicit q/k/v/out projections
        refusals=_refusals,
        reshape=_reshape,
    )
)
