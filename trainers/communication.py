"""How the workers of a multi-worker trial talk: the DDP wrapper, its communication hook, and the
count of what their collectives send.

Every multi-worker trial trains through `distribute`: its model is wrapped in
DistributedDataParallel, the techniques' distribute phase registers their communication
(`grad_compression`: a compressing DDP hook; `sync_every`: no per-step gradient all-reduce and a
parameter average every k steps), and a trial that registers none gets PyTorch's own
`allreduce_hook`, which computes what DDP's built-in all-reduce does (the gradients' mean).

The bytes are measured where the collectives are issued, not worked out from shapes: torch's DDP
hooks and `model_averaging.utils.average_parameters` all go through `torch.distributed.all_reduce`,
and while a `CommMeter` is open that function is wrapped to add the bytes of every tensor it is
handed (PowerSGD's P and Q factors and its uncompressed tensors, fp16 buckets, averaged
parameters). What it counts is the payload one worker hands to all-reduce; the wire carries about
2(n-1)/n of it per worker in a ring. Buffers DDP broadcasts before each forward pass (BatchNorm
statistics) and the one-off broadcast of the initial weights are not all-reduces and not counted.
"""

import logging

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
from torch.distributed.algorithms.model_averaging.utils import average_parameters

from trainers import techniques

logger = logging.getLogger(__name__)

_OPEN_METERS: list = []
_ALL_REDUCE = dist.all_reduce


def _counting_all_reduce(tensor, *args, **kwargs):
    for meter in _OPEN_METERS:
        meter.bytes_sent += tensor.numel() * tensor.element_size()
    return _ALL_REDUCE(tensor, *args, **kwargs)


class CommMeter:
    """What one worker's collectives sent during training: bytes, sync rounds and optimizer steps.

    A meter counts from `distribute` (which opens it) to `finish` (which closes it and returns
    the figures); the loop keeps one meter for the whole trial, across DDP wrappers rebuilt after
    a reshape.

    Attributes:
        bytes_sent: bytes of the tensors handed to all-reduce.
        sync_rounds: the times the workers synchronised: steps whose gradients were all-reduced,
            plus parameter averages.
        steps: optimizer steps taken.

    Example:
        >>> meter = CommMeter()
        >>> meter.finish()  # a meter that never opened: a 1-worker trial reports nothing
        {}
    """

    def __init__(self):
        self.bytes_sent = 0
        self.sync_rounds = 0
        self.steps = 0
        self._hooked = None
        self._average = None
        self._period = 1
        self._averaged_at = 0

    def register_comm_hook(self, ddp: nn.Module, state: object, hook, *, syncs: bool = True) -> None:
        """Register `hook` on the DDP model, counting one sync round per backward pass when `syncs`.

        Args:
            ddp: the DistributedDataParallel model (a hook can be registered once per model).
            state: the hook's state (a process group, a PowerSGDState...).
            hook: a `torch.distributed.algorithms.ddp_comm_hooks` hook, `hook(state, bucket) -> Future`.
            syncs: whether the hook synchronises the workers' gradients (False for local SGD's).

        Example:
            >>> meter.register_comm_hook(ddp, None, default_hooks.fp16_compress_hook)  # doctest: +SKIP
        """

        def counted(hook_state, bucket):
            if syncs and bucket.is_last():
                self.sync_rounds += 1
            return hook(hook_state, bucket)

        ddp.register_comm_hook(state, counted)
        self._hooked = ddp

    def average_every(self, period: int, tensors) -> None:
        """After every `period`-th optimizer step (counted over the whole trial), and once at the end
        when the last step was not one, average `tensors()` over the workers (one flat all-reduce,
        `torch.distributed.algorithms.model_averaging.utils.average_parameters`).

        Args:
            period: optimizer steps between averages, >= 1.
            tensors: `tensors() -> list[torch.Tensor]`, what to average (parameters and the
                optimizer's state), read at each average.

        Example:
            >>> meter.average_every(8, lambda: list(model.parameters()))  # doctest: +SKIP
        """

        def average():
            average_parameters(iter(tensors()), None)
            self.sync_rounds += 1
            self._averaged_at = self.steps

        self._average = average
        self._period = period

    def count_step(self, *_) -> None:
        """An optimizer step post-hook: count the step, and average when one is due."""
        self.steps += 1
        if self._average is not None and self.steps % self._period == 0:
            self._average()

    def open(self) -> None:
        """Start counting the bytes handed to `torch.distributed.all_reduce`."""
        if dist.all_reduce is not _counting_all_reduce:
            dist.all_reduce = _counting_all_reduce
        if self not in _OPEN_METERS:
            _OPEN_METERS.append(self)

    def finish(self) -> dict[str, float]:
        """Average a last time if steps were taken since the last average, stop counting, and return
        the figures: {"comm_bytes_per_step", "comm_bytes", "sync_rounds", "optimizer_steps"}; {}
        for a meter that never opened (a 1-worker trial)."""
        if self not in _OPEN_METERS:
            return {}
        if self._average is not None and self._averaged_at != self.steps:
            self._average()  # the deployed model is the workers' average, not rank 0's own
        _OPEN_METERS.remove(self)
        if not _OPEN_METERS:
            dist.all_reduce = _ALL_REDUCE
        return {
            "comm_bytes_per_step": self.bytes_sent / max(self.steps, 1),
            "comm_bytes": float(self.bytes_sent),
            "sync_rounds": float(self.sync_rounds),
            "optimizer_steps": float(self.steps),
        }


def distribute(model: nn.Module, optimizer: torch.optim.Optimizer, configs: dict, device: torch.device, meter: CommMeter) -> nn.Module:
    """Wrap `model` in DistributedDataParallel with the trial's communication, counted by `meter`.

    Runs the techniques' distribute phase (each hook is `distribute(ddp, cfg, optimizer, meter)`
    and may register one communication hook on the DDP model with `meter.register_comm_hook` and a
    parameter average with `meter.average_every`); when none registered a hook, PyTorch's
    `allreduce_hook` (the gradients' mean, as DDP's built-in all-reduce) is registered, counted.

    Args:
        model: the model, on `device`; torch.distributed must be initialised.
        optimizer: its optimizer (every step is counted, and may trigger an average).
        configs: technique configs by key.
        device: where the model trains.
        meter: the trial's meter (opened here).

    Returns:
        The DDP model to train.

    Example:
        >>> ddp = distribute(model, optimizer, configs, torch.device("cpu"), meter)  # doctest: +SKIP
    """
    device_ids = [device.index or 0] if device.type == "cuda" else None
    ddp = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)
    meter.open()
    optimizer.register_step_post_hook(meter.count_step)
    for technique in techniques.phase_order("distribute"):
        technique.distribute(ddp, configs[technique.key], optimizer, meter)
    if meter._hooked is not ddp:
        meter.register_comm_hook(ddp, None, default_hooks.allreduce_hook)
    return ddp


def single_worker_notes(configs: dict) -> dict:
    """Notes for a 1-worker trial whose communication techniques are active: they do nothing.

    Example:
        >>> single_worker_notes(techniques.techniques_from_choices({"sync_every": 8}))
        {'sync_every_inactive': 'sync8 does nothing on 1 worker: there is nothing to synchronise'}
    """
    return {
        f"{technique.key}_inactive": f"{configs[technique.key].label()} does nothing on 1 worker: there is nothing to synchronise"
        for technique in techniques.phase_order("distribute")
        if configs[technique.key].active
    }
