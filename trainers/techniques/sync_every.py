"""Periodic model averaging (local SGD): each worker steps on its own gradients, and every k steps
the workers average their parameters and optimizer state.

This is the source article's distributed training ("each server trains on its local data and
periodically uploads its parameters to the main server, which aggregates them"): k times fewer
synchronisations than DDP's all-reduce of the gradients at every step. It uses PyTorch's own
pieces: DDP with `post_localSGD_hook` (no gradient all-reduce once local SGD starts, here at
once) and `model_averaging.utils.average_parameters` after every k-th optimizer step
(`PeriodicModelAverager`'s average, extended to the optimizer's state so that AdamW's moments or
SGD's momentum agree after an average, as the parameters do). `sync_every: 1` is DDP itself.
Only a multi-worker trial communicates: on one worker the technique does nothing and its notes
say so (`trainers.communication`).
"""

import logging
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch.distributed.algorithms.ddp_comm_hooks.post_localSGD_hook import PostLocalSGDState, post_localSGD_hook

from trainers.techniques import Technique, register

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SyncEvery:
    """Average the workers' parameters every `sync_every` optimizer steps instead of all-reducing
    gradients at every step; 1 (off) is DDP's per-step all-reduce."""

    key: ClassVar[str] = "sync_every"
    sync_every: int = 1

    def __post_init__(self):
        if isinstance(self.sync_every, bool) or not isinstance(self.sync_every, int) or self.sync_every < 1:
            raise ValueError(f"SyncEvery.sync_every must be an integer >= 1, got {self.sync_every!r}")

    @property
    def active(self) -> bool:
        return self.sync_every > 1

    def label(self) -> str:
        """Short recipe text, e.g. "sync8"; "" when off.

        Example:
            >>> SyncEvery(8).label()
            'sync8'
        """
        return f"sync{self.sync_every}" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> SyncEvery(8).describe()
            'local SGD: parameters averaged every 8 steps'
        """
        return f"local SGD: parameters averaged every {self.sync_every} steps" if self.active else ""


def training_state(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    """The tensors an average must agree on: every parameter the optimizer steps, and its state
    tensors shaped like their parameter (AdamW's moments, SGD's momentum; not its step counts).

    Example:
        >>> layer = torch.nn.Linear(3, 2)
        >>> optimizer = torch.optim.AdamW(layer.parameters())
        >>> layer(torch.randn(4, 3)).sum().backward(); optimizer.step()
        >>> len(training_state(optimizer))  # 2 parameters, 2 moments each
        6
    """
    params = [param for group in optimizer.param_groups for param in group["params"]]
    state = [
        tensor
        for param in params
        for tensor in optimizer.state.get(param, {}).values()
        if isinstance(tensor, torch.Tensor) and tensor.is_floating_point() and tensor.shape == param.shape
    ]
    return params + state


def apply_sync_every(ddp, cfg: SyncEvery, optimizer, meter) -> None:
    """Turn a multi-worker trial's DDP model into local SGD averaged every `cfg.sync_every` steps.

    Args:
        ddp: the DistributedDataParallel model.
        cfg: the period; 1 registers nothing (DDP's per-step all-reduce).
        optimizer: the trial's optimizer, whose parameters and state are averaged.
        meter: the trial's `trainers.communication.CommMeter`, which registers and counts both.

    Example:
        >>> apply_sync_every(ddp, SyncEvery(8), optimizer, meter)  # doctest: +SKIP
    """
    if not cfg.active:
        return
    local = PostLocalSGDState(process_group=None, subgroup=None, start_localSGD_iter=0, post_local_gradient_allreduce=False)
    meter.register_comm_hook(ddp, local, post_localSGD_hook, syncs=False)
    meter.average_every(cfg.sync_every, lambda: training_state(optimizer))
    logger.debug("local SGD: averaging every %d steps", cfg.sync_every)


TECHNIQUE = register(Technique(config=SyncEvery, position=110, distribute=apply_sync_every))
