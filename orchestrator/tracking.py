"""MLflow: one parent run per sweep, one nested child run per trial.

Everything is logged from the sweep's driver process (a Ray Tune callback), never from training
workers: a trial's child run is created once, keyed by its Tune trial id, so neither retries nor
worker ranks can duplicate it, and only one process writes to the store.
"""

import json
import logging
import os
import time

import mlflow
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.errors import UserError
from orchestrator.spec import Spec
from orchestrator.trial import checkpoint_dir_of, trial_mode
from trainers.loop import EPOCH_METRICS, FINAL_METRICS

logger = logging.getLogger(__name__)

SWEEP_TAG = "accelsweep.sweep"
KIND_TAG = "accelsweep.kind"
TRIAL_ID_TAG = "accelsweep.trial_id"
MODE_TAG = "accelsweep.mode"
BASELINE_TAG = "accelsweep.baseline"
STATUS_TAG = "accelsweep.status"
RESULTS_PATH_TAG = "accelsweep.results_path"
PARENT_TAG = "mlflow.parentRunId"


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
    mlflow.set_tracking_uri(uri)
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
    run = client.create_run(
        experiment_id,
        run_name=spec.name,
        tags={SWEEP_TAG: spec.name, KIND_TAG: "sweep", RESULTS_PATH_TAG: results_path},
    )
    params = _flatten(spec.model_dump(exclude={"space", "tracking", "ray"}))
    params["space"] = json.dumps(spec.space)
    client.log_batch(run.info.run_id, params=[Param(k, _param_text(v)) for k, v in params.items()])
    client.log_text(run.info.run_id, spec_text, "spec.yaml")
    return run.info.run_id


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


def log_search_front(client: MlflowClient, parent_id: str, rows: list[dict], search_front: list[str] | None) -> None:
    """Record a multi-objective search's own Pareto front next to the report's, and whether they agree.

    Logs `optuna_pareto_front.json` and the tag `accelsweep.optuna_front_matches` ("true"/"false");
    does nothing when `search_front` is None (single-objective, random or grid search).

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        rows: the report's rows (`report.sweep_rows`), front marked.
        search_front: trial ids on the search algorithm's front (`sweep.optuna_front`).

    Example:
        >>> log_search_front(client, parent_id, rows, sweep.optuna_front(search))
    """
    if search_front is None:
        return
    client.log_text(parent_id, json.dumps(search_front), "optuna_pareto_front.json")
    report_front = sorted(row["trial_id"] for row in rows if row["front"])
    matches = report_front == sorted(search_front)
    if not matches:
        logger.warning("Optuna's Pareto front %s differs from the report's %s", search_front, report_front)
    client.set_tag(parent_id, "accelsweep.optuna_front_matches", str(matches).lower())


class TrialLogger(tune.Callback):
    """A Ray Tune callback that mirrors every trial into its own nested MLflow run.

    Per-epoch metrics are logged with their epoch as the step (each step once, even when a
    trial is retried); the final measurements, notes, and the model files follow when the
    trial ends.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        spec: the sweep's spec.

    Example:
        >>> tune.RunConfig(callbacks=[TrialLogger(client, parent_id, spec)])
    """

    def __init__(self, client: MlflowClient, parent_id: str, spec: Spec):
        self.client = client
        self.parent_id = parent_id
        self.spec = spec
        self.experiment_id = client.get_run(parent_id).info.experiment_id
        self.run_ids: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.monotonic()
        self._run_for(trial)

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id = self._run_for(trial)
        step = int(result.get("epoch", 0))
        if step <= self.last_step.get(trial.trial_id, 0):
            return
        self.last_step[trial.trial_id] = step
        self._log_metrics(run_id, result, EPOCH_METRICS, step)

    def on_trial_complete(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        result = trial.last_result
        self._log_metrics(run_id, result, FINAL_METRICS, int(result.get("epoch", 0)))
        wall = {"trial_seconds": time.monotonic() - self.started.pop(trial.trial_id, time.monotonic())}
        self._log_metrics(run_id, wall, ("trial_seconds",), 0)
        tags = {f"accelsweep.note.{k}": str(v) for k, v in result.get("notes", {}).items()}
        tags[STATUS_TAG] = "diverged" if result.get("diverged") else "finished"
        tags["accelsweep.node_ip"] = str(result.get("node_ip", ""))
        tags["accelsweep.node_id"] = str(result.get("node_id", ""))
        self.client.log_batch(run_id, tags=[RunTag(k, v) for k, v in tags.items()])
        if not result.get("diverged"):
            with checkpoint_dir_of(result, trial.checkpoint) as checkpoint_dir:
                if checkpoint_dir:
                    self.client.log_artifacts(run_id, checkpoint_dir, "model")
        self.client.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self._run_for(trial)
        self.client.set_tag(run_id, STATUS_TAG, "error")
        self.client.set_terminated(run_id, status="FAILED")

    def _run_for(self, trial):
        if trial.trial_id in self.run_ids:
            return self.run_ids[trial.trial_id]
        existing = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.{PARENT_TAG} = '{self.parent_id}' and tags.`{TRIAL_ID_TAG}` = '{trial.trial_id}'",
        )
        if existing:
            run_id = existing[0].info.run_id
        else:
            run_id = self._create_run(trial)
        self.run_ids[trial.trial_id] = run_id
        return run_id

    def _create_run(self, trial):
        mode = trial_mode(self.spec, trial.config)
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"{mode}-{trial.trial_id}",
            tags={
                PARENT_TAG: self.parent_id,
                SWEEP_TAG: self.spec.name,
                KIND_TAG: "trial",
                TRIAL_ID_TAG: trial.trial_id,
                MODE_TAG: mode,
                BASELINE_TAG: str(mode == "baseline").lower(),
            },
        )
        params = [Param(k, _param_text(v)) for k, v in _flatten(trial.config).items()]
        self.client.log_batch(run.info.run_id, params=params)
        return run.info.run_id

    def _log_metrics(self, run_id, values, keys, step):
        now = int(time.time() * 1000)
        metrics = [
            Metric(key, float(values[key]), now, step)
            for key in keys
            if isinstance(values.get(key), (int, float))
        ]
        if metrics:
            self.client.log_batch(run_id, metrics=metrics)


def _flatten(tree, prefix=""):
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= _flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat


def _param_text(value):
    return "null" if value is None else str(value)
