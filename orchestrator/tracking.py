"""MLflow: one parent run per sweep, one nested child run per trial.

Everything is logged from the sweep's driver process (a Ray Tune callback), never from training
workers: a trial's child run is created once, keyed by its Tune trial id, so neither retries nor
worker ranks can duplicate it, and only one process writes to the store.
"""

import json
import logging
import os
import shutil
import time

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
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
"""The experiment kind MLflow's UI opens as model training (runs, metrics), not as a GenAI project."""


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
    params = _flatten(spec.model_dump(exclude={"space", "tracking", "ray"}))
    params["space"] = json.dumps(spec.space)
    client.log_batch(run.info.run_id, params=[Param(k, _param_text(v)) for k, v in params.items()])
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
    runs = client.search_runs(experiments, filter_string=f"tags.`{RESULTS_PATH_TAG}` = '{results_path}'")
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
    trial is retried or the sweep resumed); the final measurements, notes, and the model files
    follow when the trial ends. Every write goes through an outbox: while the tracking server is
    unreachable, writes wait there (model files copied to `staging_dir`) and are retried, in
    order, every RETRY_SECONDS and at the end of the sweep. The outbox is part of Tune's saved
    experiment state, so `accelsweep resume` delivers what a killed driver could not.

    Args:
        uri: the tracking URI.
        parent_id: the sweep's parent run id.
        spec: the sweep's spec.
        staging_dir: where model files wait for delivery (inside the sweep's results folder).

    Example:
        >>> tune.RunConfig(callbacks=[TrialLogger(uri, parent_id, spec, "/tmp/sweep/outbox")])
    """

    RETRY_SECONDS = 5.0
    FINAL_FLUSH_SECONDS = 120.0

    def __init__(self, uri: str, parent_id: str, spec: Spec, staging_dir: str):
        self.uri = uri
        self.parent_id = parent_id
        self.spec = spec
        self.staging_dir = staging_dir
        self.outbox: list[tuple[str, str, object]] = []
        self.completed: set[str] = set()
        self._start_session()

    def __getstate__(self):
        kept = ("uri", "parent_id", "spec", "staging_dir", "outbox", "completed")
        return {key: self.__dict__[key] for key in kept}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._start_session()

    def get_state(self) -> dict:
        """What Tune saves with its experiment state (every few seconds): the undelivered writes
        and the trials already logged as ended."""
        return {"outbox": list(self.outbox), "completed": sorted(self.completed)}

    def set_state(self, state: dict) -> None:
        """Take back `get_state`'s output when Tune restores a sweep (`accelsweep resume`)."""
        self.outbox = list(state["outbox"])
        self.completed = set(state["completed"])

    def _start_session(self):
        self.client = MlflowClient(tracking_uri=self.uri)
        self.run_ids: dict[str, str] = {}
        self.last_step: dict[str, int] = {}
        self.started: dict[str, float] = {}
        self.unreachable_since: float | None = None
        self.next_attempt = 0.0
        self.delayed_delivered = 0

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.monotonic()
        mode = trial_mode(self.spec, trial.config)
        self._send(trial.trial_id, "create", {"mode": mode, "params": _flatten(trial.config)})

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", 0))
        self._send(trial.trial_id, "epoch_metrics", _metrics(result, EPOCH_METRICS, step))

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result
        metrics = _metrics(result, FINAL_METRICS, int(result.get("epoch", 0)))
        wall = time.monotonic() - self.started.pop(trial.trial_id, time.monotonic())
        metrics += _metrics({"trial_seconds": wall}, ("trial_seconds",), 0)
        tags = {f"accelsweep.note.{k}": str(v) for k, v in result.get("notes", {}).items()}
        tags[STATUS_TAG] = _ended_status(result)
        if result.get("diverged"):
            tags["accelsweep.diverged_epoch"] = str(int(result["diverged_epoch"]))
        tags["accelsweep.node_ip"] = str(result.get("node_ip", ""))
        tags["accelsweep.node_id"] = str(result.get("node_id", ""))
        self._send(trial.trial_id, "metrics", metrics)
        self._send(trial.trial_id, "tags", tags)
        if not result.get("diverged"):
            with checkpoint_dir_of(result, trial.checkpoint) as checkpoint_dir:
                if checkpoint_dir:
                    staged = os.path.join(self.staging_dir, trial.trial_id)
                    shutil.copytree(checkpoint_dir, staged, dirs_exist_ok=True)
                    self._send(trial.trial_id, "artifacts", staged)
        self._send(trial.trial_id, "terminate", "FINISHED")
        self.completed.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._send(trial.trial_id, "tags", {STATUS_TAG: "error", "accelsweep.error": _error_text(trial)})
        self._send(trial.trial_id, "terminate", "FAILED")
        self.completed.add(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        for trial in trials:  # ended while no driver was watching (a killed driver, then resume)
            if trial.status == "TERMINATED" and trial.trial_id not in self.completed and not self._logged_as_ended(trial):
                self.on_trial_start(0, trials, trial)
                self.on_trial_complete(0, trials, trial)
        deadline = time.monotonic() + self.FINAL_FLUSH_SECONDS
        while self.outbox and time.monotonic() < deadline:
            self._flush(force=True)
            if self.outbox:
                time.sleep(self.RETRY_SECONDS)

    def summary(self) -> str:
        """One line on what reached MLflow: everything, everything after a delay, or what is still waiting.

        Example:
            >>> logger.summary()
            'MLflow: every write delivered'
        """
        if self.outbox:
            return (
                f"MLflow: {len(self.outbox)} writes could not be delivered to {self.uri}; they are kept "
                f"with the sweep's state: `accelsweep resume {self.spec.name}` delivers them"
            )
        if self.delayed_delivered:
            return f"MLflow: {self.delayed_delivered} writes were delayed by an outage and then delivered; nothing lost"
        return "MLflow: every write delivered"

    def _send(self, trial_id, kind, payload):
        self.outbox.append((trial_id, kind, payload))
        self._flush()

    def _flush(self, force=False):
        if self.unreachable_since is not None and not force and time.monotonic() < self.next_attempt:
            return
        while self.outbox:
            try:
                self._apply(*self.outbox[0])
            except Exception as error:  # MLflow raises many kinds when its server is away
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    logger.warning("MLflow at %s unreachable (%s): keeping writes, retrying", self.uri, error)
                self.next_attempt = time.monotonic() + self.RETRY_SECONDS
                return
            self.outbox.pop(0)
            if self.unreachable_since is not None:
                self.delayed_delivered += 1
        if self.unreachable_since is not None:
            logger.warning("MLflow reachable again after %.0fs: delayed writes delivered", time.monotonic() - self.unreachable_since)
            self.unreachable_since = None

    def _apply(self, trial_id, kind, payload):
        if kind == "create":
            if trial_id not in self.run_ids:
                self.run_ids[trial_id] = self._existing_run(trial_id) or self._create_run(trial_id, **payload)
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

    def _logged_as_ended(self, trial):
        # Tune's saved state can be a few seconds older than MLflow: ask MLflow too
        self._flush(force=True)
        try:
            run_id = self.run_ids.get(trial.trial_id) or self._existing_run(trial.trial_id)
            return run_id is not None and self.client.get_run(run_id).info.status == "FINISHED"
        except Exception:  # unreachable: treat as not logged, the outbox will carry it
            return False

    def _existing_run(self, trial_id):
        experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        existing = self.client.search_runs(
            [experiment_id],
            filter_string=f"tags.{PARENT_TAG} = '{self.parent_id}' and tags.`{TRIAL_ID_TAG}` = '{trial_id}'",
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
                SWEEP_TAG: self.spec.name,
                KIND_TAG: "trial",
                TRIAL_ID_TAG: trial_id,
                MODE_TAG: mode,
                BASELINE_TAG: str(mode == "baseline").lower(),
            },
        )
        self.client.log_batch(run.info.run_id, params=[Param(k, _param_text(v)) for k, v in params.items()])
        return run.info.run_id


def _ended_status(result):
    if result.get("diverged"):
        return "diverged"
    if "test_accuracy" not in result:  # ended before its last epoch: the scheduler (ASHA) stopped it
        return "stopped early"
    return "finished"


def _metrics(values, keys, step):
    now = int(time.time() * 1000)
    return [Metric(key, float(values[key]), now, step) for key in keys if isinstance(values.get(key), (int, float))]


def _error_text(trial):
    try:
        with open(trial.error_file) as error_file:
            lines = error_file.read().strip().splitlines()
    except (OSError, TypeError):
        return "unknown error (see the Tune results folder)"
    return (lines[-1] if lines else "unknown error")[-400:]


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
