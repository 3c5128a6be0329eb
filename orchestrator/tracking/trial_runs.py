"""The trials' child runs: created once per Tune trial id, written in order, never duplicated."""

import shutil
import time

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from orchestrator.tracking.filters import quoted
from orchestrator.tracking.tags import BASELINE_TAG, KIND_TAG, MODE_TAG, PARENT_TAG, SWEEP_TAG, TRIAL_ID_TAG
from trainers.metrics import EPOCH_METRICS


class TrialRuns:
    """Writes trials into their child runs of one sweep: the outbox's delivery end.

    Each write is an entry (trial_id, kind, payload): "create" {"label", "params"} finds the
    trial's run (after a resume) or creates it; "epoch_metrics" logs only steps not logged yet;
    "metrics", "tags", "artifacts" (a staged directory, logged under model/ and then removed) and
    "terminate" (a run status) write what they say.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        sweep: the sweep's name.

    Example:
        >>> runs = TrialRuns(MlflowClient(uri), parent_id, "quickstart")  # doctest: +SKIP
        >>> runs.apply(("3a975_00000", "create", {"label": "baseline", "params": {"rank": None}}))  # doctest: +SKIP
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
            >>> runs.existing_run("3a975_00000")  # doctest: +SKIP
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

    def _create_run(self, trial_id, label, params):
        experiment_id = self.client.get_run(self.parent_id).info.experiment_id
        run = self.client.create_run(
            experiment_id,
            run_name=f"{label}-{trial_id}",
            tags={
                PARENT_TAG: self.parent_id,
                SWEEP_TAG: self.sweep,
                KIND_TAG: "trial",
                TRIAL_ID_TAG: trial_id,
                MODE_TAG: label,
                BASELINE_TAG: str(label == "baseline").lower(),
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
