"""The acceleration techniques, registered by the spec's `space` key and walked phase by phase.

Each technique is one module in this package: a frozen config dataclass (its first field is the
swept value, `key` names the spec key, `active` says whether it does anything, `label()` gives its
short recipe label) and the hook functions it takes part in the trial with, registered with
`register(Technique(...))`. A config may have further fields with defaults; those named like a
trial-wide setting (`teacher_path`, `starts_from_trained`) receive it from `techniques_from_choices`. Every module in the package is imported here, so a new technique moves
in with its module (and its test): nothing else names it.

The phases, in the order a trial meets them (a hook is called for every trial, active or not,
and does nothing when its config is inactive):

- data(data, cfg) -> (data, notes): change how the model reads the data set by adding an input
  transform with `data.with_transform(module)` (feature selection); the raw rows stay as they are,
  and the deployable carries every transform, so it still takes raw rows;
- build(model, cfg) -> notes: change the model before training (dropout, low rank, masks, QAT);
  before the first active technique that has `needs_explicit_attention`, the phase rewrites torch's fused
  attention modules into plain ones with explicit q/k/v/out nn.Linear projections
  (`trainers.attention.rewrite_attention`), so that the technique reaches them and its
  replacement layers do not break the fused modules' direct weight reads;
- param_groups(model, cfg) -> groups | None: the optimizer's parameter groups (weight decay);
- wrap(model, cfg, warmup) -> (model, metrics): wrap the training model (torch.compile);
  `warmup(model)` runs one training step on it, for one-off costs;
- autocast(cfg, device) -> context | None, grad_scaler(cfg, device) -> scaler | None: the
  training step's precision;
- reshape(model, cfg, epoch, epochs, example) -> metrics | None: before every epoch, may change
  the model's shapes in place (structured pruning), `example` being one batch of its inputs; it
  returns None when it left the model alone, and when any hook returns metrics the loop builds a
  new optimizer (and DDP wrapper, and wrap phase) over the new parameters. A resumed or rebuilt
  trial replays the hooks of the epochs its checkpoint trained (`replay_reshapes`), so the model
  has the checkpoint's shapes before the weights are loaded: a hook's new shapes may depend on
  the shapes and the config only, never on the weights' values;
- epoch_start(model, cfg, epoch, epochs) -> metrics: before every epoch (pruning schedule);
- loss(model, cfg, logits, targets, inputs) -> tensor | None: a term added to every step's loss
  (L1), `inputs` being the batch the logits came from (what a teacher reads);
- export(model, cfg, context) -> model: turn the trained model into the eager deployable and say
  in `context.fmt` how the weights are stored, for the other runtimes.
- distribute(ddp, cfg, optimizer, meter) -> None: on a multi-worker trial only, after the model is
  wrapped in DistributedDataParallel (and before the wrap phase): register how the workers
  communicate (a DDP communication hook, a periodic parameter average) through the
  `trainers.communication.CommMeter`, which counts what they send.

A config may also name, in its ClassVar `space_options`, further fields that the spec's `space`
sets under their own key (`powersgd_rank` of `grad_compression`): `OPTION_KEYS` maps each to its
technique.

Within a phase hooks run in registry order (`position`), except that a technique runs after
every technique named in its `after`. A technique whose export cannot compose with another's
names it in `export_yields_to`: when both are active, its export is skipped and the trial's tags
say so (`export_conflict`).
"""

import contextlib
import copy
import importlib
import pkgutil
from dataclasses import dataclass, fields
from typing import Callable

import torch
from torch import nn

from trainers.attention import rewrite_attention
from trainers.deployable import DeployFormat


@dataclass(frozen=True)
class Technique:
    """One registered technique: its config class, where it sits, and its phase hooks.

    Attributes:
        config: the frozen config dataclass (ClassVar `key`, first field the swept value,
            `active`, `label()`).
        position: its place in a trial's label and, by default, in every phase.
        after: keys of techniques whose hooks must run before this one's.
        export_yields_to: keys of techniques whose export wins over this one's when both are active.
        needs_explicit_attention: its build replaces or wraps nn.Linear layers (or walks activation
            modules), so when it is active the build phase rewrites attention first.
        applies_to: `applies_to(module) -> bool`, the weight layers its build changes; with it, a
            layer holding a weight matrix it does not change is named in the trial's notes, and a
            model with no such layer is refused (`unsupported`). None: not a weight technique.
        covers: what `applies_to` accepts, in words, for those messages (e.g. "nn.Linear and nn.Conv2d").
        refusals: `refusals(model, cfg) -> list[str]`, reasons it would change nothing or cannot
            deploy this model (checked before training by `unsupported`); None where there are none.
        data, build, param_groups, wrap, autocast, grad_scaler, reshape, epoch_start, loss, export,
            distribute: the phase hooks (see the package docstring); None where it takes no part.

    Example:
        >>> from trainers.techniques.dropout import Dropout, apply_dropout
        >>> Technique(config=Dropout, position=40, build=apply_dropout).key
        'dropout'
    """

    config: type
    position: int
    after: tuple[str, ...] = ()
    export_yields_to: tuple[str, ...] = ()
    needs_explicit_attention: bool = False
    applies_to: Callable[[nn.Module], bool] | None = None
    covers: str = ""
    refusals: Callable | None = None
    data: Callable | None = None
    build: Callable | None = None
    param_groups: Callable | None = None
    wrap: Callable | None = None
    autocast: Callable | None = None
    grad_scaler: Callable | None = None
    reshape: Callable | None = None
    epoch_start: Callable | None = None
    loss: Callable | None = None
    export: Callable | None = None
    distribute: Callable | None = None

    @property
    def key(self) -> str:
        return self.config.key


@dataclass
class ExportContext:
    """What export hooks read and write.

    Attributes:
        device: where the deployable runs.
        example: one batch of the model's inputs (raw rows already preprocessed) on `device`, for
            hooks that trace or compile; the preprocessing goes in front of the hooks' result.
        fmt: how the deployed weights are stored; hooks set it for the other runtimes.
        notes: the export's notes for the trial's tags.
        metrics: figures the export measured (e.g. a compile time).
    """

    device: torch.device
    example: torch.Tensor
    fmt: DeployFormat
    notes: dict
    metrics: dict


_REGISTRY: dict[str, Technique] = {}
TECHNIQUES: dict[str, type] = {}
"""Spec key -> config class of every registered technique, in registry order."""
OPTION_KEYS: dict[str, str] = {}
"""Spec key of a technique option (a config's `space_options` field) -> its technique's key."""


def register(technique: Technique) -> Technique:
    """Add a technique to the registry (each technique module calls this once, at import).

    Args:
        technique: the technique; its config's `key` must be new.

    Returns:
        The technique.

    Example:
        >>> TECHNIQUE = register(Technique(config=L1, position=60, loss=_loss_term))  # in l1.py  # doctest: +SKIP
    """
    if technique.key in _REGISTRY and _REGISTRY[technique.key] != technique:
        raise ValueError(f"technique key {technique.key!r} is registered twice")
    _REGISTRY[technique.key] = technique
    TECHNIQUES.clear()
    TECHNIQUES.update({registered.key: registered.config for registered in techniques()})
    OPTION_KEYS.update({option: technique.key for option in getattr(technique.config, "space_options", ())})
    return technique


def discover() -> None:
    """Import every technique module of this package (each registers itself); `common` holds helpers.

    Example:
        >>> discover()
    """
    for module in pkgutil.iter_modules(__path__):
        if module.name != "common":
            importlib.import_module(f"{__name__}.{module.name}")


def techniques() -> list[Technique]:
    """The registered techniques in registry order (by `position`).

    Example:
        >>> [technique.key for technique in techniques()][:3]
        ['distill', 'rank', 'quant_bits']
    """
    return sorted(_REGISTRY.values(), key=lambda technique: technique.position)





def techniques_from_choices(choices: dict, settings: dict | None = None) -> dict[str, object]:
    """Build every technique's config from one trial's sampled values.

    Args:
        choices: the trial's values by spec key, e.g. {"rank": 16, "quant_bits": 8}. Keys that are
            neither techniques nor their options (such as "workers") are ignored; techniques not
            named get their default, inactive config; an option (`OPTION_KEYS`) sets its field.
        settings: trial-wide values by config field name, e.g. {"teacher_path": "baseline/trained.pt"};
            every config with a field of that name receives it.

    Returns:
        The configs by key, one for every registered technique, in registry order.

    Example:
        >>> techniques_from_choices({"rank": 16})["rank"]
        LowRank(rank=16)
    """
    settings = settings or {}
    configs = {}
    for key, cls in TECHNIQUES.items():
        given = {name: settings[name] for name in (field.name for field in fields(cls)[1:]) if name in settings}
        given |= {name: choices[name] for name in getattr(cls, "space_options", ()) if name in choices}
        configs[key] = cls(choices[key], **given) if key in choices else cls(**given)
    return configs


def off_value(key: str) -> object:
    """The value of a technique's spec key that turns it off (the dense fp32 baseline's value).

    Example:
        >>> off_value("rank"), off_value("quant_bits")
        (None, 32)
    """
    return fields(TECHNIQUES[key])[0].default


def label_string(configs: dict[str, object]) -> str:
    """The trial's recipe at a glance: the active techniques' labels joined by "-".

    Args:
        configs: technique configs by key, as `techniques_from_choices` returns them.

    Returns:
        e.g. "r16-q8-d0.1-wd1e-4", or "baseline" when no technique is active.

    Example:
        >>> label_string(techniques_from_choices({"rank": 16, "quant_bits": 8}))
        'r16-q8'
    """
    labels = [cfg.label() for cfg in configs.values() if cfg.active]
    return "-".join(labels) or "baseline"


def phase_order(phase: str) -> list[Technique]:
    """The techniques taking part in `phase`, in the order their hooks run.

    Registry order, except that every technique comes after those named in its `after`.

    Args:
        phase: a hook name, e.g. "build" or "export".

    Raises:
        ValueError: the `after` declarations form a cycle.

    Example:
        >>> [technique.key for technique in phase_order("build")]
        ['distill', 'rank', 'sparsity', 'quant_bits', 'dropout', 'channel_sparsity']
    """
    pending = [technique for technique in techniques() if getattr(technique, phase) is not None]
    keys = {technique.key for technique in pending}
    ordered: list[Technique] = []
    while pending:
        done = {technique.key for technique in ordered}
        ready = next(
            (t for t in pending if all(key in done or key not in keys for key in t.after)), None
        )
        if ready is None:
            raise ValueError(f"techniques {[t.key for t in pending]} order each other in a cycle ('after')")
        ordered.append(ready)
        pending.remove(ready)
    return ordered


def prepare_data(data, configs: dict):
    """Run the data phase. Returns (data, notes): the data set with every active technique's input
    transform appended to its `transforms`, in phase order.

    Example:
        >>> from trainers.data import load_dataset
        >>> data, notes = prepare_data(load_dataset("digits"), techniques_from_choices({"feature_keep": 0.5}))
        >>> data.model_input_shape
        (32,)
    """
    notes = {}
    for technique in phase_order("data"):
        data, more = technique.data(data, configs[technique.key])
        notes |= more
    return data, notes


def build(model: nn.Module, configs: dict) -> dict:
    """Run the build phase on `model` in place. Returns the notes for the trial's tags.

    Before the hook of the first active technique that `needs_explicit_attention`, attention
    modules are rewritten (`rewrite_attention`), and the notes name them under
    "attention_rewritten"; the hooks before it see the model as built (distillation keeps that
    architecture for its teacher, whose checkpoint has the fused modules' weights). Before each
    active technique's hook, the weight layers it does not cover are named in the notes
    ("<key>_not_covered").

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> build(model, techniques_from_choices({"rank": 4, "quant_bits": 4}))
        {'low_rank_factorised': '0', 'low_rank_skipped': '2 (16->2, r=4)', 'quant_fake_quant_layers': '0.0,0.1,2'}
    """
    notes = {}
    rewritten = None
    for technique in phase_order("build"):
        cfg = configs[technique.key]
        if rewritten is None and technique.needs_explicit_attention and cfg.active:
            rewritten = rewrite_attention(model)
            if rewritten:
                notes["attention_rewritten"] = ",".join(rewritten)
        uncovered = _uncovered_weight_layers(model, technique) if cfg.active else []
        if uncovered:
            notes[f"{technique.key}_not_covered"] = (
                f"{', '.join(uncovered)} left as they are: {cfg.label()} applies to {technique.covers} only"
            )
        notes |= technique.build(model, cfg)
    return notes


class UnsupportedTechnique(ValueError):
    """A trial's technique cannot apply to its model; the message gives every reason (`unsupported`)."""


def unsupported(model: nn.Module, configs: dict) -> list[str]:
    """Why a trial's active techniques cannot run on this model; empty when they all can.

    Checked before training, on a copy of the freshly built model (the model is not changed). A
    technique is refused when it would change nothing at all (no layer it applies to, after the
    attention rewrite the build phase would do; dropout with no activation module) or when its
    deployable cannot be built (e.g. a Conv2d padding mode the quantised kernels lack). Layers a technique does not
    cover are not refused: the build notes name them ("<key>_not_covered") and the trial runs.

    Args:
        model: the model as `trainers.models.build_model` returns it.
        configs: technique configs by key, as `techniques_from_choices` returns them.

    Returns:
        One message per refused technique and cause, e.g. "sparsity on TextClassifier: no layer it
        applies to (nn.Linear and nn.Conv2d): sp50 would change nothing".

    Example:
        >>> model = nn.Sequential(nn.EmbeddingBag(100, 8), nn.ReLU())
        >>> unsupported(model, techniques_from_choices({"sparsity": 0.5}))
        ['sparsity on Sequential: no layer it applies to (nn.Linear and nn.Conv2d): sp50 would change nothing']
    """
    active = [technique for technique in techniques() if configs[technique.key].active]
    model = copy.deepcopy(model)
    reasons = []
    if any(technique.needs_explicit_attention for technique in active):
        try:
            rewrite_attention(model)
        except ValueError as error:
            keys = ", ".join(technique.key for technique in active if technique.needs_explicit_attention)
            reasons.append(f"{keys} on {type(model).__name__}: {error}")
    for technique in active:
        cfg = configs[technique.key]
        if technique.applies_to is not None and not any(technique.applies_to(module) for module in model.modules()):
            reasons.append(
                f"{technique.key} on {type(model).__name__}: no layer it applies to ({technique.covers}): "
                f"{cfg.label()} would change nothing"
            )
        if technique.refusals is not None:
            reasons += technique.refusals(model, cfg)
    return reasons


def _uncovered_weight_layers(model, technique):
    if technique.applies_to is None:
        return []
    return [
        f"{name} (nn.{type(module).__name__})"
        for name, module in model.named_modules()
        if isinstance(getattr(module, "weight", None), torch.Tensor)
        and module.weight.dim() >= 2
        and not technique.applies_to(module)
    ]


def param_groups(model: nn.Module, configs: dict) -> list[dict]:
    """The optimizer's parameter groups: the first technique's that gives any, else one group of
    every trainable parameter without weight decay.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> groups = param_groups(model, techniques_from_choices({"weight_decay": 1e-4}))
        >>> [group["weight_decay"] for group in groups]
        [0.0001, 0.0]
        >>> optimizer = torch.optim.AdamW(groups, lr=1e-3)
    """
    for technique in phase_order("param_groups"):
        groups = technique.param_groups(model, configs[technique.key])
        if groups is not None:
            return groups
    return [{"params": [p for p in model.parameters() if p.requires_grad], "weight_decay": 0.0}]


def wrap(model: nn.Module, configs: dict, warmup: Callable[[nn.Module], None]) -> tuple[nn.Module, dict]:
    """Run the wrap phase: the module that trains, and one-off metrics (e.g. compile_seconds).

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> trained, metrics = wrap(model, techniques_from_choices({}), lambda m: m(torch.randn(4, 8)).sum().backward())
        >>> trained is model, metrics  # without compile, the model trains as it is
        (True, {})
    """
    metrics = {}
    for technique in phase_order("wrap"):
        model, more = technique.wrap(model, configs[technique.key], warmup)
        metrics |= more
    return model, metrics


def autocast(configs: dict, device: torch.device):
    """The training step's precision context (a no-op context when no technique sets one).

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> with autocast(techniques_from_choices({"precision": "bf16"}), torch.device("cpu")):
        ...     loss = model(torch.randn(4, 8)).sum()
        >>> loss.dtype
        torch.bfloat16
    """
    for technique in phase_order("autocast"):
        context = technique.autocast(configs[technique.key], device)
        if context is not None:
            return context
    return contextlib.nullcontext()


def grad_scaler(configs: dict, device: torch.device) -> torch.amp.GradScaler:
    """The gradient scaler of the training step (a disabled one when no technique needs one).

    Example:
        >>> grad_scaler(techniques_from_choices({}), torch.device("cpu")).is_enabled()
        False
    """
    for technique in phase_order("grad_scaler"):
        scaler = technique.grad_scaler(configs[technique.key], device)
        if scaler is not None:
            return scaler
    return torch.amp.GradScaler(device.type, enabled=False)


def reshape(model: nn.Module, configs: dict, epoch: int, epochs: int, example: torch.Tensor) -> dict | None:
    """Run the reshape phase before epoch `epoch` (0-based), in place.

    Returns:
        The metrics of the hooks that changed the model's shapes, or None when none did (then
        the optimizer's parameters are still the model's).

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> configs = techniques_from_choices({"channel_sparsity": 0.5})
        >>> [reshape(model, configs, epoch, 4, torch.randn(4, 8)) for epoch in range(4)]
        [None, None, {'parameters_before_pruning': 178.0, 'parameters_after_pruning': 90.0}, None]
    """
    metrics = None
    for technique in phase_order("reshape"):
        more = technique.reshape(model, configs[technique.key], epoch, epochs, example)
        if more is not None:
            metrics = (metrics or {}) | more
    return metrics


def replay_reshapes(model: nn.Module, configs: dict, epochs_done: int, epochs: int, example: torch.Tensor) -> None:
    """Give a freshly built model the shapes a checkpoint taken after `epochs_done` epochs has.

    Runs the reshape phase of every epoch before `epochs_done`, so that the checkpoint's weights
    load into the model (they replace whatever values the replay chose).

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> replay_reshapes(model, techniques_from_choices({"channel_sparsity": 0.5}), 3, 4, torch.randn(4, 8))
        >>> model[0].out_features  # as a checkpoint taken after 3 of 4 epochs has it: its weights load
        8
    """
    for epoch in range(epochs_done):
        reshape(model, configs, epoch, epochs, example)


def epoch_start(model: nn.Module, configs: dict, epoch: int, epochs: int) -> dict:
    """Run the epoch_start phase before epoch `epoch` (0-based). Returns the metrics it reports.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> configs = techniques_from_choices({"sparsity": 0.5})
        >>> notes = build(model, configs)
        >>> epoch_start(model, configs, 0, 5)
        {'sparsity': 0.0}
    """
    metrics = {}
    for technique in phase_order("epoch_start"):
        metrics |= technique.epoch_start(model, configs[technique.key], epoch, epochs)
    return metrics


def loss_terms(
    model: nn.Module, configs: dict, logits: torch.Tensor, targets: torch.Tensor, inputs: torch.Tensor
) -> list[torch.Tensor]:
    """The terms the active techniques add to a step's loss.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> configs = techniques_from_choices({"l1": 1e-5})
        >>> x, y = torch.randn(4, 8), torch.tensor([0, 1, 1, 0])
        >>> logits = model(x)
        >>> terms = loss_terms(model, configs, logits, y, x)
        >>> loss = sum(terms, nn.functional.cross_entropy(logits, y))
        >>> len(terms)
        1
    """
    terms = (
        technique.loss(model, configs[technique.key], logits, targets, inputs) for technique in phase_order("loss")
    )
    return [term for term in terms if term is not None]


def export(model: nn.Module, configs: dict, context: ExportContext) -> nn.Module:
    """Run the export phase: the eager deployable module, with `context.fmt`, notes and metrics set.

    A technique whose `export_yields_to` names an active technique is skipped, and the notes
    say so under "export_conflict".

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 2))
        >>> context = ExportContext(torch.device("cpu"), torch.randn(1, 8), DeployFormat(), {}, {})
        >>> deployable_module = export(model, techniques_from_choices({"quant_bits": 8}), context)
        >>> context.fmt, context.notes
        (DeployFormat(weight_bits=8, sparse=False, notes={}), {'quant_kernel': '2 DynamicQuantizedLinear (int8 matmul, ... engine)'})
    """
    for technique in phase_order("export"):
        cfg = configs[technique.key]
        winners = [key for key in technique.export_yields_to if configs[key].active]
        if cfg.active and winners:
            skipped = f"{cfg.label()} export skipped: {', '.join(configs[key].label() for key in winners)} export wins"
            context.notes["export_conflict"] = "; ".join(filter(None, [context.notes.get("export_conflict"), skipped]))
            continue
        model = technique.export(model, cfg, context)
    return model


discover()
