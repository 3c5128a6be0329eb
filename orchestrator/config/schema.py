"""The sweep spec's schema (pydantic): every section, its keys, types and limits.

A spec names the data, the model, the training settings, the acceleration choices to sweep
(`space`), the search, the resources, where results are tracked and which Ray to use. Unknown
keys, wrong types and impossible values raise `SpecError`, whose message names the file, the key
path and the value (`config.loading`).
"""

import difflib
import glob
import importlib.util
import math
import os
import pkgutil
import reprlib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from orchestrator.errors import UserError
from trainers.data import MAX_CLASSES, SOURCES, STREAMING_SOURCES  # numpy only: the techniques (torch) load when `space` values are checked
from trainers.metrics import EPOCH_OBJECTIVES, FRONT_METRICS, OBJECTIVES

SAMPLING_FORMS = ("choice", "grid", "uniform", "loguniform", "randint")
MAX_NAME_LENGTH = 100
"""Sweep names become folder and file names (Tune's trial folders add to them)."""


class SpecError(UserError):
    """A spec that cannot run; the message names the file, the key and the value."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class DataSpec(_Section):
    source: str
    path: str | None = None
    train_path: str | None = None
    val_path: str | None = None
    test_path: str | None = None
    label_column: str | None = None
    num_classes: int | None = Field(default=None, ge=2, le=MAX_CLASSES)
    val_fraction: float = Field(default=0.1, gt=0, lt=1)
    test_fraction: float = Field(default=0.2, gt=0, lt=1)
    text_features: int = Field(default=1024, ge=1)
    text_encoding: Literal["bag", "tokens"] = "bag"
    text_length: int = Field(default=64, ge=1)
    n_samples: int = Field(default=2000, ge=10)
    n_features: int = Field(default=32, ge=1)
    image_size: list[int] | None = None

    @field_validator("source")
    @classmethod
    def _known_source(cls, source):
        known = SOURCES + STREAMING_SOURCES
        if source not in known:
            raise ValueError(f"unknown source{_did_you_mean(source, known)}; valid: {', '.join(known)}")
        return source

    @field_validator("image_size")
    @classmethod
    def _height_and_width(cls, size):
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise ValueError(f"give [height, width], two integers >= 1, got {size}")
        return size

    @model_validator(mode="after")
    def _split_paths_stream(self):
        given = [key for key in ("train_path", "val_path", "test_path") if getattr(self, key)]
        if given and self.source not in (*STREAMING_SOURCES, "csv"):
            raise ValueError(f"{given[0]} is for the streaming sources ({', '.join(STREAMING_SOURCES)}, csv); use path")
        if self.image_size is not None and self.source != "images":
            raise ValueError(f"image_size is for source 'images', not {self.source!r}")
        return self

    @property
    def streams(self) -> bool:
        """Whether Ray Data streams this source during the sweep: parquet and images always, csv
        given a directory, a glob or split paths (a csv file loads whole, as before).

        Example:
            >>> DataSpec(source="csv", path="rows/*.csv").streams
            True
        """
        if self.source in STREAMING_SOURCES:
            return True
        paths = self.path is not None and (os.path.isdir(self.path) or glob.has_magic(self.path))
        return self.source == "csv" and (paths or self.train_path is not None)


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
    teacher_path: str | None = None
    start_from: Literal["scratch", "baseline"] = "scratch"

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


def _did_you_mean(word, candidates):
    close = _closest(word, candidates)
    return f" {_show(word)} (did you mean {close!r}?)" if close else f" {_show(word)}"


def _closest(word, candidates):
    close = difflib.get_close_matches(word[:100], list(candidates), n=1, cutoff=0.6)
    return close[0] if close else None


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _show(value):
    return _cut(reprlib.repr(value) if isinstance(value, (dict, list)) else repr(value))


def _cut(text, limit=80):
    return text if len(text) <= limit else text[: limit - 3] + "..."
