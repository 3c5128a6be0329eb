"""Gradient compression: what DDP's per-step gradient all-reduce sends, through PyTorch's own DDP
communication hooks (`torch.distributed.algorithms.ddp_comm_hooks`).

"fp16" all-reduces the gradients cast to half precision (half the bytes); "powersgd" all-reduces
a rank-`powersgd_rank` factorisation P Q^T of every gradient matrix instead of the matrix (Vogels
et al. 2019, PowerSGD, with error feedback and warm start: the low-rank twin, in communication,
of the `rank` technique). Vectors (biases) and matrices that a rank-r factorisation would not
shrink at least 2x go uncompressed. Only a multi-worker trial communicates: on one worker the
technique does nothing and its notes say so (`trainers.communication`).
"""

import logging
from dataclasses import dataclass
from typing import ClassVar

from torch.distributed.algorithms.ddp_comm_hooks import default_hooks, powerSGD_hook

from trainers.techniques import Technique, register
from trainers.techniques.common import check_number

logger = logging.getLogger(__name__)

COMPRESSIONS = ("none", "fp16", "powersgd")
POWERSGD_FIRST_COMPRESSED_STEP = 2
"""PowerSGD all-reduces the first steps uncompressed (the smallest torch allows with error feedback
and warm start: DDP rebuilds its buckets after the first step)."""


@dataclass(frozen=True)
class GradCompression:
    """How DDP compresses the gradients it all-reduces every step.

    Attributes:
        grad_compression: "none" (off: the plain all-reduce), "fp16" or "powersgd".
        powersgd_rank: the rank of PowerSGD's factors (the space key `powersgd_rank`); read for
            "powersgd" only.
    """

    key: ClassVar[str] = "grad_compression"
    space_options: ClassVar[tuple[str, ...]] = ("powersgd_rank",)
    grad_compression: str = "none"
    powersgd_rank: int = 4

    def __post_init__(self):
        if self.grad_compression not in COMPRESSIONS:
            raise ValueError(f"GradCompression.grad_compression must be one of {COMPRESSIONS}, got {self.grad_compression!r}")
        check_number("GradCompression.powersgd_rank", self.powersgd_rank, 1)
        if not isinstance(self.powersgd_rank, int):
            raise ValueError(f"GradCompression.powersgd_rank must be an integer >= 1, got {self.powersgd_rank!r}")

    @property
    def active(self) -> bool:
        return self.grad_compression != "none"

    def label(self) -> str:
        """Short recipe text, e.g. "psgd4" or "fp16grad"; "" when off.

        Example:
            >>> GradCompression("powersgd", powersgd_rank=4).label(), GradCompression("fp16").label()
            ('psgd4', 'fp16grad')
        """
        if self.grad_compression == "powersgd":
            return f"psgd{self.powersgd_rank}"
        return "fp16grad" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> GradCompression("powersgd", powersgd_rank=4).describe()
            'PowerSGD rank-4 gradient compression'
        """
        if self.grad_compression == "powersgd":
            return f"PowerSGD rank-{self.powersgd_rank} gradient compression"
        return "fp16 gradient compression" if self.active else ""


def apply_grad_compression(ddp, cfg: GradCompression, optimizer, meter) -> None:
    """Register the compressing DDP communication hook on a multi-worker trial's DDP model.

    Args:
        ddp: the DistributedDataParallel model.
        cfg: the compression; "none" registers nothing (the default, counted all-reduce is used).
        optimizer: the trial's optimizer (unused: compression changes what a step sends, not the step).
        meter: the trial's `trainers.communication.CommMeter`, which registers and counts the hook.

    Example:
        >>> apply_grad_compression(ddp, GradCompression("powersgd", powersgd_rank=4), optimizer, meter)  # doctest: +SKIP
    """
    if cfg.grad_compression == "fp16":
        meter.register_comm_hook(ddp, None, default_hooks.fp16_compress_hook)
    elif cfg.grad_compression == "powersgd":
        state = powerSGD_hook.PowerSGDState(
            process_group=None,
            matrix_approximation_rank=cfg.powersgd_rank,
            start_powerSGD_iter=POWERSGD_FIRST_COMPRESSED_STEP,
        )
        meter.register_comm_hook(ddp, state, _bucket_by_bucket(powerSGD_hook.powerSGD_hook))
    logger.debug("gradient compression: %s", cfg.describe() or "none")


def _bucket_by_bucket(hook):
    # PowerSGD issues a bucket's P and Q all-reduces from callbacks of its first all-reduce, so with
    # several buckets the ranks may issue them in different orders, and gloo, which matches
    # collectives by order, aborts ("Received data size doesn't match expected size"; seen on the
    # 784-1024-1024-10 MLP, benchmarks/communication.py): each bucket's communication completes
    # before the next bucket's starts
    def completed(state, bucket):
        future = hook(state, bucket)
        future.wait()
        return future

    return completed


TECHNIQUE = register(Technique(config=GradCompression, position=100, distribute=apply_grad_compression))
