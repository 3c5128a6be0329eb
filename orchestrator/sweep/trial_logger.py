"""The Ray Tune callback that mirrors every trial of a sweep into its own nested MLflow run.

It turns Tune's trial events into writes (`tracking.trial_runs.TrialRuns` entries) and sends them through an
`Outbox`, so a tracking server outage delays writes instead of losing them; the outbox and the
trials already logged as ended are part of Tune's saved experiment state, so `accelsweep resume`
delivers what a killed driver could not.
"""

import logging
import os
import shutil
import time

from mlflow.tracking import MlflowClient
from ray import tune

from orchestrator.config.recipe import trial_label
from orchestrator.config.schema import Spec
from orchestrator.sweep.trial_driver import checkpoint_dir_of
from orchestrator.tracking.outbox import Outbox
from orchestrator.tracking.tags import DIVERGED_EPOCH_TAG, ERROR_TAG, NODE_ID_TAG, NODE_IP_TAG, NOTE_TAG_PREFIX, STATUS_TAG
from orchestrator.tracking.trial_runs import TrialRuns, flatten, metrics_at_step
from trainers.metrics import EPOCH_METRICS, FINAL_METRICS

logger = logging.getLogger(__name__)


class TrialLogger(tune.Callback):
    """A Ray Tune callback that logs every trial into its own child run of the sweep's parent run.

    Per-epoch metrics are logged with their epoch as the step (each step once, even when a
    trial is retried or the sweep resumed); the final measurements, notes, and the model files
    follow when the trial ends. Model files wait in `staging_dir` until delivered.

    Args:
        uri: the tracking URI.
        parent_id: the sweep's parent run id.
        spec: the sweep's spec.
        staging_dir: where model files wait for delivery (inside the sweep's results folder).

    Example:
        >>> tune.RunConfig(callbacks=[TrialLogger(uri, parent_id, spec, "/tmp/sweep/outbox")])  # doctest: +SKIP
    """

    RETRY_SECONDS = 5.0
    FINAL_FLUSH_SECONDS = 120.0

    def __init__(self, uri: str, parent_id: str, spec: Spec, staging_dir: str):
        self.uri = uri
        self.parent_id = parent_id
        self.spec = spec
        self.staging_dir = staging_dir
        self.completed: set[str] = set()
        self._start_session([])

    def __getstate__(self):
        kept = ("uri", "parent_id", "spec", "staging_dir", "completed")
        return {key: self.__dict__[key] for key in kept} | {"pending": list(self.outbox.pending)}

    def __setstate__(self, state):
        pending = state.pop("pending")
        self.__dict__.update(state)
        self._start_session(pending)

    def get_state(self) -> dict:
        """What Tune saves with its experiment state (every few seconds): the undelivered writes
        and the trials already logged as ended."""
        return {"outbox": list(self.outbox.pending), "completed": sorted(self.completed)}

    def set_state(self, state: dict) -> None:
        """Take back `get_state`'s output when Tune restores a sweep (`accelsweep resume`)."""
        self._start_session(state["outbox"])
        self.completed = set(state["completed"])

    def _start_session(self, pending):
        self.runs = TrialRuns(MlflowClient(tracking_uri=self.uri), self.parent_id, self.spec.name)
        self.outbox = Outbox(self.runs.apply, self.RETRY_SECONDS, pending, f"MLflow at {self.uri}")
        self.started: dict[str, float] = {}

    def on_trial_start(self, iteration, trials, trial, **info):
        self.started[trial.trial_id] = time.monotonic()
        label = trial_label(self.spec, trial.config)
        self.outbox.send((trial.trial_id, "create", {"label": label, "params": flatten(trial.config)}))

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", 0))
        self.outbox.send((trial.trial_id, "epoch_metrics", metrics_at_step(result, EPOCH_METRICS, step)))

    def on_trial_complete(self, iteration, trials, trial, **info):
        result = trial.last_result
        metrics = metrics_at_step(result, FINAL_METRICS, int(result.get("epoch", 0)))
        wall = time.monotonic() - self.started.pop(trial.trial_id, time.monotonic())
        metrics += metrics_at_step({"trial_seconds": wall}, ("trial_seconds",), 0)
        self.outbox.send((trial.trial_id, "metrics", metrics))
        self.outbox.send((trial.trial_id, "tags", ended_tags(result)))
        if not result.get("diverged"):
            with checkpoint_dir_of(result, trial.checkpoint) as checkpoint_dir:
                if checkpoint_dir:
                    staged = os.path.join(self.staging_dir, trial.trial_id)
                    shutil.copytree(checkpoint_dir, staged, dirs_exist_ok=True)
                    self.outbox.send((trial.trial_id, "artifacts", staged))
        self.outbox.send((trial.trial_id, "terminate", "FAILED" if result.get("failure") else "FINISHED"))
        self.completed.add(trial.trial_id)

    def on_trial_error(self, iteration, trials, trial, **info):
        self.outbox.send((trial.trial_id, "tags", {STATUS_TAG: "error", ERROR_TAG: _error_text(trial)}))
        self.outbox.send((trial.trial_id, "terminate", "FAILED"))
        self.completed.add(trial.trial_id)

    def on_experiment_end(self, trials, **info):
        for trial in trials:  # ended while no driver was watching (a killed driver, then resume)
            if trial.status == "TERMINATED" and trial.trial_id not in self.completed and not self._logged_as_ended(trial):
                self.on_trial_start(0, trials, trial)
                self.on_trial_complete(0, trials, trial)
        self.outbox.drain(self.FINAL_FLUSH_SECONDS)

    def summary(self) -> str:
        """One line on what reached MLflow: everything, everything after a delay, or what is still waiting.

        Example:
            >>> logger.summary()  # doctest: +SKIP
            'MLflow: every write delivered'
        """
        if self.outbox.pending:
            return (
                f"MLflow: {len(self.outbox.pending)} writes could not be delivered to {self.uri}; they are kept "
                f"with the sweep's state: `accelsweep resume {self.spec.name}` delivers them"
            )
        if self.outbox.delayed_delivered:
            return f"MLflow: {self.outbox.delayed_delivered} writes were delayed by an outage and then delivered; nothing lost"
        return "MLflow: every write delivered"

    def _logged_as_ended(self, trial):
        # Tune's saved state can be a few seconds older than MLflow: ask MLflow too
        self.outbox.flush(force=True)
        try:
            run_id = self.runs.run_ids.get(trial.trial_id) or self.runs.existing_run(trial.trial_id)
            return run_id is not None and self.runs.client.get_run(run_id).info.status == "FINISHED"
        except Exception:  # unreachable: treat as not logged, the outbox will carry it
            return False


def ended_tags(result: dict) -> dict[str, str]:
    """The tags of a trial that ended: its status, its techniques' notes, where it ran.

    Args:
        result: the trial's last result.

    Example:
        >>> ended_tags({"test_accuracy": 0.9, "notes": {"mode": "r8"}})["accelsweep.status"]
        'finished'
    """
    tags = {f"{NOTE_TAG_PREFIX}{key}": str(value) for key, value in result.get("notes", {}).items()}
    tags[STATUS_TAG] = _ended_status(result)
    if result.get("failure"):
        tags[ERROR_TAG] = result["failure"][-400:]
    if result.get("diverged"):
        tags[DIVERGED_EPOCH_TAG] = str(int(result["diverged_epoch"]))
    tags[NODE_IP_TAG] = str(result.get("node_ip", ""))
    tags[NODE_ID_TAG] = str(result.get("node_id", ""))
    return tags


def _ended_status(result):
    if result.get("failure"):  # failed in a way a retry would repeat: not retried
        return "error"
    if result.get("diverged"):
        return "diverged"
    if "test_accuracy" not in result:  # ended before its last epoch: the scheduler (ASHA) stopped it
        return "stopped early"
    return "finished"


def _error_text(trial):
    try:
        with open(trial.error_file) as error_file:
            lines = error_file.read().strip().splitlines()
    except (OSError, TypeError):
        return "unknown error (see the Tune results folder)"
    return (lines[-1] if lines else "unknown error")[-400:]
