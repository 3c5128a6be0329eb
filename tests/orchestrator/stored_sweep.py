"""Builders of a stored sweep for the tests, written by the project's own tracking code
(`TrialRuns`, `ended_tags`, the trial driver's checkpoint writer), so that a test's store has
the layout a real sweep leaves in MLflow."""

from mlflow.entities import Metric, Param

from orchestrator.config.recipe import recipe_for, trial_label
from orchestrator.sweep.trial_driver import write_checkpoint
from orchestrator.sweep.trial_logger import ended_tags
from orchestrator.tracking import trial_runs
from orchestrator.tracking.tags import KIND_TAG, STATUS_TAG, SWEEP_TAG
from trainers.loop import train_trial
from trainers.metrics import FINAL_METRICS

# (label, trial id, status, final metrics) of the sweep "demo" the report and UI tests store.
TRIALS = [
    ("q16", "t2", "finished", {"test_accuracy": 0.85, "latency_ms": 2.5, "size_bytes": 3000.0}),
    ("r8-q8", "t1", "finished", {"test_accuracy": 0.88, "latency_ms": 1.0, "size_bytes": 1000.0}),
    ("baseline", "t0", "finished", {"test_accuracy": 0.90, "latency_ms": 2.0, "size_bytes": 4000.0}),
    ("sp90", "t3", "diverged", {"test_accuracy": 0.10, "latency_ms": 0.5, "size_bytes": 500.0}),
    ("q2", "t4", "error", {}),
]


def sweep_parent(client, experiment_id: str, name: str, start_time: int | None = None, params: dict | None = None) -> str:
    """A sweep's parent run as `store.start_sweep_run` tags it (without a spec); returns its id."""
    parent = client.create_run(experiment_id, start_time=start_time, run_name=name, tags={SWEEP_TAG: name, KIND_TAG: "sweep"})
    if params:
        client.log_batch(parent.info.run_id, params=[Param(key, value) for key, value in params.items()])
    return parent.info.run_id


def stored_trial(runs, trial_id: str, label: str, status: str = "finished", metrics: dict | None = None,
                 history: dict | None = None, params: dict | None = None) -> str:
    """One trial's child run with the given figures, as `TrialLogger` writes it; returns its id.

    `history` maps an epoch metric to its values, epoch 1 first; `metrics` are the final ones.
    """
    runs.apply((trial_id, "create", {"label": label, "params": params or {}}))
    epochs = max((len(values) for values in (history or {}).values()), default=0)
    for step in range(1, epochs + 1):
        at_step = {key: values[step - 1] for key, values in history.items() if len(values) >= step}
        runs.apply((trial_id, "epoch_metrics", [Metric(key, value, 0, step) for key, value in at_step.items()]))
    runs.apply((trial_id, "metrics", [Metric(key, float(value), 0, epochs) for key, value in (metrics or {}).items()]))
    runs.apply((trial_id, "tags", {STATUS_TAG: status}))
    runs.apply((trial_id, "terminate", "FAILED" if status == "error" else "FINISHED"))
    return runs.run_ids[trial_id]


def trained_trial(runs, spec, data, trial_id: str, choices: dict, directory) -> str:
    """Train one trial for real and store it as the trial driver and `TrialLogger` do; returns its run id."""
    saved, notes = {}, {}

    def report(metrics, checkpoint):
        notes.update(metrics.get("notes", {}))
        saved.update(checkpoint or {})

    final = train_trial(recipe_for(spec, choices), data, report)
    directory.mkdir()
    write_checkpoint(saved, str(directory))
    runs.apply((trial_id, "create", {"label": trial_label(spec, choices), "params": trial_runs.flatten(choices)}))
    runs.apply((trial_id, "metrics", trial_runs.metrics_at_step(final, FINAL_METRICS, spec.train.epochs)))
    runs.apply((trial_id, "tags", ended_tags(final | {"notes": notes})))
    runs.apply((trial_id, "artifacts", str(directory)))
    runs.apply((trial_id, "terminate", "FINISHED"))
    return runs.run_ids[trial_id]


def create_sweep(client, experiment_id, name, trials, start_time):
    """A sweep of `trials` ((label, trial id, status, final metrics)) started at `start_time`."""
    parent_id = sweep_parent(client, experiment_id, name, start_time)
    runs = trial_runs.TrialRuns(client, parent_id, name)
    for label, trial_id, status, metrics in trials:
        stored_trial(runs, trial_id, label, status, metrics)
    return parent_id
