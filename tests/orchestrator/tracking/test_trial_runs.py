"""orchestrator.tracking.store and trial_runs: the sweep's parent run and the trial runs writer, on a real sqlite store."""

import pytest
import yaml
from mlflow.entities import Metric

from orchestrator.config.loading import parse_spec
from orchestrator.tracking import store, trial_runs
from orchestrator.tracking.tags import BASELINE_TAG, MODE_TAG, PARENT_TAG, SWEEP_TAG, TRIAL_ID_TAG

SPEC = {"name": "tracked", "data": {"source": "digits"}, "space": {"rank": {"choice": [None, 8]}}}


@pytest.fixture
def sweep_run(tmp_path, new_mlflow_store):
    client = store.connect(new_mlflow_store(tmp_path / "mlflow.db"))
    client.create_experiment("tracked", artifact_location=(tmp_path / "artifacts").as_uri())
    spec = parse_spec(SPEC)
    parent_id = store.start_sweep_run(client, spec, yaml.safe_dump(SPEC), str(tmp_path / "results"))
    return client, parent_id


def test_a_trial_run_is_created_once_as_a_child_of_the_sweep(sweep_run):
    client, parent_id = sweep_run
    runs = trial_runs.TrialRuns(client, parent_id, "tracked")
    runs.apply(("t0", "create", {"label": "baseline", "params": {"rank": None}}))
    runs.apply(("t0", "create", {"label": "baseline", "params": {"rank": None}}))
    run = client.get_run(runs.run_ids["t0"])
    assert run.data.tags[PARENT_TAG] == parent_id
    assert (run.data.tags[SWEEP_TAG], run.data.tags[TRIAL_ID_TAG]) == ("tracked", "t0")
    assert (run.data.tags[MODE_TAG], run.data.tags[BASELINE_TAG]) == ("baseline", "true")
    assert run.data.params == {"rank": "null"}
    assert run.info.run_name == "baseline-t0"
    assert len(client.search_runs([run.info.experiment_id], f"tags.{PARENT_TAG} = '{parent_id}'")) == 1


def test_epoch_steps_are_logged_once_even_after_a_restart(sweep_run):
    client, parent_id = sweep_run
    runs = trial_runs.TrialRuns(client, parent_id, "tracked")
    runs.apply(("t1", "create", {"label": "r8", "params": {"rank": 8}}))
    for step in (1, 2):
        runs.apply(("t1", "epoch_metrics", trial_runs.metrics_at_step({"val_accuracy": step / 10}, ["val_accuracy"], step)))
    # a resumed sweep: a new writer finds the run and the last logged step, and skips steps 1-2
    again = trial_runs.TrialRuns(client, parent_id, "tracked")
    again.apply(("t1", "create", {"label": "r8", "params": {"rank": 8}}))
    assert again.run_ids["t1"] == runs.run_ids["t1"]
    for step in (1, 2, 3):
        again.apply(("t1", "epoch_metrics", trial_runs.metrics_at_step({"val_accuracy": step / 10}, ["val_accuracy"], step)))
    history = client.get_metric_history(runs.run_ids["t1"], "val_accuracy")
    assert sorted(metric.step for metric in history) == [1, 2, 3]


def test_artifacts_are_logged_under_model_and_the_staged_copy_removed(sweep_run, tmp_path):
    client, parent_id = sweep_run
    runs = trial_runs.TrialRuns(client, parent_id, "tracked")
    runs.apply(("t2", "create", {"label": "r8", "params": {"rank": 8}}))
    staged = tmp_path / "staged"
    staged.mkdir()
    (staged / "trained.pt").write_bytes(b"weights")
    runs.apply(("t2", "artifacts", str(staged)))
    runs.apply(("t2", "terminate", "FINISHED"))
    run_id = runs.run_ids["t2"]
    assert [artifact.path for artifact in client.list_artifacts(run_id, "model")] == ["model/trained.pt"]
    assert not staged.exists()
    assert client.get_run(run_id).info.status == "FINISHED"


def test_an_unknown_write_is_refused(sweep_run):
    client, parent_id = sweep_run
    runs = trial_runs.TrialRuns(client, parent_id, "tracked")
    runs.apply(("t3", "create", {"label": "r8", "params": {}}))
    with pytest.raises(ValueError, match="unknown write kind 'launch'"):
        runs.apply(("t3", "launch", None))


def test_metrics_at_step_keeps_numbers_only():
    metrics = trial_runs.metrics_at_step({"a": 1, "b": "text", "c": None, "d": 2.5}, ["a", "b", "c", "d", "e"], 4)
    assert [(m.key, m.value, m.step) for m in metrics] == [("a", 1.0, 4), ("d", 2.5, 4)]
    assert all(isinstance(m, Metric) for m in metrics)
