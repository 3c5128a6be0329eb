"""orchestrator.results.training_figures: time to target, training speedup, cost and workers scaling, read
back from a real sqlite MLflow store holding per-epoch histories as trials log them."""

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.results.rows import ReportError, parse_objectives, sweep_rows
from orchestrator.results.text import format_rows
from orchestrator.results.training_figures import search_figures
from orchestrator.tracking.trial_runs import TrialRuns
from tests.orchestrator.stored_sweep import stored_trial, sweep_parent

# (mode, trial id, world size, per-epoch (val_accuracy, epoch_seconds), train samples/s)
TRIALS = [
    ("baseline", "t0", 1, [(0.80, 2.0), (0.88, 2.0), (0.90, 2.0)], 1000.0),
    ("r8", "t1", 1, [(0.85, 1.0), (0.89, 1.0), (0.895, 1.0)], 2000.0),  # reaches 0.89 after 2 s
    ("q4", "t2", 1, [(0.70, 1.5), (0.75, 1.5), (0.80, 1.5)], 1500.0),  # never reaches it
    ("r8-w2", "t3", 2, [(0.86, 0.6), (0.89, 0.6), (0.90, 0.6)], 3000.0),  # 1.5x r8 on 2 workers
]


def store_sweep(client, experiment_id, params):
    parent_id = sweep_parent(client, experiment_id, "training", params=params)
    runs = TrialRuns(client, parent_id, "training")
    for label, trial_id, workers, epochs, throughput in TRIALS:
        final = {"test_accuracy": epochs[-1][0], "latency_ms": 1.0, "size_bytes": 1000.0,
                 "train_samples_per_s": throughput, "world_size": workers,
                 "train_seconds": sum(seconds for _, seconds in epochs)}  # fmt: skip
        history = {"val_accuracy": [accuracy for accuracy, _ in epochs], "epoch_seconds": [seconds for _, seconds in epochs]}
        stored_trial(runs, trial_id, label, metrics=final, history=history)
    return client.get_run(parent_id)


@pytest.fixture
def client(tmp_path, new_mlflow_store):
    client = MlflowClient(tracking_uri=new_mlflow_store(tmp_path / "mlflow.db"))
    client.create_experiment("training", artifact_location=(tmp_path / "artifacts").as_uri())
    return client


def rows_of(client, params, **options):
    parent = store_sweep(client, client.get_experiment_by_name("training").experiment_id, params)
    return {row["trial_id"]: row for row in sweep_rows(client, parent, **options)}


def test_time_to_the_baselines_accuracy_minus_a_point(client):
    rows = rows_of(client, {"resources.cpus_per_worker": "2", "resources.gpus_per_worker": "0"})
    # target 0.90 - 0.01 = 0.89: the baseline gets there in 3 epochs (6 s), r8 in 2 (2 s)
    assert rows["t0"]["time_to_target_s"] == pytest.approx(6.0)
    assert rows["t1"]["time_to_target_s"] == pytest.approx(2.0)
    assert rows["t1"]["time_to_target_speedup"] == pytest.approx(3.0)
    assert rows["t2"]["reached_target"] is False and rows["t2"]["time_to_target_s"] is None
    assert rows["t1"]["train_speedup"] == pytest.approx(2.0) and rows["t0"]["train_speedup"] == 1.0
    assert "never" in format_rows(list(rows.values()))


def test_a_stated_target_wins_over_the_baseline(client):
    rows = rows_of(client, {"train.target_accuracy": "0.8"})
    assert rows["t0"]["time_to_target_s"] == pytest.approx(2.0) and rows["t2"]["time_to_target_s"] == pytest.approx(4.5)
    tighter = rows_of(client, {}, target_tolerance=0.0)
    assert tighter["t1"]["reached_target"] is False  # 0.895 < 0.90


def test_cost_counts_worker_seconds_per_device(client):
    rows = rows_of(client, {"resources.cpus_per_worker": "2", "resources.gpus_per_worker": "0.5"})
    assert rows["t3"]["cost_cpu_s"] == pytest.approx(1.8 * 2 * 2)
    assert rows["t3"]["cost_gpu_s"] == pytest.approx(1.8 * 2 * 0.5)


def test_workers_scaling_compares_with_the_one_worker_twin(client):
    rows = rows_of(client, {})
    assert rows["t3"]["workers_speedup"] == pytest.approx(1.5)
    assert rows["t3"]["scaling_efficiency"] == pytest.approx(0.75)
    assert "scaling_efficiency" not in rows["t1"]


def test_the_front_follows_the_chosen_objectives(client):
    objectives = parse_objectives("test_accuracy,time_to_target_s,cost_cpu_s")
    rows = rows_of(client, {}, objectives=objectives)
    assert {trial for trial, row in rows.items() if row["on_front"]} == {"t1", "t3"}
    # t0 is as accurate as t3 but slower and dearer; t2 never reaches the target
    table = format_rows(list(rows.values()), objectives=objectives)
    assert "time_to_target_s down" in table
    header, *lines = table.splitlines()
    assert header.split()[-1] == "cpu_s"  # an axis of the front that the table lacked is shown
    assert lines[0].split()[-1] == "6.0"  # the baseline's 3 epochs of 2 s on one 1-CPU worker


def test_the_markdown_table_shows_the_fronts_axes(client):
    objectives = parse_objectives("test_accuracy,cost_cpu_s")
    rows = rows_of(client, {}, objectives=objectives)
    header = format_rows(list(rows.values()), "markdown", objectives=objectives).splitlines()[0]
    assert header.endswith("| cpu_s |")
    assert "cpu_s" not in format_rows(list(rows.values()), "markdown").splitlines()[0]


@pytest.mark.parametrize(
    ("text", "message"),
    [("test_accuracy,speed", "unknown metric 'speed'"), ("test_accuracy", "at least two different metrics")],
)
def test_bad_objectives_are_refused(text, message):
    with pytest.raises(ReportError, match=message):
        parse_objectives(text)


def test_a_search_sees_cost_and_the_time_to_a_stated_target_from_each_trial_alone():
    reached = {"train_seconds": 12.0, "world_size": 2, "reached_target": 1.0}
    figures = search_figures(reached, cpus_per_worker=2, gpus_per_worker=0.5, target_accuracy=0.9)
    assert figures == {"cost_cpu_s": 48.0, "cost_gpu_s": 12.0, "time_to_target_s": 12.0}
    assert "time_to_target_s" not in search_figures(reached | {"reached_target": 0.0}, 1, 0, 0.9)
    assert "time_to_target_s" not in search_figures(reached, 1, 0, None)  # the baseline's target: after the sweep
    assert search_figures({"epoch": 3}, 1, 0, 0.9) == {}  # a trial that ended without training figures


def test_quiet_training_figures_win_and_the_in_sweep_ones_stay_provisional(client):
    parent = store_sweep(client, client.get_experiment_by_name("training").experiment_id, {})
    quiet = {"t0": {"train_step_speedup": 1.0, "train_epoch_s": 1.5}, "t1": {"train_step_speedup": 1.6, "train_epoch_s": 0.5}}
    for row in sweep_rows(client, parent):
        for key, value in quiet.get(row["trial_id"], {}).items():
            client.log_metric(row["run_id"], key, value)
    rows = {row["trial_id"]: row for row in sweep_rows(client, parent)}
    assert rows["t1"]["train_speedup"] == 1.6 and rows["t1"]["train_speedup_provisional"] == pytest.approx(2.0)
    # epochs to the target (0.89) times the quiet epoch: t1 took 2, the baseline 3
    assert rows["t1"]["time_to_target_s"] == pytest.approx(1.0) and rows["t1"]["time_to_target_provisional_s"] == pytest.approx(2.0)
    assert rows["t0"]["time_to_target_s"] == pytest.approx(4.5)
    assert rows["t2"]["train_speedup"] == pytest.approx(1.5)  # not timed quietly: its in-sweep ratio
