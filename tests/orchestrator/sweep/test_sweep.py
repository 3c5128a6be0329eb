"""A real sweep, end to end: `accelsweep run` on an embedded local Ray into a real sqlite MLflow
store, with 1-worker trials trained in-process and 2-worker trials trained by Ray Train (DDP): the
session's shared sweep (`finished_sweep`, tests/orchestrator/conftest.py), and sweeps of their own
for what only another spec shows (a multi-objective Optuna search, ASHA stopping trials)."""

import json
import os
import subprocess
import sys

import pytest

from orchestrator.config.loading import parse_spec
from orchestrator.results import front
from orchestrator.results import rows as results_rows
from orchestrator.sweep import search
from orchestrator.tracking.tags import MODE_TAG, NOTE_TAG_PREFIX, PARENT_TAG, SWEEP_TAG
from tests.orchestrator.conftest import run_sweep

FINAL_METRICS = (
    "test_accuracy",
    "test_loss",
    "latency_provisional_ms",
    "runtime_max_abs_diff",
    "param_count",
    "size_bytes",
    "train_samples_per_s",
    "epoch_seconds",
    "trial_seconds",
)
QUIET_METRICS = (
    "latency_ms",
    "latency_p95_ms",
    "latency_b256_ms",
    "latency_b256_p95_ms",
    "inference_samples_per_s",
    "speedup",
    "speedup_low",
    "speedup_high",
    "latency_onnxruntime_ms",
    "latency_onnxruntime_b256_ms",
    "latency_eager_ms",
    "latency_eager_b256_ms",
)


@pytest.mark.slow
def test_one_parent_run_and_one_child_per_trial(finished_sweep):
    _, completed, _, parents, children = finished_sweep
    assert len(parents) == 1
    assert len(children) == 5  # the baseline plus the 2 x 2 grid
    assert {child.data.tags[PARENT_TAG] for child in children} == {parents[0].info.run_id}
    modes = sorted(child.data.tags[MODE_TAG] for child in children)
    assert modes == sorted(["baseline", "q8-d0.1-psgd2", "q4-d0.1-psgd2", "q8-d0.1-psgd2-w2", "q4-d0.1-psgd2-w2"])
    assert len({child.data.tags["accelsweep.trial_id"] for child in children}) == 5
    assert parents[0].info.status == "FINISHED"
    assert "baseline" in completed.stdout and "Pareto front" in completed.stdout


@pytest.mark.slow
def test_every_trial_has_its_measurements_epochs_and_model(finished_sweep):
    _, _, client, _, children = finished_sweep
    for child in children:
        metrics = child.data.metrics
        missing = [key for key in FINAL_METRICS + QUIET_METRICS if key not in metrics]
        assert not missing, (child.data.tags[MODE_TAG], missing)
        assert metrics["latency_p95_ms"] >= metrics["latency_ms"] > 0
        assert metrics["latency_ms"] == metrics["latency_onnxruntime_ms"]  # the primary runtime's
        assert metrics["speedup_low"] <= metrics["speedup"] <= metrics["speedup_high"]
        assert 0.3 < metrics["test_accuracy"] <= 1
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "val_accuracy")]
        assert steps == [1, 2]
        artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "model")}
        assert artifacts == {"model/trained.pt", "model/model.onnx"}
        assert {a.path for a in client.list_artifacts(child.info.run_id, "bench")} == {f"bench/{child.data.tags['accelsweep.bench.host']}.json"}
        assert child.data.tags["accelsweep.runtime"] == "onnxruntime"
        assert child.data.tags["accelsweep.runtime.eager"] == "measured"
        assert child.info.status == "FINISHED"


@pytest.mark.slow
def test_the_stored_and_printed_spec_carry_no_credentials(finished_sweep, tmp_path):
    _, completed, client, parents, _ = finished_sweep
    stored = open(client.download_artifacts(parents[0].info.run_id, "spec.yaml", str(tmp_path))).read()
    assert "# mirror: https://***@mlflow.example.com" in stored and "s3cret" not in stored
    assert "s3cret" not in completed.stdout + completed.stderr


@pytest.mark.slow
def test_two_worker_trials_really_ran_ddp(finished_sweep):
    _, _, _, _, children = finished_sweep
    ddp = [child for child in children if child.data.tags[MODE_TAG].endswith("-w2")]
    assert len(ddp) == 2
    for child in ddp:
        assert child.data.metrics["world_size"] == 2
        assert child.data.metrics["ddp_ranks_trained"] == 2
        # different shards per rank, identical weights after training: gradients were averaged
        assert child.data.metrics["ddp_replica_checksum_spread"] == 0


@pytest.mark.slow
def test_smaller_bits_store_smaller_models(finished_sweep):
    _, _, _, _, children = finished_sweep
    size = {child.data.tags[MODE_TAG]: child.data.metrics["size_bytes"] for child in children}
    assert size["q4-d0.1-psgd2"] < size["q8-d0.1-psgd2"] < size["baseline"]


@pytest.mark.slow
def test_report_reads_the_sweep_back_from_mlflow(finished_sweep):
    workdir, _, _, parents, _ = finished_sweep
    env = {name: value for name, value in os.environ.items() if name != "MLFLOW_TRACKING_URI"}
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "report", "it-sweep", "--format", "json"],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr
    rows = json.loads(completed.stdout)
    assert len(rows) == 5
    assert rows[0]["mode"] == "baseline" and rows[0]["speedup"] == pytest.approx(1.0)
    assert rows[0]["speedup_low"] <= 1.0 <= rows[0]["speedup_high"]  # paired with itself, A/A error around it
    assert any(row["on_front"] is True for row in rows) and all(row["runtime"] == "onnxruntime" for row in rows)
    assert parents[0].data.tags[SWEEP_TAG] == "it-sweep"


def test_baseline_is_planned_first_and_counted():
    spec = parse_spec(
        {"name": "t", "data": {"source": "digits"}, "space": {"rank": {"choice": [4, 8]}, "quant_bits": 8}}
    )
    assert search.baseline_choices(spec) == {"rank": None, "quant_bits": 32}
    assert search.planned_trials(spec) == spec.search.num_samples + 1


def test_a_repeated_configuration_is_answered_from_the_earlier_trial_not_trained_again():
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    only = {"rank": tune.choice([4])}  # every suggestion is the same configuration
    searcher = search.DistinctConfigs(OptunaSearch(space=only, metric="val_accuracy", mode="max", seed=0), max_repeats=3)
    first = searcher.suggest("t1")
    searcher.on_trial_complete("t1", result={"config": first, "val_accuracy": 0.5})
    assert searcher.suggest("t2") == first  # accepted only after 3 skipped repeats
    assert len(searcher.repeat_of) == 3
    skipped = [t for t in searcher.inner._ot_study.trials if t.number in (1, 2, 3)]
    assert [t.value for t in skipped] == [0.5, 0.5, 0.5]  # Optuna learned the earlier result for each
    assert all(searcher.tune_trial_of(inner_id) == "t1" for inner_id in searcher.repeat_of)
    assert searcher.tune_trial_of(searcher.inner_ids["t2"]) == "t2"


MULTI_OBJECTIVE_SPEC = """\
name: it-optuna
data: {source: digits}
model: {kind: mlp, hidden: [32]}
train: {epochs: 1}
space:
  rank: {choice: [null, 4, 8]}
  quant_bits: {choice: [32, 8, 4]}
search: {algorithm: optuna, num_samples: 5, metric: [test_accuracy, latency_ms, size_bytes], mode: [max, min, min]}
resources: {max_concurrent_trials: 2}
deploy: {runtimes: [onnxruntime], rounds: 3}   # about the search, not the timing
"""


@pytest.mark.slow
def test_multi_objective_optuna_front_is_the_front_over_its_own_objectives(tmp_path):
    _, _, client, (parent,), _ = run_sweep(MULTI_OBJECTIVE_SPEC, tmp_path, "it-optuna")
    optuna_front = json.loads(open(client.download_artifacts(parent.info.run_id, "optuna_pareto_front.json", str(tmp_path))).read())
    # Optuna saw the trials' provisional latency (the quiet one comes after the search)
    rows = results_rows.sweep_rows(client, parent)
    searched = [("test_accuracy", "max"), ("latency_provisional_ms", "min"), ("size_bytes", "min")]
    assert optuna_front and sorted(optuna_front) == sorted(rows[index]["trial_id"] for index in front.pareto_front(rows, searched))
    assert parent.data.tags["accelsweep.optuna_front_matches"] == "true"


ASHA_SPEC = """\
name: it-asha
data: {source: digits}
model: {kind: mlp, hidden: [16]}
train: {epochs: 6, lr: 1.0e-3}
space:
  rank: {choice: [null, 2]}
  dropout: {uniform: [0.0, 0.6]}
search: {algorithm: random, num_samples: 7, metric: val_accuracy, mode: max, scheduler: asha, grace_period: 1}
resources: {max_concurrent_trials: 1}
deploy: {runtimes: [onnxruntime], rounds: 3}   # about the search, not the timing
"""
# One trial at a time: ASHA sees results in the trials' order, not in the order a loaded machine
# happens to finish them, and seeded CPU training gives the same accuracies: the same trials stop.


@pytest.mark.slow
def test_asha_stops_poor_trials_early_and_they_are_said_to_be(tmp_path):
    _, completed, client, _, children = run_sweep(ASHA_SPEC, tmp_path, "it-asha")
    assert len(children) == 8
    stopped = [run for run in children if run.data.tags["accelsweep.status"] == "stopped early"]
    assert stopped, "ASHA stopped no trial"
    for run in stopped:
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert max(epochs) < 6 and "test_accuracy" not in run.data.metrics
    assert "stopped early" in completed.stdout


def test_optuna_steers_by_time_to_target_and_a_trial_that_never_reaches_it_is_pruned():
    from optuna.trial import TrialState
    from ray import tune

    spec = parse_spec({
        "name": "t", "data": {"source": "digits"}, "train": {"target_accuracy": 0.9},
        "space": {"rank": {"choice": [None, 4, 8]}},
        "search": {"algorithm": "optuna", "metric": ["test_accuracy", "time_to_target_s"], "mode": ["max", "min"]},
        "resources": {"cpus_per_worker": 2},
    })  # fmt: skip
    searcher = search.search_algorithm(spec)
    searcher.set_search_properties(None, None, {"rank": tune.choice([None, 4, 8])})
    reached = {"config": searcher.suggest("t1"), "test_accuracy": 0.91, "train_seconds": 5.0, "reached_target": 1.0}
    never = {"config": searcher.suggest("t2"), "test_accuracy": 0.85, "train_seconds": 9.0, "reached_target": 0.0}
    searcher.on_trial_complete("t1", result=reached)
    searcher.on_trial_complete("t2", result=never)
    first, second = searcher.inner._ot_study.trials
    assert (first.state, first.values) == (TrialState.COMPLETE, [0.91, 5.0])  # the trial's own time to target
    assert second.state == TrialState.PRUNED
    assert search.optuna_front(searcher) == ["t1"]


@pytest.mark.slow
def test_two_worker_trials_measure_what_they_send_and_the_front_can_be_drawn_over_it(finished_sweep, accelsweep_in_process):
    workdir, _, _, _, children = finished_sweep
    metrics = {child.data.tags[MODE_TAG]: child.data.metrics for child in children}
    tags = {child.data.tags[MODE_TAG]: child.data.tags for child in children}
    plain_all_reduce = 4 * metrics["baseline"]["param_count"]  # fp32 bytes of every gradient, each step
    for mode in ("q8-d0.1-psgd2-w2", "q4-d0.1-psgd2-w2"):
        figures = metrics[mode]
        assert figures["world_size"] == 2 and figures["sync_rounds"] == figures["optimizer_steps"] > 0
        # the first 2 steps all-reduced uncompressed (PowerSGD's start), the rest rank-2 factors
        assert figures["comm_bytes_per_step"] < plain_all_reduce / 2
    for mode in ("q8-d0.1-psgd2", "q4-d0.1-psgd2"):  # one worker: nothing sent, and the trial says so
        assert "comm_bytes_per_step" not in metrics[mode]
        assert tags[mode][f"{NOTE_TAG_PREFIX}grad_compression_inactive"].endswith("does nothing on 1 worker: there is nothing to synchronise")
    store = f"sqlite:///{workdir / 'mlflow.db'}"
    completed = accelsweep_in_process("report", "it-sweep", "--uri", store, "--objectives", "test_accuracy,comm_bytes_per_step")
    assert completed.returncode == 0, completed.stderr
    header = next(line for line in completed.stdout.splitlines() if "comm_kB/step" in line)
    assert "syncs" in header
