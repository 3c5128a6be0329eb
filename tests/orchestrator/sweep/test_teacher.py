"""A real sweep whose trials distill from its own baseline, with trials that fail in a way a retry
would repeat: the distilling trial waits for the baseline's weights and trains against them; the
failing ones end at once, are not retried, say one line each and are tagged in MLflow."""

import pytest
from ray.tune import ExperimentAnalysis

from orchestrator.tracking.tags import ERROR_TAG, MODE_TAG, NOTE_TAG_PREFIX, STATUS_TAG
from tests.orchestrator.conftest import run_sweep

SPEC = """\
name: it-teacher
data: {source: digits}
model: {kind: mlp, hidden: [32]}
train: {epochs: 2, batch_size: 64, seed: 1}
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
def test_a_distilling_trial_learns_from_the_sweeps_own_baseline(sweep):
    completed, trials, _ = sweep
    assert set(trials) == {"baseline", "kd0.5-sp50", "sp50", "sp50-cp50", "kd0.5-sp50-cp50"}, completed.stderr[-3000:]
    student = trials["kd0.5-sp50"]
    assert student.data.tags[STATUS_TAG] == "finished", student.data.tags
    assert student.data.tags[f"{NOTE_TAG_PREFIX}teacher"].endswith("teacher.pt")
    assert student.data.metrics["test_accuracy"] > 0.5


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
