"""MLflow: one parent run per sweep, one nested child run per trial.

Everything is logged from the sweep's driver process (`orchestrator.trial_logger`, a Ray Tune
callback, sends the writes here through an outbox), never from training workers: a trial's child
run is created once, keyed by its Tune trial id, so neither retries nor worker ranks can duplicate
it, and only one process writes to the store. Nothing here imports torch or Ray.
"""

import json
import logging
import os
import shutil
import time

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from orchestrator.errors import UserError
from orchestrator.mlflow_filters import quoted
from orchestrator.spec import Spec
from orchestrator.tags import (
    BASELINE_TAG,
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING,
    KIND_TAG,
    MODE_TAG,
    OPTUNA_FRONT_TAG,
    PARENT_TAG,
    RESULTS_PATH_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
)
from trainers.metrics import EPOCH_METRICS

logger = logging.getLogger(__name__)


class TrackingError(UserError):
    """The tracking store cannot be reached or written."""


def connect(uri: str, create: bool = True) -> MlflowClient:
    """A client for the tracking store at `uri`, checked by a real read.

    Args:
        uri: an MLflow tracking URI (sqlite:///file.db, http://host:5000, a directory).
        create: whether a missing local sqlite file may be created (False: reading only).

    Returns:
        The client.

    Raises:
        TrackingError: the store cannot be reached.

    Example:
        >>> client = connect("sqlite:///mlflow.db")
    """
    if not create and uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
        raise TrackingError(f"no MLflow store at {uri!r} (set --uri or MLFLOW_TRACKING_URI)")
    # a server that is down should be noticed in seconds (the sweep buffers writes), not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many kinds: connection, SQL, permissions
        raise TrackingError(f"cannot reach the MLflow tracking store {uri!r}: {error}") from None
    return client


def start_sweep_run(client: MlflowClient, spec: Spec, spec_text: str, results_path: str) -> str:
    """Create the sweep's parent run, with the spec's settings as params and the spec as a file.

    Args:
        client: the tracking client.
        spec: the validated spec.
        spec_text: the spec file's text, stored as the artifact `spec.yaml`.
        results_path: where Ray Tune keeps this sweep's state (for `accelsweep resume`).

    Returns:
        The parent run's id.

    Example:
        >>> parent_id = start_sweep_run(client, spec, Path(path).read_text(), "/tmp/results")
    """
    experiment = client.get_experiment_by_name(spec.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(spec.experiment)
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    run = client.create_run(
        experiment_id,
        run_name=spec.name,
        tags={SWEEP_TAG: spec.name, KIND_TAG: "sweep", RESULTS_PATH_TAG: results_path},
    )
    params = flatten(spec.model_dump(exclude={"space", "tracking", "ray"}))
    params["space"] = json.dumps(spec.space)
    client.log_batch(run.info.run_id, params=[Param(k, param_text(v)) for k, v in params.items()])
    client.log_text(run.info.run_id, spec_text, "spec.yaml")
    return run.info.run_id


def find_sweep_by_results_path(client: MlflowClient, results_path: str):
    """The parent run of the sweep whose Tune state is in `results_path`.

    Raises:
        TrackingError: no sweep in this store has that results path.

    Example:
        >>> find_sweep_by_results_path(client, "/tmp/accelsweep_results/quickstart-20261128-015123")
    """
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{RESULTS_PATH_TAG}` = {quoted(results_path)}")
    if not runs:
        raise TrackingError(f"no sweep in {client.tracking_uri} has its results in {results_path}")
    return runs[0]


def finish_sweep_run(client: MlflowClient, parent_id: str, status: str = "FINISHED") -> None:
    """Mark the sweep's parent run as ended.

    Args:
        client: the tracking client.
        parent_id: the parent run's id.
        status: "FINISHED", "FAILED" or "KILLED".

    Example:
        >>> finish_sweep_run(client, parent_id)
    """
    client.set_terminated(parent_id, status=status)


def log_search_front(
    client: MlflowClient, parent_id: str, rows: list[dict], search_front: list[str] | None, objectives: list
) -> None:
    """Record a multi-objective search's own Pareto front, and whether it is the front the report
    computes over the same objectives and figures (the search saw provisional latencies, so the
    report's own front, over quiet ones, may rightly differ).

    Logs `optuna_pareto_front.json` and the tag `accelsweep.optuna_front_matches` ("true"/"false");
    does nothing when `search_front` is None (single-objective, random or grid search).

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        rows: the report's rows (`report.sweep_rows`).
        search_front: trial ids on the search algorithm's front (`sweep.optuna_front`).
        objectives: the (metric, "max" | "min") pairs the search optimised, as it saw them.

    Example:
        >>> log_search_front(client, parent_id, rows, sweep.optuna_front(search), [("test_accuracy", "max")])
    """
    from orchestrator.report import pareto_front

    if search_front is None:
        return
    client.log_text(parent_id, json.dumps(search_front), "optuna_pareto_front.json")
    report_front = sorted(rows[index]["trial_id"] for index in pareto_front(rows, objectives))
    matches = report_front == sorted(search_front)
    if not matches:
        logger.warning("Optuna's Pareto front %s differs from the report's %s", search_front, report_front)
    client.set_tag(parent_id, OPTUNA_FRONT_TAG, str(matches).lower())


class TrialRuns:
    """Writes trials into their child runs of one sweep: the outbox's delivery end.

    Each write is an entry (trial_id, kind, payload): "create" {"mode", "params"} finds the
    trial's run (after a resume) or creates it; "epoch_metrics" logs only steps not logged yet;
    "metrics", "tags", "artifacts" (a staged directory, logged under model/ and then removed) and
    "terminate" (a run status) write what they say.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        sweep: the sweep's name.

    Example:
        >>> runs = TrialRuns(MlflowClient(uri), parent_id, "quickstart")
        >>> runs.apply(("3a975_00000", "create", {"mode": "baseline", "params": {"rank": None}}))
    """

    def __init__(self, client: MlflowClient, parent_id: str, sweep: str):
        self.client = client
        self.parent_id = parent_id
        self.sweep = sweep
        self.run_ids: dict[str, str] = {}
        self.last_step: dict[str, int] = {}

    def apply(self, entry: tuple[str, str, object]) -> None:
        """Write one entry to MLflow (raises when the store is unreachable: the outbox retries)."""
        trial_id, kind, payload = entry
        if kind == "create":
            if trial_id not in self.run_ids:
                self.run_ids[trial_id] = self.existing_run(trial_id) or self._create_run(trial_id, **payload)
            return
        run_id = self.run_ids[trial_id]
        if kind == "epoch_metrics":
            fresh = [metric for metric in payload if metric.step > self.last_step.get(trial_id, 0)]
            if fresh:
                self.client.log_batch(run_id, metrics=fresh)
                self.last_step[trial_id] = max(metric.step for metric in fresh)
        elif kind == "metrics":
            self.client.log_batch(run_id, metrics=payload)
        elif kind == "tags":
            self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in payload.items()])
        elif kind == "artifacts":
            self.client.log_artifacts(run_id, payload, "model")
            shutil.rmtree(payload, ignore_errors=True)
        elif kind == "terminate":
            self.client.set_terminated(run_id, status=payload)
        else:
            raise ValueError(f"unknown write kind {kind!r}")

    def existing_run(self, trial_id: str) -> str | None:
        """The trial's child run if it has one already (a resumed sweep), remembering its last epoch step.

        Example:
            >>> runs.existing_run("3a975_00000")
        """
        experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        existing = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.{PARENT_TAG} = {quoted(self.parent_id)} and tags.`{TRIAL_ID_TAG}` = {quoted(trial_id)}",
        )
        if not existing:
            return None
        run_id = existing[0].info.run_id
        history = self.client.get_metric_history(run_id, EPOCH_METRICS[0])
        self.last_step[trial_id] = max((metric.step for metric in history), default=0)
        return run_id

    def _create_run(self, trial_id, mode, params):
        experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        run = self.client.create_run(
            experiment_id,
            run_name=f"{mode}-{trial_id}",
            tags={
                PARENT_TAG: self.parent_id,
                SWEEP_TAG: self.sweep,
                KIND_TAG: "trial",
                TRIAL_ID_TAG: trial_id,
                MODE_TAG: mode,
                BASELINE_TAG: str(mode == "baseline").lower(),
            },
        )
        self.client.log_batch(run.info.run_id, params=[Param(k, param_text(v)) for k, v in params.items()])
        return run.info.run_id


def metrics_at_step(values: dict, keys, step: int) -> list[Metric]:
    """MLflow metrics for the numeric `values` among `keys`, all at `step`.

    Example:
        >>> metrics_at_step({"val_accuracy": 0.9, "epoch": 1}, ["val_accuracy"], 1)[0].value
        0.9
    """
    now = int(time.time() * 1000)
    return [Metric(key, float(values[key]), now, step) for key in keys if isinstance(values.get(key), (int, float))]


def flatten(tree: dict, prefix: str = "") -> dict:
    """Nested mappings as one level of dotted keys (empty mappings stay as values).

    Example:
        >>> flatten({"train": {"lr": 0.1}, "space": {}})
        {'train.lr': 0.1, 'space': {}}
    """
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def param_text(value: object) -> str:
    """How a param value is stored in MLflow: None as "null", everything else as str().

    Example:
        >>> param_text(None), param_text(8)
        ('null', '8')
    """
    return "null" if value is None else str(value)
