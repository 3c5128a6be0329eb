"""Load and validate a sweep spec (YAML): every mistake is caught here, before anything runs.

A spec names the data, the model, the training settings, the acceleration choices to sweep
(`space`), the search, the resources, where results are tracked and which Ray to use. Unknown
keys, wrong types and impossible values raise `SpecError`, whose message names the file, the key
path and the value.
"""

import difflib
import importlib.util
import math
import os
import pkgutil
import reprlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from orchestrator.errors import UserError
from trainers.data import SOURCES  # numpy only: the techniques (torch) load when `space` values are checked
from trainers.metrics import EPOCH_OBJECTIVES, FRONT_METRICS, OBJECTIVES

SAMPLING_FORMS = ("choice", "grid", "uniform", "loguniform", "randint")
MAX_SPEC_BYTES = 1_000_000
"""A spec is a page of YAML; anything larger is refused before it is parsed."""
MAX_DEPTH = 32
"""How deeply a spec's values may nest (the spec itself needs 4 levels; model.options a few more)."""
MAX_EXPANDED_NODES = 100_000
"""How many values a spec may hold once YAML aliases are expanded (an alias bomb holds billions)."""
MAX_NAME_LENGTH = 100
"""Sweep names become folder and file names (Tune's trial folders add to them)."""


class SpecError(UserError):
    """A spec that cannot run; the message names the file, the key and the value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataSpec(_Section):
    source: str
    path: str | None = None
    label_column: str | None = None
    num_classes: int | None = Field(default=None, ge=2)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    text_features: int = Field(default=1024, ge=1)
    text_encoding: Literal["bag", "tokens"] = "bag"
    text_length: int = Field(default=64, ge=1)
    n_samples: int = Field(default=2000, ge=10)
    n_features: int = Field(default=32, ge=1)

    @field_validator("source")
    @classmethod
    def _known_source(cls, source):
        if source not in SOURCES:
            raise ValueError(f"unknown source{_did_you_mean(source, SOURCES)}; valid: {', '.join(SOURCES)}")
        return source


class ModelSpec(_Section):
    kind: str = "mlp"
    hidden: list[int] = Field(default=[64])
    channels: list[int] = Field(default=[16, 32])
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("hidden", "channels")
    @classmethod
    def _positive_widths(cls, widths):
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty list of integers >= 1, got {widths}")
        return widths


class TrainSpec(_Section):
    epochs: int = Field(default=5, ge=1)
    batch_size: int = Field(default=64, ge=1)
    optimizer: Literal["adamw", "adam", "sgd"] = "adamw"
    lr: float = Field(default=3e-3, gt=0)
    seed: int = Field(default=0, ge=0, lt=2**32)
    schedule: Literal["constant", "cosine", "onecycle"] = "constant"
    warmup_epochs: int = Field(default=0, ge=0)
    clip_norm: float | None = Field(default=None, gt=0)
    target_accuracy: float | None = Field(default=None, gt=0, le=1)

    @field_validator("warmup_epochs")
    @classmethod
    def _warmup_within_training(cls, warmup_epochs, info):
        epochs = info.data.get("epochs")  # absent when epochs itself is invalid (reported there)
        if epochs is not None and warmup_epochs >= epochs:
            raise ValueError(f"must be less than train.epochs ({epochs}), got {warmup_epochs}")
        return warmup_epochs


class SearchSpec(_Section):
    algorithm: Literal["random", "grid", "optuna"] = "random"
    num_samples: int = Field(default=8, ge=1)
    metric: str | list[str] = "val_accuracy"
    mode: Literal["max", "min"] | list[Literal["max", "min"]] = "max"
    scheduler: Literal["fifo", "asha"] = "fifo"
    grace_period: int = Field(default=1, ge=1)
    max_t: int | None = Field(default=None, ge=1)
    time_budget_s: float | None = Field(default=None, gt=0)

    @field_validator("metric")
    @classmethod
    def _known_metrics(cls, metric):
        for name in [metric] if isinstance(metric, str) else metric:
            if name in FRONT_METRICS and name not in OBJECTIVES:
                raise ValueError(
                    f"{name!r} is worked out by the report after the sweep, against the baseline, so a "
                    f"search cannot steer by it while trials run; search by one of {', '.join(OBJECTIVES)} "
                    f"and draw the front over {name} with: accelsweep report SWEEP --objectives test_accuracy,{name}"
                )
            if name not in OBJECTIVES:
                raise ValueError(f"unknown metric{_did_you_mean(name, OBJECTIVES)}; valid: {', '.join(OBJECTIVES)}")
        return metric

    @model_validator(mode="after")
    def _objectives(self):
        metrics, modes = self.metrics, self.modes
        if len(metrics) != len(modes):
            raise ValueError(f"{len(metrics)} metrics but {len(modes)} modes: give one mode per metric")
        if len(metrics) > 1 and self.algorithm != "optuna":
            raise ValueError("several metrics (multi-objective) need algorithm: optuna")
        if len(metrics) > 1 and self.scheduler == "asha":
            raise ValueError("scheduler asha stops trials on one metric: use fifo with several metrics")
        if self.scheduler == "asha" and metrics[0] not in EPOCH_OBJECTIVES:
            raise ValueError(f"scheduler asha needs a per-epoch metric, one of {EPOCH_OBJECTIVES}")
        return self

    @property
    def metrics(self) -> list[str]:
        return [self.metric] if isinstance(self.metric, str) else list(self.metric)

    @property
    def modes(self) -> list[str]:
        return [self.mode] if isinstance(self.mode, str) else list(self.mode)


class ResourcesSpec(_Section):
    workers_per_trial: int = Field(default=1, ge=1)
    cpus_per_worker: float = Field(default=1, gt=0)
    gpus_per_worker: float = Field(default=0, ge=0)
    max_concurrent_trials: int | None = Field(default=None, ge=1)
    max_failures: int = Field(default=2, ge=0)


def runtime_names() -> tuple[str, ...]:
    """The deployment runtimes `deploy.runtimes` may name: the modules of `trainers.runtimes`
    (each registers the runtime of its own name), found without importing torch.

    Example:
        >>> runtime_names()
        ('aotinductor', 'compile', 'eager', 'onnxruntime')
    """
    folder = importlib.util.find_spec("trainers.runtimes").submodule_search_locations
    return tuple(sorted(module.name for module in pkgutil.iter_modules(folder) if not module.name.startswith("_")))


class DeploySpec(_Section):
    runtimes: list[str] = Field(default=["onnxruntime", "eager"], min_length=1, max_length=8)
    batch_sizes: list[int] = Field(default=[1, 256], min_length=1, max_length=8)
    threads: int = Field(default=1, ge=1, le=1024)
    rounds: int = Field(default=7, ge=3, le=1000)
    max_abs_diff: float = Field(default=0.05, gt=0, le=1)

    @field_validator("runtimes")
    @classmethod
    def _known_runtimes(cls, runtimes):
        known = runtime_names()
        for name in runtimes:
            if name not in known:
                raise ValueError(f"unknown runtime{_did_you_mean(name, known)}; valid: {', '.join(known)}")
        if len(set(runtimes)) != len(runtimes):
            raise ValueError(f"each runtime once, got {runtimes}")
        return runtimes

    @field_validator("batch_sizes")
    @classmethod
    def _batch_sizes(cls, batch_sizes):
        if 1 not in batch_sizes or len(set(batch_sizes)) != len(batch_sizes) or not all(1 <= b <= 65536 for b in batch_sizes):
            raise ValueError(f"distinct sizes from 1 to 65536, including 1 (the report's latency), got {batch_sizes}")
        return sorted(batch_sizes)


class TrackingSpec(_Section):
    experiment: str | None = None
    uri: str | None = None


class RaySpec(_Section):
    address: str | None = None
    storage_path: str | None = None


class Spec(_Section):
    """A validated sweep spec. Build it with `load_spec` (from a file) or `parse_spec`."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=MAX_NAME_LENGTH)
    data: DataSpec
    model: ModelSpec = Field(default_factory=ModelSpec)
    train: TrainSpec = Field(default_factory=TrainSpec)
    space: dict[str, Any] = Field(default_factory=dict)
    search: SearchSpec = Field(default_factory=SearchSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    deploy: DeploySpec = Field(default_factory=DeploySpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    ray: RaySpec = Field(default_factory=RaySpec)

    @property
    def experiment(self) -> str:
        return self.tracking.experiment or self.name

    @property
    def tracking_uri(self) -> str:
        return tracking_uri(self.tracking.uri)

    @property
    def results_dir(self) -> str:
        path = self.ray.storage_path or "accelsweep_results"
        return path if "://" in path else os.path.abspath(path)


def tracking_uri(explicit: str | None = None) -> str:
    """The MLflow tracking URI: `explicit` if given, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db.

    Example:
        >>> tracking_uri("http://127.0.0.1:5000")
        'http://127.0.0.1:5000'
    """
    return explicit or os.environ.get("MLFLOW_TRACKING_URI") or "sqlite:///mlflow.db"


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a spec file.

    Args:
        path: the YAML file.

    Returns:
        The validated spec.

    Raises:
        SpecError: the file is missing, not YAML, or not a valid spec; the message names the
            file, the key path and the value.

    Example:
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> spec.search.num_samples
        8
    """
    path = Path(path)
    try:
        text = _read_spec_text(path)
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        raw = _parse_yaml(text)
    except yaml.MarkedYAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {_cut(' '.join(str(error).split()), 300)}") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: object, source: str = "<spec>") -> Spec:
    """Validate an already-parsed spec (a dict, as YAML gives it).

    Args:
        raw: the spec's content.
        source: the name used in messages (usually the file).

    Returns:
        The validated spec.

    Raises:
        SpecError: with one line per problem, each naming `source`, the key path and the value.

    Example:
        >>> parse_spec({"name": "t", "data": {"source": "digits"}}).train.epochs
        5
    """
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a mapping of keys (name, data, model, ...), got {_show(raw)}")
    too_deep = _nested_too_deep(raw)
    if too_deep:
        raise SpecError(f"{source}: {too_deep}: nested more than {MAX_DEPTH} levels deep")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as error:  # the space is checked once the rest is right: it loads torch
        problems = [_describe(problem) for problem in error.errors()]
    else:
        problems = _space_problems(spec.space, spec.search.algorithm) + _target_problems(spec)
    if problems:
        raise SpecError("\n".join(f"{source}: {problem}" for problem in problems))
    return spec


def load_data(spec: Spec, spec_path: str):
    """Load the spec's data set and build its baseline model once, so that a bad file, label or
    model factory fails before Ray starts.

    Args:
        spec: the validated spec.
        spec_path: the spec's file, named in messages.

    Returns:
        The loaded data set (a trainers.data.Dataset).

    Raises:
        SpecError: the data or the model cannot be loaded; the message names the spec file,
            the key and the cause.

    Example:
        >>> data = load_data(load_spec("search_spaces/quickstart.yaml"), "quickstart.yaml")
    """
    from trainers.data import DataError, load_dataset  # torch and sklearn: only when data is needed

    fields = spec.data.model_dump(exclude={"source", "path"})
    try:
        data = load_dataset(spec.data.source, spec.data.path, seed=spec.train.seed, **fields)
    except DataError as error:
        raise SpecError(f"{spec_path}: data: {error}") from None
    from trainers.models import ModelError, build_model

    try:
        build_model(
            spec.model.kind,
            data.input_shape,
            data.num_classes,
            hidden=spec.model.hidden,
            channels=spec.model.channels,
            options=spec.model.options,
        )
    except ModelError as error:
        raise SpecError(f"{spec_path}: {error.key}: {error}") from None
    return data


def domain_of(value: object) -> tuple[str, list]:
    """Split one `space` entry into its sampling form and values.

    Args:
        value: a fixed value, or a one-key mapping such as {"choice": [...]}.

    Returns:
        (form, values): form is "fixed" (values = [value]) or one of SAMPLING_FORMS.

    Example:
        >>> domain_of({"loguniform": [1e-5, 1e-2]})
        ('loguniform', [1e-05, 0.01])
    """
    if isinstance(value, dict):
        ((form, values),) = value.items()
        return form, list(values)
    return "fixed", [value]


def _target_problems(spec):
    if "time_to_target_s" not in spec.search.metrics or spec.train.target_accuracy is not None:
        return []
    return [
        "search.metric: time_to_target_s needs train.target_accuracy (e.g. 0.88): without it the target is "
        "the baseline's final accuracy minus a point, known only once the sweep is done; or draw the front "
        "afterwards: accelsweep report SWEEP --objectives test_accuracy,time_to_target_s"
    ]


def _space_problems(space, algorithm):
    if not space:
        return []
    from trainers.techniques import TECHNIQUES

    space_keys = (*TECHNIQUES, "workers")
    problems = []
    for key, value in space.items():
        where = f"space.{_cut(str(key))}"
        if key not in space_keys:
            problems.append(f"{where}: unknown key{_did_you_mean(str(key), space_keys)}; valid keys: {', '.join(space_keys)}")
            continue
        problem = _domain_problem(key, value, where)
        if problem is None:
            problem = _algorithm_problem(algorithm, key, value, where)
        if problem:
            problems.append(problem)
    return problems


def _domain_problem(key, value, where):
    if isinstance(value, dict):
        forms = ", ".join(SAMPLING_FORMS)
        if len(value) != 1:
            return f"{where}: give exactly one sampling form ({forms}), got {_cut(', '.join(map(str, value))) or 'none'}"
        if next(iter(value)) not in SAMPLING_FORMS:
            form = str(next(iter(value)))
            return f"{where}: unknown sampling form{_did_you_mean(form, SAMPLING_FORMS)}; use a fixed value or one of {forms}"
        form, values = next(iter(value.items()))
        where = f"{where}.{form}"
        if key == "workers" and form in ("uniform", "loguniform"):
            return f"{where}: workers are counted: use a fixed value, choice, grid or randint"
        if not isinstance(values, list) or not values:
            return f"{where}: expected a non-empty list, got {_show(values)}"
        if form in ("uniform", "loguniform", "randint"):
            return _range_problem(key, form, values, where)
        for index, item in enumerate(values):
            problem = _value_problem(key, item)
            if problem:
                return f"{where}[{index}]: {problem}"
        return None
    problem = _value_problem(key, value)
    return f"{where}: {problem}" if problem else None


def _range_problem(key, form, values, where):
    if len(values) != 2 or not all(_is_number(v) for v in values):
        return f"{where}: expected [low, high] numbers, got {_show(values)}"
    low, high = values
    if not low < high:
        return f"{where}: low must be below high, got {_show(values)}"
    if form == "loguniform" and low <= 0:
        return f"{where}: loguniform needs low > 0, got {_show(low)}"
    if form == "randint" and not all(isinstance(v, int) for v in values):
        return f"{where}: randint needs integers, got {_show(values)}"
    samples = range(low, high + 1) if form == "randint" and high - low <= 1000 else values
    for sample in samples:
        problem = _value_problem(key, sample)
        if problem:
            return f"{where}: the range admits {_show(sample)}, which is invalid: {problem}"
    return None


def _value_problem(key, value):
    from trainers.techniques import TECHNIQUES

    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {_show(value)}"
    if key == "workers":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"workers must be an integer >= 1, got {_show(value)}"
        return None
    try:
        TECHNIQUES[key](value)
    except (TypeError, ValueError, OverflowError) as error:
        return _cut(str(error))
    return None


def _algorithm_problem(algorithm, key, value, where):
    from trainers.techniques import TECHNIQUES, off_value

    form, values = domain_of(value)
    if algorithm == "grid" and form not in ("fixed", "choice", "grid"):
        return f"{where}: algorithm grid needs fixed values or lists (choice/grid), got {form}"
    if algorithm == "optuna" and form == "grid":
        return f"{where}: algorithm optuna samples, it does not enumerate: use choice instead of grid"
    if algorithm == "optuna" and form == "choice" and key in TECHNIQUES:
        off = off_value(key)
        if off not in values:
            return (
                f"{where}.choice: algorithm optuna runs the dense fp32 baseline as its first trial, "
                f"so the choices must include its value {_show(off).replace('None', 'null')}"
            )
    return None


def _describe(problem):
    location = _cut(".".join(str(part) for part in problem["loc"]))
    if problem["type"] == "extra_forbidden":
        *parent, key = problem["loc"]
        valid = _section_keys(parent)
        return f"{location}: unknown key{_did_you_mean(str(key), valid)}; valid keys: {', '.join(valid)}"
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "missing":
        return f"{location}: missing (required)"
    if "input" in problem and problem["type"] not in ("value_error",):
        message += f", got {_show(problem['input'])}"
    return f"{location}: {message}" if location else message


def _section_keys(parent):
    model = Spec
    for part in parent:
        model = model.model_fields[part].annotation
    return list(model.model_fields)


def _did_you_mean(word, candidates):
    close = difflib.get_close_matches(word[:100], list(candidates), n=1, cutoff=0.6)
    return f" {_show(word)} (did you mean {close[0]!r}?)" if close else f" {_show(word)}"


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value):
    return _cut(reprlib.repr(value) if isinstance(value, (dict, list)) else repr(value))


def _cut(text, limit=80):
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _read_spec_text(path):
    # stat, not open: a FIFO or a device would block or never end
    if path.is_dir() or (path.exists() and not path.is_file()):
        raise OSError(f"{path} is not a regular file")
    size = path.stat().st_size
    if size > MAX_SPEC_BYTES:
        raise OSError(f"{size:,} bytes is more than a spec's limit of {MAX_SPEC_BYTES:,}")
    return path.read_text(encoding="utf-8")


class _SpecLoader(yaml.SafeLoader):
    """YAML's safe loader, refusing duplicate keys and nesting too deep to be a spec."""

    def __init__(self, stream):
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent, index):
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.composer.ComposerError(None, None, f"nested more than {MAX_DEPTH} levels deep", mark)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1

    def construct_mapping(self, node, deep=False):
        seen = {}
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = (key_node.tag, key_node.value)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None,
                    f"duplicate key {_cut(repr(key_node.value))} (first on line {seen[key].line + 1}): "
                    f"YAML would keep only the last",
                    key_node.start_mark,
                )
            seen[key] = key_node.start_mark
        return super().construct_mapping(node, deep)


def _parse_yaml(text):
    loader = _SpecLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, {}, depth=0) > MAX_EXPANDED_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"its aliases expand to more than {MAX_EXPANDED_NODES:,} values", node.start_mark
            )
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _expanded_size(node, sizes, depth):
    # an alias is the same node object again: counting with a memo costs the number of distinct nodes;
    # a node that contains itself expands forever, which the placeholder makes "too many". Aliases
    # of aliases nest without the composer seeing it, so the depth is checked here too
    if depth > MAX_DEPTH:
        raise yaml.composer.ComposerError(None, None, f"its aliases nest more than {MAX_DEPTH} levels deep", node.start_mark)
    if id(node) not in sizes:
        sizes[id(node)] = MAX_EXPANDED_NODES + 1
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        else:
            children = node.value if isinstance(node, yaml.SequenceNode) else []
        sizes[id(node)] = 1 + sum(_expanded_size(child, sizes, depth + 1) for child in children)
    return sizes[id(node)]


def _yaml_problem(error):
    mark = error.problem_mark or error.context_mark
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    context = f" ({error.context})" if error.context and error.problem else ""
    return _cut(f"{where}{error.problem or error.context}{context}", 300)


def _nested_too_deep(raw):
    stack = [(raw, "", 0)]
    while stack:
        node, where, depth = stack.pop()
        if depth > MAX_DEPTH:
            return _cut(where or "the spec")
        items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
        for key, child in items:
            path = f"{where}[{key}]" if isinstance(node, list) else f"{where}.{key}" if where else str(key)
            stack.append((child, path, depth + 1))
    return None
