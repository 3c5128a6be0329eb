"""A real sweep whose trials start from its own baseline's weights and distill from it, with trials
that fail in a way a retry would repeat: every trial with a technique waits for the baseline's
weights, starts from them, and the distilling one also trains against them; the failing ones end
at once, are not retried, say one line each and are tagged in MLflow. And the store those weights
wait in, on a real local Ray, when the baseline ends without any."""

import pytest
import ray
from ray.tune import ExperimentAnalysis

from orchestrator.config.loading import parse_spec
from orchestrator.sweep.baseline_weights import (
    BASELINE_WEIGHTS_FILE,
    NoBaselineWeights,
    baseline_weights_fields,
    start_store,
    sweep_needs_baseline_weights,
    wait_for_baseline_weights,
)
from orchestrator.tracking.tags import ERROR_TAG, MODE_TAG, NOTE_TAG_PREFIX, STATUS_TAG
from tests.orchestrator.conftest import run_sweep, started_local_ray

SPEC = """\
name: it-teacher
data: {source: digits}
model: {kind: mlp, hidden: [32]}
train: {epochs: 2, batch_size: 64, seed: 1, start_from: baseline}
space:
  distill: {grid: [0.0, 0.5]}
  channel_sparsity: {grid: [0.0, 0.5]}
  sparsity: 0.5          # with channel_sparsity 0.5: refused by the technique, before training
search: {algorithm: grid, num_samples: 1, metric: val_accuracy, mode: max}
resources: {workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 2, max_failures: 2}
deploy: {runtimes: [onnxruntime], rounds: 3}
"""


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    finished = run_sweep(SPEC, tmp_path_factory.mktemp("teacher"), "it-teacher", expect_code=None)
    trials = {run.data.tags[MODE_TAG]: run for run in finished.children}
    return finished.completed, trials, finished.workdir


@pytest.mark.slow
def test_trials_start_from_the_sweeps_own_baseline_and_a_distilling_one_learns_from_it(sweep):
    completed, trials, _ = sweep
    assert set(trials) == {"baseline", "kd0.5-sp50", "sp50", "sp50-cp50", "kd0.5-sp50-cp50"}, completed.stderr[-3000:]
    assert f"{NOTE_TAG_PREFIX}start_weights" not in trials["baseline"].data.tags  # it trains from scratch
    for label in ("sp50", "kd0.5-sp50"):
        run = trials[label]
        assert run.data.tags[STATUS_TAG] == "finished", run.data.tags
        assert run.data.tags[f"{NOTE_TAG_PREFIX}start_weights"].endswith(BASELINE_WEIGHTS_FILE)
        assert run.data.metrics["test_accuracy"] > 0.5
        assert run.data.metrics["latency_ms"] > 0  # the quiet phase rebuilt it from its checkpoint alone
    assert trials["kd0.5-sp50"].data.tags[f"{NOTE_TAG_PREFIX}teacher"].endswith(BASELINE_WEIGHTS_FILE)


@pytest.mark.slow
def test_a_failure_a_retry_would_repeat_fails_once_with_one_line_and_its_reason_tagged(sweep):
    completed, trials, workdir = sweep
    assert completed.returncode == 1, completed.stderr[-3000:]  # a trial failed: the sweep says so
    for label in ("sp50-cp50", "kd0.5-sp50-cp50"):
        run = trials[label]
        assert run.info.status == "FAILED" and run.data.tags[STATUS_TAG] == "error"
        assert "sweep channel_sparsity and sparsity in separate trials" in run.data.tags[ERROR_TAG]
        lines = [line for line in completed.stderr.splitlines() if f" {label} failed: " in line]
        assert len(lines) == 1 and "(tagged in MLflow)" in lines[0], completed.stderr[-3000:]
    assert "Traceback" not in completed.stderr
    (results,) = (workdir / "accelsweep_results").iterdir()
    attempts = {trial.trial_id: trial.num_failures for trial in ExperimentAnalysis(str(results)).trials}
    assert len(attempts) == 5 and set(attempts.values()) == {0}  # max_failures 2, yet nothing was retried


def _spec(**train):
    return parse_spec({"name": "t", "data": {"source": "digits"}, "train": train, "space": {"distill": 0.5}})


def test_a_spec_with_its_own_teacher_still_needs_the_baseline_to_start_from():
    spec = _spec()
    assert sweep_needs_baseline_weights(spec) and baseline_weights_fields(spec, {"distill": 0.5}) == ("teacher_path",)
    spec = _spec(teacher_path="teacher/trained.pt")
    assert not sweep_needs_baseline_weights(spec) and baseline_weights_fields(spec, {"distill": 0.5}) == ()
    spec = _spec(teacher_path="teacher/trained.pt", start_from="baseline")  # its own teacher, the baseline to start from
    assert sweep_needs_baseline_weights(spec)
    assert baseline_weights_fields(spec, {"distill": 0.5}) == ("start_weights_path",)
    assert baseline_weights_fields(spec, {"workers": 2}) == ()  # no technique: from scratch, as the baseline


@pytest.fixture
def local_ray():
    with started_local_ray(1):
        yield


@pytest.mark.slow
def test_a_trial_waiting_for_a_baseline_that_ended_without_weights_learns_why_in_one_line(local_ray, tmp_path):
    finished, failed = str(tmp_path / "finished-20261202-031500"), str(tmp_path / "failed-20261202-031500")
    stores = start_store(finished), start_store(failed)  # held, as the sweep holds its store
    ray.get(stores[0].put.remote(b"trained.pt bytes"))
    assert wait_for_baseline_weights(finished, ("start_weights_path",)) == b"trained.pt bytes"
    ray.get(stores[1].fail.remote("the baseline trial diverged"))
    ray.get(stores[1].fail.remote("the baseline trial failed"))  # the first reason stands
    with pytest.raises(NoBaselineWeights) as no_weights:
        wait_for_baseline_weights(failed, ("teacher_path", "start_weights_path"))
    assert str(no_weights.value) == "the baseline trial diverged, so there are no weights to distill from or start from"
