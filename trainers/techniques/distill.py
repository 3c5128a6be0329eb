"""Knowledge distillation: a compressed trial learns from a trained teacher's logits (Hinton et al. 2015).

The step's loss is (1 - w) * CE(student, y) + w * T^2 * KL(softmax(teacher / T) || softmax(student / T)),
w = `distill`, T = `temperature` (T^2 keeps the soft term's gradients at the scale of the hard
one's as T grows). The loss phase adds terms to the plain cross-entropy the loop computes, so the
hook adds w * (T^2 * KL - CE): the sum is the formula above.

The teacher is a trained checkpoint of the same model kind: the trial recipe's `teacher_path`
(a `trained.pt`, the sweep's own baseline or the spec's `train.teacher`), read with the checked
reader (`load_trained_weights`, weights only). Its architecture is the trial's model as built, before the
other techniques change it (the build hook runs first and keeps a copy); its weights load before
training (the wrap hook), so a missing, unreadable or ill-fitting teacher stops the trial before
it trains, and rebuilding a finished trial's deployable never reads the teacher. It runs in eval
mode, under no_grad, on each step's batch. A data-phase technique that changes the model's inputs
(feature selection) gives a teacher that does not fit: that is refused with the reason.
"""

import copy
import logging
from dataclasses import dataclass, field
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from trainers.checkpoints import load_trained_weights
from trainers.techniques import Technique, register
from trainers.techniques.common import check_number, format_number

logger = logging.getLogger(__name__)

MISSING_TEACHER = (
    "distill needs a teacher: set the trial recipe's teacher_path to a trained.pt of the same model kind "
    "(the sweep's baseline, trained first, or the spec's train.teacher)"
)


class Teacher:
    """The teacher a distilling trial learns from: its architecture after build, its trained module after wrap."""

    def __init__(self) -> None:
        self.architecture: nn.Module | None = None
        self.module: nn.Module | None = None


@dataclass(frozen=True)
class Distill:
    """Distillation from a teacher's logits.

    Attributes:
        distill: w, the weight of the soft (teacher) term, 0 <= w <= 1; 0 is off.
        temperature: T, the softmax temperature of both sides, > 0.
        teacher_path: the teacher's `trained.pt` (set from `TrialRecipe.teacher_path`).
        teacher: the trial's teacher, filled by the build and wrap hooks.
    """

    key: ClassVar[str] = "distill"
    distill: float = 0.0
    temperature: float = 4.0
    teacher_path: str | None = None
    teacher: Teacher = field(default_factory=Teacher, compare=False, repr=False)

    def __post_init__(self) -> None:
        check_number("Distill.distill", self.distill, 0.0, 1.0)
        check_number("Distill.temperature", self.temperature, 1e-3)

    @property
    def active(self) -> bool:
        """Whether the config changes training (distill > 0)."""
        return self.distill > 0

    def label(self) -> str:
        """Short recipe text: the soft term's weight, e.g. "kd0.5"; "" when off.

        Example:
            >>> Distill(0.5).label()
            'kd0.5'
        """
        return f"kd{format_number(self.distill)}" if self.active else ""

    def describe(self) -> str:
        """One sentence on what the config does.

        Example:
            >>> Distill(0.5).describe()
            "distillation: 0.5 of the loss is the KL divergence to the teacher's logits at temperature 4"
        """
        return (
            f"distillation: {format_number(self.distill)} of the loss is the KL divergence to the teacher's "
            f"logits at temperature {format_number(self.temperature)}"
        )


def distillation_loss(
    logits: torch.Tensor, teacher_logits: torch.Tensor, targets: torch.Tensor, weight: float, temperature: float
) -> torch.Tensor:
    """Hinton's loss: (1 - w) * CE(logits, y) + w * T^2 * KL(softmax(teacher / T) || softmax(logits / T)).

    The KL divergence is averaged over the batch (summed over classes).

    Args:
        logits: the student's logits, (N, classes).
        teacher_logits: the teacher's on the same inputs, (N, classes).
        targets: the class indices, (N,).
        weight: w, 0 <= w <= 1.
        temperature: T > 0.

    Returns:
        A scalar tensor, differentiable with respect to `logits`.

    Example:
        >>> distillation_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), 0.5, 2.0)
        tensor(0.3466)
    """
    hard = F.cross_entropy(logits, targets)
    soft = F.kl_div(
        F.log_softmax(logits / temperature, dim=-1),
        F.log_softmax(teacher_logits / temperature, dim=-1),
        reduction="batchmean",
        log_target=True,
    )
    return (1 - weight) * hard + weight * temperature**2 * soft


def load_teacher(architecture: nn.Module, path: str | None, device: torch.device) -> nn.Module:
    """A frozen, eval-mode copy of `architecture` holding the weights of the checkpoint at `path`.

    Args:
        architecture: a module of the teacher's architecture (the trial's model as built).
        path: the teacher's `trained.pt`.
        device: where the teacher runs (the student's device).

    Raises:
        ValueError: no path is given, or the checkpoint's weights do not fit the architecture.
        CheckpointError: the file is missing, corrupt or not a trial checkpoint.

    Example:
        >>> teacher = load_teacher(model, "baseline/checkpoint_000004/trained.pt", torch.device("cpu"))  # doctest: +SKIP
    """
    if path is None:
        raise ValueError(MISSING_TEACHER)
    teacher = copy.deepcopy(architecture).to(device)
    load_trained_weights(teacher, path, "teacher")
    return teacher.eval().requires_grad_(False)


def _keep_architecture(model, cfg):
    if not cfg.active:
        return {}
    cfg.teacher.architecture = copy.deepcopy(model)
    return {"teacher": cfg.teacher_path} if cfg.teacher_path else {}


def _load(model, cfg, warmup):
    if cfg.active and cfg.teacher.module is None:
        device = next(model.parameters()).device
        cfg.teacher.module = load_teacher(cfg.teacher.architecture, cfg.teacher_path, device)
        logger.info("distilling from %s", cfg.teacher_path)
    return model, {}


def _loss_term(model, cfg, logits, targets, inputs):
    if not cfg.active:
        return None
    with torch.no_grad():
        teacher_logits = cfg.teacher.module(inputs).float()
    logits = logits.float()
    return distillation_loss(logits, teacher_logits, targets, cfg.distill, cfg.temperature) - F.cross_entropy(logits, targets)


TECHNIQUE = register(
    Technique(
        config=Distill,
        position=5,  # builds first: the teacher's architecture is the model before the others change it
        build=_keep_architecture,
        wrap=_load,
        loss=_loss_term,
    )
)
