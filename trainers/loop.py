"""The per-worker training loop: data -> model -> techniques -> train -> export -> measure.

The model trains on preprocessed tensors (`Dataset.preprocessed()`, computed once per trial), or,
from a `trainers.streamed.StreamedDataset`, on batches preprocessed as they are read; either way
the loop sees an iterable of (inputs, labels) batches per epoch. The deployable carries the same
preprocessing (`preprocess()`) in front of the model, so it takes raw rows, and it is measured on
raw test rows.

Pure PyTorch. It takes a plain recipe, a data set and a `report` callable, so it runs the same
inside a Ray Tune trial, inside a Ray Train worker, or on a bare GPU box. When
`torch.distributed` is initialised (Ray Train does that for multi-worker trials) the model is
wrapped in DistributedDataParallel with the trial's communication (`trainers.communication`, which
also counts what the workers send) and every rank trains on its own shard of the training split.
"""

import contextlib
import copy
import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from trainers import communication, runtimes, techniques
from trainers.checkpoints import CheckpointError, load_trained, load_trained_weights
from trainers.data import Dataset
from trainers.deployable import Deployable, DeployFormat, EagerDeployable
from trainers.measure import EVAL_BATCH, evaluate_batches, measure_deployable
from trainers.metrics import TRAINED_FOR_EXPORT
from trainers.models import build_model
from trainers.streamed import StreamedDataset, TensorBatches
from trainers.techniques.common import bake_weight_transforms

logger = logging.getLogger(__name__)

Report = Callable[[dict[str, float], dict[str, Any] | None], None]
"""`report(metrics, checkpoint)`: checkpoint maps a file stem to an object to `torch.save`."""

OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "onecycle")
ONECYCLE_WARMUP_FRACTION = 0.3
"""onecycle's rise, as a fraction of all steps, when `warmup_epochs` is 0 (torch's OneCycleLR default)."""
CALIBRATION_ROWS = 256
"""Training rows a runtime may calibrate static quantisation with."""
START_FROM = ("scratch", "baseline")
MISSING_START_WEIGHTS = (
    "start_from 'baseline' needs start weights: set the trial recipe's start_weights_path to the dense "
    "baseline's trained.pt (the sweep trains its baseline first)"
)


@dataclass(frozen=True)
class TrialRecipe:
    """Everything one trial trains, as plain values.

    Args:
        model_kind: "mlp", "cnn" or "package.module:factory".
        choices: the trial's technique values by spec key, e.g. {"rank": 16, "quant_bits": 8}.
        epochs, batch_size, optimizer, lr, seed: the training settings.
        schedule, warmup_epochs: the learning-rate schedule, stepped per batch (see `scheduled_lr`).
        clip_norm: clip the gradients' global norm to this before each step; None = no clipping.
        target_accuracy: stop after the first epoch whose validation accuracy reaches it (the
            MLPerf rule); None = train every epoch.
        hidden, channels, model_options: passed to `build_model`.
        threads: intra-op threads for training on CPU.
        measure_threads: threads for the latency measurement (fixed, so trials compare).
        device: "cpu", "cuda" or "cuda:N".
        runtime: the primary deployment runtime (a name in `trainers.runtimes.RUNTIMES`): test
            accuracy and the provisional latency are measured there, and its artifact is shipped.
        max_abs_diff: the largest difference allowed between the runtime's logits and the eager
            PyTorch model's, relative to the largest eager logit; beyond it the trial fails.
        teacher_path: a `trained.pt` of the same model kind, trained on the same data without
            technique (the sweep's baseline, or the spec's `train.teacher`), that distillation
            (`distill` > 0) learns from; a distilling trial without one is refused before it trains.
        start_from: "scratch" (the seed's initial weights) or "baseline": a trial with an active
            technique starts from the dense baseline's trained weights (`start_weights_path`),
            loaded into the freshly built model before any technique's build phase, so the
            techniques change trained weights (low rank factorises them, QAT fine-tunes them,
            channel pruning cuts before the first epoch); the dense trial itself (no active
            technique) trains from scratch either way (`starts_from_trained`).
        start_weights_path: the baseline's `trained.pt` (same model kind, options and inputs), read
            with the checked reader by such a trial when it starts at epoch 0; a resumed or rebuilt
            trial loads its own checkpoint and never reads it. Only with start_from "baseline".

    Example:
        >>> TrialRecipe(model_kind="mlp", choices={"rank": 8}, epochs=2)
        TrialRecipe(model_kind='mlp', choices={'rank': 8}, epochs=2, batch_size=64, ...)
    """

    model_kind: str = "mlp"
    choices: dict = field(default_factory=dict)
    epochs: int = 5
    batch_size: int = 64
    optimizer: str = "adamw"
    lr: float = 3e-3
    seed: int = 0
    schedule: str = "constant"
    warmup_epochs: int = 0
    clip_norm: float | None = None
    target_accuracy: float | None = None
    hidden: tuple[int, ...] = (64,)
    channels: tuple[int, ...] = (16, 32)
    model_options: dict = field(default_factory=dict)
    threads: int = 1
    measure_threads: int = 1
    device: str = "cpu"
    runtime: str = "eager"
    max_abs_diff: float = 0.05
    teacher_path: str | None = None
    start_from: str = "scratch"
    start_weights_path: str | None = None

    def __post_init__(self) -> None:
        if self.start_from not in START_FROM:
            raise ValueError(f"train.start_from must be one of {START_FROM}, got {self.start_from!r}")
        if self.start_weights_path is not None and self.start_from != "baseline":
            raise ValueError(f"start_weights_path is read only with start_from 'baseline', got {self.start_from!r}")


def starts_from_trained(recipe: TrialRecipe) -> bool:
    """Whether the trial starts from the baseline's trained weights rather than its initial ones:
    `start_from` is "baseline" and a technique is active (the dense baseline trains from scratch).

    Example:
        >>> starts_from_trained(TrialRecipe(start_from="baseline", choices={"channel_sparsity": 0.5}))
        True
        >>> starts_from_trained(TrialRecipe(start_from="baseline")), starts_from_trained(TrialRecipe(choices={"rank": 8}))
        (False, False)
    """
    configs = techniques.techniques_from_choices(recipe.choices)
    return recipe.start_from == "baseline" and any(cfg.active for cfg in configs.values())


def build_trial_model(
    recipe: TrialRecipe, data: Dataset, loads_checkpoint: bool = False
) -> tuple[nn.Module, Dataset, dict, dict]:
    """Build the trial's trainable model with every technique's data and build phases applied.

    A trial that starts from trained weights (`starts_from_trained`) gets `recipe.start_weights_path`'s
    weights loaded into the freshly built model before the build phase, and its notes name the file
    ("start_weights").

    Args:
        recipe: the trial's recipe.
        data: the full data set.
        loads_checkpoint: the trial's own checkpoint will replace the weights (a resumed or rebuilt
            trial): the start weights are neither needed nor read.

    Returns:
        (model on the recipe's device, the data set with the data phase's input transforms added
        (e.g. feature selection; its rows stay raw), technique configs by key, notes for the
        trial's tags).

    Raises:
        UnsupportedTechnique: an active technique cannot apply to the model (before any training;
            the message gives every reason, see `trainers.techniques.unsupported`).
        ValueError: the trial starts from trained weights and has none, or they do not fit the
            model (the message names the file and the first mismatch).
        CheckpointError: the start weights' file cannot be read.

    Example:
        >>> from trainers.data import load_dataset
        >>> model, data, configs, notes = build_trial_model(TrialRecipe(), load_dataset("digits"))
        >>> notes["mode"], sum(p.numel() for p in model.parameters())
        ('baseline', 4810)
    """
    starts_trained = starts_from_trained(recipe)
    settings = {"teacher_path": recipe.teacher_path, "starts_from_trained": starts_trained}
    configs = techniques.techniques_from_choices(recipe.choices, settings)
    data, data_notes = techniques.prepare_data(data, configs)
    torch.manual_seed(recipe.seed)
    model = build_model(
        recipe.model_kind,
        data.model_input_shape,
        data.num_classes,
        hidden=recipe.hidden,
        channels=recipe.channels,
        options=recipe.model_options,
    )
    refusals = techniques.unsupported(model, configs)
    if refusals:
        raise techniques.UnsupportedTechnique("; ".join(refusals))
    notes = {"mode": techniques.label_string(configs)} | data_notes
    if starts_trained and not loads_checkpoint:
        _load_start_weights(model, recipe.start_weights_path)
    if starts_trained and recipe.start_weights_path is not None:  # a resumed attempt too: it started from them
        notes["start_weights"] = recipe.start_weights_path
    notes |= techniques.build(model, configs)
    return model.to(recipe.device), data, configs, notes


def _load_start_weights(model, path):
    if path is None:
        raise ValueError(MISSING_START_WEIGHTS)
    epochs = load_trained_weights(model, path, "start weights")
    logger.info("starting from the trained weights of %s (%d epochs)", path, epochs)


@dataclass
class Exported:
    """A trained model ready for every runtime: what `export_deployable` returns.

    Both models take raw rows: each is `nn.Sequential(preprocess, model)`.

    Attributes:
        float_model: the data's preprocessing, then the trained model with its weight transforms
            baked in (low rank factorised, pruned zeros, weights on the quantisation grid), before
            any technique's export.
        eager: the data's preprocessing, then the techniques' own eager export (the "eager"
            runtime's deployable).
        fmt: how the techniques ask the deployed weights to be stored.
        notes: the export's notes for the trial's tags.
        metrics: figures the export measured.
    """

    float_model: nn.Module
    eager: EagerDeployable
    fmt: DeployFormat
    notes: dict
    metrics: dict

    def inputs_for_runtimes(self, example: torch.Tensor, calibration: torch.Tensor, threads: int) -> runtimes.ExportInputs:
        """What `trainers.runtimes.export_to` takes, for this trained model."""
        return runtimes.ExportInputs(
            self.float_model, self.eager, self.fmt, example, calibration, example.device, threads
        )


def export_deployable(model: nn.Module, configs: dict, preprocess: nn.Module, example: torch.Tensor) -> Exported:
    """Turn the trained model into the one that would be deployed, and measured: raw rows in.

    Training-time weight transforms (pruning masks, fake quantisation) are baked in; then every
    technique's export hook runs (quantised or sparse storage, compilation), in phase order, on
    the model alone; last, the preprocessing goes in front of both the float model and the eager
    export, so every runtime's artifact (an ONNX graph too) contains it.

    Args:
        model: the trained model (not DDP-wrapped); it is modified in place.
        configs: technique configs by key.
        preprocess: raw rows -> the model's inputs, as training read them (`Dataset.preprocess()`).
        example: one batch of raw rows, on the device the deployable runs on.

    Returns:
        The float model, the eager deployable, how its weights are stored, notes and metrics.

    Example:
        >>> from trainers.data import load_dataset
        >>> model, data, configs, notes = build_trial_model(TrialRecipe(), load_dataset("digits"))
        >>> exported = export_deployable(model, configs, data.preprocess(), data.x_test[:1])
        >>> exported.eager(data.x_test[:1]).shape
        torch.Size([1, 10])
    """
    preprocess = copy.deepcopy(preprocess).to(example.device).eval()
    with torch.no_grad():
        model_example = preprocess(example)
    context = techniques.ExportContext(example.device, model_example, DeployFormat(), {}, {})
    baked = bake_weight_transforms(model).eval()
    float_model = nn.Sequential(preprocess, copy.deepcopy(baked))
    module = techniques.export(baked, configs, context)
    context.fmt.notes = dict(context.notes)
    eager = EagerDeployable(nn.Sequential(preprocess, module))
    return Exported(float_model, eager, context.fmt, context.notes, context.metrics)


class RuntimeDisagreement(Exception):
    """A runtime's logits differ from the eager PyTorch model's by more than the tolerance."""


class TrialFailed(Exception):
    """A trial that would fail the same way however often it were retried.

    Attributes:
        reason: what went wrong, in one line.
        trained: the trained state {"epoch", "model", "optimizer", "metrics"} when it failed after training, else None.
    """

    def __init__(self, reason: str, trained: dict | None = None):
        super().__init__(reason)
        self.reason = reason
        self.trained = trained


def deploy_to(runtime: str, exported: Exported, data: Dataset, device: torch.device, threads: int = 1) -> Deployable:
    """Export a trained model to one runtime, with calibration rows from the training split.

    Args:
        runtime: a name in `trainers.runtimes.RUNTIMES`.
        exported: from `export_deployable`.
        data: the trial's data set (raw rows: its examples and training-split calibration rows
            are what the deployable takes).
        device: where the deployable runs.
        threads: intra-op threads of the runtime.

    Raises:
        RuntimeUnavailable: the runtime cannot run this model here (the message says why).

    Example:
        >>> from trainers.data import load_dataset
        >>> model, data, configs, notes = build_trial_model(TrialRecipe(), load_dataset("digits"))
        >>> exported = export_deployable(model, configs, data.preprocess(), data.x_test[:1])
        >>> deploy_to("onnxruntime", exported, data, torch.device("cpu"))(data.x_test[:2]).shape
        torch.Size([2, 10])
    """
    inputs = exported.inputs_for_runtimes(
        data.x_test[:8].to(device), data.x_train[:CALIBRATION_ROWS].to(device), threads
    )
    return runtimes.export_to(runtime, inputs)


def runtime_difference(deployable: Deployable, eager: Deployable, x: torch.Tensor) -> float:
    """The largest difference between a runtime's logits and the eager model's on `x`, relative
    to the largest eager logit (so one tolerance fits models whose logits are 1 or 100).

    Example:
        >>> eager = EagerDeployable(nn.Linear(4, 2))
        >>> runtime_difference(EagerDeployable(nn.Sequential(eager.module, nn.Identity())), eager, torch.randn(3, 4))
        0.0
    """
    reference = eager(x).float()
    return (deployable(x).float() - reference).abs().max().item() / max(reference.abs().max().item(), 1e-12)


def rebuild_deployable(recipe: TrialRecipe, data: Dataset, trained_path: str) -> tuple[Exported, Dataset]:
    """Rebuild a finished trial's deployable model from its recipe and its `trained.pt` checkpoint.

    The same steps as the trial itself took (build, the reshapes of the epochs it trained, load the
    trained weights, export), so the result computes what the trial measured. The checkpoint is
    read with the checked reader; a trial that started from the baseline's weights is rebuilt
    without them (`recipe.start_from` alone decides when its reshapes happened).

    Args:
        recipe: the trial's recipe (its device is where the deployable runs).
        data: the full data set.
        trained_path: the trial's `trained.pt`.

    Returns:
        (the exported model, ready for every runtime; the trial's data set, whose rows (`x_test`
        for accuracy, an input example or latency) are raw, as the deployable takes them).

    Raises:
        CheckpointError: the checkpoint is missing, corrupt or not a trial checkpoint.

    Example:
        >>> exported, model_data = rebuild_deployable(recipe, data, "model/trained.pt")  # doctest: +SKIP
        >>> deploy_to("onnxruntime", exported, model_data, torch.device("cpu"))  # doctest: +SKIP
    """
    model, model_data, configs = _rebuilt_model(recipe, data, load_trained(trained_path))
    example = model_data.x_test[:1].to(recipe.device)
    return export_deployable(model, configs, model_data.preprocess(), example), model_data


def training_steps(recipe: TrialRecipe, data: Dataset, trained_path: str, steps: int) -> Callable[[], None]:
    """A finished trial's training step, rebuilt to be timed again: a callable that runs `steps` of
    its optimizer steps (one worker, its batch size, techniques and optimizer, as its epochs ran
    them) on its first training rows (a streamed data set's sample of them), over and over, on the
    shape its checkpoint ended with.

    Args:
        recipe: the trial's recipe.
        data: the full data set.
        trained_path: the trial's `trained.pt`.
        steps: optimizer steps per call.

    Returns:
        A callable of no arguments; each call trains `steps` steps (and waits for the device).

    Example:
        >>> run_steps = training_steps(recipe, data, "model/trained.pt", steps=2)  # doctest: +SKIP
        >>> run_steps()  # doctest: +SKIP
    """
    model, model_data, configs = _rebuilt_model(recipe, data, load_trained(trained_path))
    device = torch.device(recipe.device)
    # the first training rows at hand, as many as the steps read (a streamed data set's sample: its
    # stream is not read while timing); a copy of the whole split per trial would be gigabytes
    rows = slice(0, steps * recipe.batch_size)
    x, y = model_data.model_inputs(model_data.x_train[rows]).to(device), model_data.y_train[rows].to(device)
    optimizer = _make_optimizer(recipe, techniques.param_groups(model, configs))
    scaler = techniques.grad_scaler(configs, device)
    first = slice(0, recipe.batch_size)
    trained, _ = _training_module(model, optimizer, configs, 1, device, x[first], y[first], meter=None)  # one worker: nothing sent
    shard = (torch.arange(steps * recipe.batch_size) % len(x)).to(device)
    steps_per_epoch = math.ceil(len(model_data.x_train) / recipe.batch_size)

    def run_steps():
        with torch.inference_mode(False), torch.enable_grad():  # timed from inside `measure_latency`'s inference mode
            batches = _indexed_batches(x, y, shard, recipe.batch_size)
            _train_epoch(trained, model, optimizer, scaler, batches, recipe, configs, 0, steps_per_epoch)
            _synchronize(device)

    return run_steps


def _rebuilt_model(recipe, data, trained):
    model, model_data, configs, _ = build_trial_model(recipe, data, loads_checkpoint=True)
    with torch.no_grad():
        model_example = model_data.preprocess().to(recipe.device)(model_data.x_test[:1].to(recipe.device))
    techniques.replay_reshapes(model, configs, trained["epoch"], recipe.epochs, model_example)
    model.load_state_dict(trained["model"])
    return model, model_data, configs


def scheduled_lr(schedule: str, lr: float, step: int, total_steps: int, warmup_steps: int = 0) -> float:
    """The learning rate of one optimizer step under a schedule.

    Warm-up rises linearly to `lr` over the first `warmup_steps` steps ((step + 1) / warmup_steps of
    it); then "constant" holds `lr`, "cosine" falls along a half cosine towards 0 (reached at `total_steps`), and
    "onecycle" is cosine whose warm-up defaults to 30% of the steps when `warmup_steps` is 0.

    Args:
        schedule: one of `SCHEDULES`.
        lr: the peak learning rate.
        step: the step, counted from 0 over the whole training.
        total_steps: how many steps the training takes.
        warmup_steps: how many steps the linear warm-up takes (0 = none).

    Example:
        >>> scheduled_lr("cosine", 0.1, step=50, total_steps=100)
        0.05
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"train.schedule must be one of {SCHEDULES}, got {schedule!r}")
    if schedule == "onecycle" and warmup_steps == 0:
        warmup_steps = round(ONECYCLE_WARMUP_FRACTION * total_steps)
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    if schedule == "constant":
        return lr
    progress = (step - warmup_steps) / max(total_steps - warmup_steps, 1)
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def train_trial(
    recipe: TrialRecipe, data: Dataset, report: Report, resume: dict | None = None
) -> dict[str, float]:
    """Train one trial, export its deployable model, measure it, and report along the way.

    After every epoch `report` gets the epoch's metrics and a checkpoint {"trained": state}.
    On a multi-worker trial only rank 0 exports and measures; the other ranks' last report holds
    the training figures alone.
    A trial that starts from the baseline's trained weights (`starts_from_trained`) loads them
    before the build phase; its training figures (train_seconds, the epochs to a target) count
    its own epochs only, not the baseline's. A resumed trial loads its checkpoint instead.
    Before every epoch the reshape phase may shrink the model (structured pruning): the optimizer,
    the DDP wrapper and the wrap phase are then built again over the new parameters, and a resumed
    trial replays those reshapes before loading its checkpoint.
    The model trains on the preprocessed splits; after the last epoch it exports the model, with
    the preprocessing in front, to the recipe's runtime, measures test accuracy on the raw test
    rows, size and a provisional latency there, and reports them with the checkpoint {"trained": state,
    "deployable": the runtime's Deployable (save it with its `save`)}. A loss that becomes NaN or inf
    stops the trial at once with {"diverged": 1, "diverged_epoch": epoch} (epochs count from 1).
    With `recipe.target_accuracy`, the first epoch whose validation accuracy reaches it is the last:
    the model is exported and measured as usual, and the final metrics say "epochs_trained" and
    "reached_target" (1 or 0).

    Args:
        recipe: the trial's recipe.
        data: the full data set (every rank gets all of it and trains on its own shard), or a
            StreamedDataset whose training source yields this rank's own shard.
        report: called as report(metrics, checkpoint); only rank 0's checkpoint is kept.
        resume: a "trained" checkpoint from an earlier attempt of this trial.

    Returns:
        The final metrics (the last report's).

    Raises:
        TrialFailed: a failure a retry would only repeat: a technique refused on the model, a
            teacher or start weights missing or not fitting (before training), an export, runtime or agreement error
            (after it; the trained state comes with it). An error while training (a lost worker)
            is raised as it is.

    Example:
        >>> final = train_trial(TrialRecipe(epochs=1), load_dataset("digits"), lambda m, c: None)  # doctest: +SKIP
        >>> final["test_accuracy"] > 0.5  # doctest: +SKIP
        True
    """
    progress = _Progress()
    with _failures_named(progress):
        trained = _train(recipe, data, report, resume, progress)
        if trained.model is None or _distributed_rank()[0] != 0:  # diverged, or not the rank that exports
            report(trained.metrics, None)
            return trained.metrics
        return _export_and_report(recipe, trained, report)


def train_for_export(
    recipe: TrialRecipe, data: Dataset, report: Report, resume: dict | None = None
) -> dict[str, float]:
    """`train_trial`'s training alone, for a worker group whose trial driver exports and measures
    the trained model itself (`export_trained`, in a process that has done it before, instead
    of a worker that would pay its first export's costs and then exit).

    Every epoch is reported as `train_trial` reports it. The last report holds the training
    figures, `TRAINED_FOR_EXPORT: 1.0` and "notes", with the checkpoint {"trained": state} (the
    state also holds the last epoch's metrics, so a run resumed after its last epoch still has
    them); a trial that diverged or failed ends as `train_trial`'s does.

    Args:
        recipe, data, report, resume: as for `train_trial`.

    Returns:
        The last report's metrics.

    Raises:
        TrialFailed: as `train_trial`, before training.

    Example:
        >>> final = train_for_export(TrialRecipe(epochs=1), load_dataset("digits"), report)  # doctest: +SKIP
        >>> final[TRAINED_FOR_EXPORT]  # doctest: +SKIP
        1.0
    """
    progress = _Progress()
    with _failures_named(progress):
        trained = _train(recipe, data, report, resume, progress)
    if trained.model is None:
        report(trained.metrics, None)
        return trained.metrics
    final = trained.metrics | {TRAINED_FOR_EXPORT: 1.0, "notes": trained.notes}
    report(final, {"trained": trained.state})
    return final


def export_trained(recipe: TrialRecipe, data: Dataset, trained_path: str, training: dict, report: Report) -> dict[str, float]:
    """Export and measure a model that `train_for_export` trained, as `train_trial` would have,
    and report the trial's final metrics and checkpoint as `train_trial` does.

    The model is rebuilt from its `trained.pt` (`rebuild_deployable`'s steps), on `recipe.device`.

    Args:
        recipe: the trial's recipe (its device is where the model is measured).
        data: the full data set, or a StreamedDataset's view (its test split and sample rows).
        trained_path: the `trained.pt` of `train_for_export`'s last checkpoint.
        training: `train_for_export`'s last report (the training figures and notes).
        report: called once, as report(final metrics, {"trained": state, "deployable": Deployable}).

    Returns:
        The final metrics.

    Raises:
        TrialFailed: the checkpoint cannot be read, or an export, runtime or agreement error
            (with the trained state when it was read).

    Example:
        >>> final = export_trained(recipe, data, "checkpoint/trained.pt", last_metrics, report)  # doctest: +SKIP
    """
    progress = _Progress()
    with _failures_named(progress):
        progress.trained = load_trained(trained_path)
        model, model_data, configs = _rebuilt_model(recipe, data, progress.trained)
        metrics = {key: value for key, value in training.items() if key not in (TRAINED_FOR_EXPORT, "notes")}
        trained = _Trained(model, model_data, configs, dict(training.get("notes", {})), metrics, progress.trained)
        return _export_and_report(recipe, trained, report)


@dataclass
class _Progress:
    training: bool = False
    trained: dict | None = None


@dataclass
class _Trained:
    model: nn.Module | None  # None: the loss diverged, and metrics say so
    data: Dataset
    configs: dict
    notes: dict
    metrics: dict
    state: dict | None


@contextlib.contextmanager
def _failures_named(progress):
    try:
        yield
    except (MemoryError, torch.OutOfMemoryError):
        raise
    except Exception as error:
        if progress.training:
            raise
        raise TrialFailed(_failure_reason(error), progress.trained) from error


def _failure_reason(error):
    text = runtimes.first_line(error)
    ours = (RuntimeDisagreement, CheckpointError, ValueError)  # UnsupportedTechnique is a ValueError
    return text if isinstance(error, ours) else f"{type(error).__name__}: {text}"


def _train(recipe, data, report, resume, progress):
    rank, world_size = _distributed_rank()
    device = torch.device(recipe.device)
    torch.set_num_threads(recipe.threads)
    model, data, configs, notes = build_trial_model(recipe, data, loads_checkpoint=resume is not None)
    logger.info("trial %s: %s", notes["mode"], notes)
    rows = _training_rows(data, recipe, rank, world_size, device)
    x_first, y_first = rows.first
    start_epoch = 0
    epoch_metrics: dict[str, float] = {}
    if resume is not None:
        start_epoch = resume["epoch"]
        epoch_metrics = dict(resume.get("metrics", {}))  # a run resumed after its last epoch still has them
        techniques.replay_reshapes(model, configs, start_epoch, recipe.epochs, x_first)
        model.load_state_dict(resume["model"])
    optimizer = _make_optimizer(recipe, techniques.param_groups(model, configs))
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        logger.info("resuming at epoch %d", start_epoch)
    scaler = techniques.grad_scaler(configs, device)
    meter = communication.CommMeter()  # what the workers send, over every DDP wrapper of the trial
    notes |= communication.single_worker_notes(configs) if world_size == 1 else {}
    trained, wrap_metrics = _training_module(model, optimizer, configs, world_size, device, x_first, y_first, meter)
    progress.training = True
    # the schedule is a function of the step, and a resumed trial starts at an epoch boundary, so
    # the step (epoch * steps_per_epoch) is all it needs: the trained state's "epoch" gives it
    steps_per_epoch = math.ceil(rows.per_worker / recipe.batch_size)
    train_seconds = 0.0
    epochs_trained = start_epoch
    reached_target = False
    for epoch in range(start_epoch, recipe.epochs):
        reshape_metrics = techniques.reshape(model, configs, epoch, recipe.epochs, x_first)
        if reshape_metrics is not None:  # new parameters: a new optimizer, DDP wrapper and wrap phase
            optimizer = _make_optimizer(recipe, techniques.param_groups(model, configs))
            trained, wrap_metrics = _training_module(model, optimizer, configs, world_size, device, x_first, y_first, meter)
        technique_metrics = (reshape_metrics or {}) | techniques.epoch_start(model, configs, epoch, recipe.epochs)
        first_step = epoch * steps_per_epoch
        started = time.perf_counter()  # a streamed epoch's reading is inside it: the user pays for it
        train_loss, rows_trained = _train_epoch(
            trained, model, optimizer, scaler, rows.epoch(epoch), recipe, configs, first_step, steps_per_epoch
        )
        _synchronize(device)
        epoch_seconds = time.perf_counter() - started
        train_seconds += epoch_seconds
        if not math.isfinite(train_loss):
            logger.warning("loss is %s in epoch %d: stopping the trial", train_loss, epoch + 1)
            diverged = {"epoch": epoch + 1, "diverged": 1.0, "diverged_epoch": float(epoch + 1)}
            return _Trained(None, data, configs, notes, diverged, None)
        val = evaluate_batches(EagerDeployable(model), rows.val())
        epoch_metrics = {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val["loss"],
            "val_accuracy": val["accuracy"],
            "epoch_seconds": epoch_seconds,
            "train_samples_per_s": rows_trained * world_size / epoch_seconds,
            "lr": optimizer.param_groups[0]["lr"],
        } | technique_metrics
        epochs_trained = epoch + 1
        reached_target = recipe.target_accuracy is not None and val["accuracy"] >= recipe.target_accuracy
        if reached_target:
            logger.info(
                "validation accuracy %.4f reached the target %g in epoch %d: stopping",
                val["accuracy"], recipe.target_accuracy, epochs_trained,
            )
            break
        if epochs_trained < recipe.epochs:
            report(epoch_metrics, {"trained": _trained_state(model, optimizer, epochs_trained, epoch_metrics)})

    trained_state = _trained_state(model, optimizer, epochs_trained, epoch_metrics)
    progress.training, progress.trained = False, trained_state
    final = epoch_metrics | wrap_metrics | meter.finish() | _replica_agreement(model, world_size)
    final |= {"world_size": world_size, "train_seconds": train_seconds, "resumed_from_epoch": start_epoch}
    final |= {"epochs_trained": epochs_trained, "reached_target": float(reached_target)}
    return _Trained(model, data, configs, notes, final, trained_state)


def _export_and_report(recipe, trained, report):
    data, device = trained.data, torch.device(recipe.device)
    exported = export_deployable(trained.model, trained.configs, data.preprocess(), data.x_test[:1].to(device))
    runtime_notes = {"runtime": recipe.runtime}
    try:
        deployable = deploy_to(recipe.runtime, exported, data, device, recipe.measure_threads)
    except runtimes.RuntimeUnavailable as error:
        # said in the trial's tags and the report's runtime column; its quiet latency stays empty
        logger.warning("trial %s: %s; its accuracy is measured on the eager model", trained.notes["mode"], error)
        deployable = exported.eager
        runtime_notes = {"runtime": "eager", "runtime_unavailable": str(error)}
    difference = runtime_difference(deployable, exported.eager, data.x_test[:256].to(device))
    if difference > recipe.max_abs_diff:
        raise RuntimeDisagreement(
            f"{recipe.runtime}'s logits differ from the eager PyTorch model's by {difference:.3g} of the largest "
            f"logit (tolerance {recipe.max_abs_diff:g}): the {recipe.runtime} artifact is not the model that was trained"
        )
    measured = measure_deployable(deployable, data, device, recipe.measure_threads)
    final = trained.metrics | exported.metrics | _provisional(measured) | {"runtime_max_abs_diff": difference}
    logger.info("trial %s finished: %s", trained.notes["mode"], final)
    notes = trained.notes | exported.notes | getattr(deployable, "notes", {}) | runtime_notes
    report(final | {"notes": notes}, {"trained": trained.state, "deployable": deployable})
    return final


def _provisional(measured):
    # timed while other trials may train on the same cores: the quiet measurement phase replaces it
    latencies = {"latency_ms": "latency_provisional_ms", "latency_b256_ms": "latency_b256_provisional_ms"}
    kept = {key: value for key, value in measured.items() if "latency" not in key and "samples_per_s" not in key}
    return kept | {provisional: measured[key] for key, provisional in latencies.items()}


def _distributed_rank():
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _training_module(model, optimizer, configs, world_size, device, x, y, meter):
    trained, wrap_metrics = techniques.wrap(
        communication.distribute(model, optimizer, configs, device, meter) if world_size > 1 else model,
        configs,
        lambda module: _forward_backward(module, x, y, configs),
    )
    optimizer.zero_grad(set_to_none=True)
    return trained, wrap_metrics


def _make_optimizer(recipe, groups):
    # fused: one kernel for the whole update instead of one per tensor (about 1.3x a training
    # step of a small MLP on CPU, see benchmarks/README.md)
    if recipe.optimizer == "adamw":
        optimizer = torch.optim.AdamW(groups, lr=recipe.lr, fused=True)
    elif recipe.optimizer == "adam":
        optimizer = torch.optim.Adam(groups, lr=recipe.lr, fused=True)
    elif recipe.optimizer == "sgd":
        optimizer = torch.optim.SGD(groups, lr=recipe.lr, momentum=0.9, fused=True)
    else:
        raise ValueError(f"train.optimizer must be one of {OPTIMIZERS}, got {recipe.optimizer!r}")
    for group in optimizer.param_groups:
        group["initial_lr"] = group["lr"]  # the schedule's peak for this group (torch's lr_scheduler key)
    return optimizer


def _epoch_shard(n, seed, epoch, rank, world_size, shard_size, device):
    generator = torch.Generator().manual_seed(seed * 100_003 + epoch)
    permutation = torch.randperm(n, generator=generator)
    return permutation[rank::world_size][:shard_size].to(device)


def _indexed_batches(x, y, index, batch_size):
    for start in range(0, len(index), batch_size):
        batch = index[start : start + batch_size]
        yield x[batch], y[batch]


@dataclass
class _TrainingRows:
    first: tuple  # one batch of model inputs and labels, on the device
    per_worker: int  # training rows each worker reads per epoch
    epoch: Callable  # epoch -> this worker's batches of (model inputs, labels), on the device
    val: Callable  # () -> the validation split's batches of (model inputs, labels)


def _training_rows(data, recipe, rank, world_size, device):
    if isinstance(data, StreamedDataset):  # raw batches from the stream, preprocessed as they come
        preprocess = data.preprocess().to(device)

        def model_inputs(batches):
            for x, y in batches:
                with torch.no_grad():  # closed before the yield: the consumer's steps need gradients
                    inputs = preprocess(x.to(device))
                yield inputs, y.to(device)

        first = next(model_inputs([(data.x_train[: recipe.batch_size], data.y_train[: recipe.batch_size])]))
        return _TrainingRows(
            first,
            data.n_train // world_size,
            lambda epoch: model_inputs(data.split_batches("train", recipe.batch_size, epoch)),
            lambda: model_inputs(data.split_batches("val", EVAL_BATCH)),
        )
    model_inputs = data.preprocessed()  # once per trial: no per-step cost
    x_train, y_train = model_inputs.x_train.to(device), data.y_train.to(device)
    x_val, y_val = model_inputs.x_val.to(device), data.y_val.to(device)
    shard_size = len(x_train) // world_size

    def epoch_batches(epoch):
        shard = _epoch_shard(len(x_train), recipe.seed, epoch, rank, world_size, shard_size, device)
        return _indexed_batches(x_train, y_train, shard, recipe.batch_size)

    first = (x_train[: recipe.batch_size], y_train[: recipe.batch_size])
    return _TrainingRows(first, shard_size, epoch_batches, lambda: TensorBatches(x_val, y_val).batches(EVAL_BATCH))


def _train_epoch(trained, model, optimizer, scaler, batches, recipe, configs, first_step, steps_per_epoch):
    trained.train()
    total_loss, rows = None, 0
    total_steps = recipe.epochs * steps_per_epoch
    warmup_steps = recipe.warmup_epochs * steps_per_epoch
    for step, (inputs, targets) in enumerate(batches, start=first_step):
        for group in optimizer.param_groups:
            group["lr"] = scheduled_lr(recipe.schedule, group["initial_lr"], step, total_steps, warmup_steps)
        with techniques.autocast(configs, inputs.device):
            logits = trained(inputs)
            loss = F.cross_entropy(logits, targets)
        total_loss = loss.detach() * len(targets) if total_loss is None else total_loss.add_(loss.detach(), alpha=len(targets))
        rows += len(targets)
        for term in techniques.loss_terms(model, configs, logits, targets, inputs):
            loss = loss + term
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if recipe.clip_norm is not None:
            scaler.unscale_(optimizer)  # clip the true gradients, not the loss-scaled ones
            nn.utils.clip_grad_norm_(model.parameters(), recipe.clip_norm)
        scaler.step(optimizer)
        scaler.update()
    return (0.0 if total_loss is None else float(total_loss)) / max(rows, 1), rows


def _forward_backward(trained, x, y, configs):
    trained.train()
    with techniques.autocast(configs, x.device):
        loss = F.cross_entropy(trained(x), y)
    loss.backward()


def _synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _trained_state(model, optimizer, epochs_done, epoch_metrics):
    return {"epoch": epochs_done, "model": model.state_dict(), "optimizer": optimizer.state_dict(), "metrics": epoch_metrics}


def _replica_agreement(model, world_size):
    if world_size == 1:
        return {}
    checksum = sum(p.detach().double().sum() for p in model.parameters()).reshape(1)
    low, high, ranks = checksum.clone(), checksum.clone(), torch.ones_like(checksum)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(ranks, op=dist.ReduceOp.SUM)
    return {"ddp_replica_checksum_spread": float(high - low), "ddp_ranks_trained": float(ranks)}
