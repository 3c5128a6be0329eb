"""orchestrator.results (rows, front, text, png, selection, publish): the Pareto front, the four output formats, the trade-off plot, choosing the
trial to deploy, and reading a sweep back from a real MLflow sqlite store in a temporary directory."""

import csv
import io
import json
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.results.front import pareto_front
from orchestrator.results.png import PLOT_FILE, plot_tradeoff
from orchestrator.results.publish import log_report
from orchestrator.results.rows import ReportError, sweep_rows
from orchestrator.results.selection import SelectionError, describe_choice, select_trial
from orchestrator.results.text import MACHINE_COLUMNS, format_rows
from orchestrator.tracking.store import TrackingError, find_sweep_run
from tests.orchestrator.stored_sweep import TRIALS, create_sweep


def row(status="finished", **values):
    return {"status": status, "front": "", "baseline": False, **values}


@pytest.fixture(scope="module")
def store(tmp_path_factory, new_mlflow_store):
    """A sqlite MLflow store holding two sweeps named "demo" (the newer one has TRIALS) and one
    named "other"; returns (client, {label: parent run id})."""
    root = tmp_path_factory.mktemp("mlflow")
    client = MlflowClient(tracking_uri=new_mlflow_store(root / "mlflow.db"))
    experiment_id = client.create_experiment("demo", artifact_location=(root / "artifacts").as_uri())
    parents = {
        "old demo": create_sweep(client, experiment_id, "demo", TRIALS[:1], start_time=1_000),
        "demo": create_sweep(client, experiment_id, "demo", TRIALS, start_time=2_000),
        "other": create_sweep(client, experiment_id, "other", TRIALS[1:3], start_time=3_000),
        "unmeasured": create_sweep(client, experiment_id, "unmeasured", TRIALS[3:], start_time=4_000),
    }
    return client, parents


def test_pareto_front_docstring_example():
    assert pareto_front([{"a": 1, "b": 1}, {"a": 2, "b": 2}], [("a", "max"), ("b", "max")]) == [1]


def test_pareto_front_keeps_every_trade_off():
    rows = [
        row(test_accuracy=0.9, latency_ms=2.0, size_bytes=4000),  # most accurate
        row(test_accuracy=0.8, latency_ms=1.0, size_bytes=4000),  # fastest
        row(test_accuracy=0.7, latency_ms=3.0, size_bytes=1000),  # smallest
        row(test_accuracy=0.8, latency_ms=2.0, size_bytes=4000),  # dominated by the first two
    ]
    assert pareto_front(rows) == [0, 1, 2]


def test_pareto_front_keeps_ties():
    rows = [row(test_accuracy=0.9, latency_ms=1.0, size_bytes=10)] * 2
    assert pareto_front(rows) == [0, 1]


def test_pareto_front_equal_but_one_better_dominates():
    rows = [row(test_accuracy=0.9, latency_ms=1.0, size_bytes=10), row(test_accuracy=0.9, latency_ms=1.0, size_bytes=9)]
    assert pareto_front(rows) == [1]


@pytest.mark.parametrize(
    "broken",
    [
        row(status="diverged", test_accuracy=1.0, latency_ms=0.1, size_bytes=1),
        row(status="error", test_accuracy=1.0, latency_ms=0.1, size_bytes=1),
        row(test_accuracy=1.0, latency_ms=0.1),
        row(test_accuracy=float("nan"), latency_ms=0.1, size_bytes=1),
        row(test_accuracy=None, latency_ms=0.1, size_bytes=1),
    ],
    ids=["diverged", "error", "missing size", "nan accuracy", "no accuracy"],
)
def test_pareto_front_never_holds_unmeasured_rows(broken):
    rows = [row(test_accuracy=0.5, latency_ms=5.0, size_bytes=100), broken]
    assert pareto_front(rows) == [0]


def test_pareto_front_directions():
    rows = [row(test_accuracy=0.5, latency_ms=1.0, size_bytes=1), row(test_accuracy=0.6, latency_ms=2.0, size_bytes=2)]
    assert pareto_front(rows, [("latency_ms", "min")]) == [0]
    assert pareto_front(rows, [("latency_ms", "max")]) == [1]
    assert pareto_front(rows, [("test_accuracy", "min"), ("size_bytes", "min")]) == [0]


REPORT_ROWS = [
    row(front="*", on_front=True, mode="baseline", trial_id="t0", baseline=True, test_accuracy=0.9, latency_ms=2.0,
        size_bytes=4000.0, speedup=1.0, speedup_low=1.0, speedup_high=1.0, compression=1.0, accuracy_drop=0.0),
    row(front="*", on_front=True, mode="r8-q8", trial_id="t1", test_accuracy=0.88, latency_ms=1.0, size_bytes=1000.0,
        speedup=2.0, speedup_low=1.9, speedup_high=2.1, compression=4.0, accuracy_drop=0.02),
    row(status="error", mode="q2", trial_id="t4"),
]


def test_format_csv_parses_back():
    parsed = list(csv.DictReader(io.StringIO(format_rows(REPORT_ROWS, "csv"))))
    assert list(parsed[0]) == list(MACHINE_COLUMNS)
    assert [r["trial_id"] for r in parsed] == ["t0", "t1", "t4"]
    assert float(parsed[1]["speedup"]) == 2.0
    assert parsed[2]["latency_ms"] == ""


def test_format_json_parses_back():
    parsed = json.loads(format_rows(REPORT_ROWS, "json"))
    assert [list(r) for r in parsed] == [list(MACHINE_COLUMNS)] * 3
    assert parsed[1]["compression"] == 4.0 and (parsed[1]["speedup_low"], parsed[1]["speedup_high"]) == (1.9, 2.1)
    assert parsed[0]["on_front"] is True and parsed[2]["test_accuracy"] is None


def test_a_speedup_whose_interval_holds_one_shows_as_about_one():
    rows = [dict(REPORT_ROWS[0]), dict(REPORT_ROWS[1], speedup=1.04, speedup_low=0.97, speedup_high=1.1)]
    table = format_rows(rows)
    assert "≈1.04x" in table and "0.97-1.10" in table
    assert "2.00x" in format_rows(REPORT_ROWS) and "≈" not in format_rows(REPORT_ROWS).splitlines()[2]


def test_noise_cannot_put_a_trial_on_the_front_by_latency_alone(tmp_path, new_mlflow_store):
    client = MlflowClient(tracking_uri=new_mlflow_store(tmp_path / "mlflow.db"))
    experiment_id = client.create_experiment("noise", artifact_location=(tmp_path / "artifacts").as_uri())
    same = {"test_accuracy": 0.9, "size_bytes": 4000.0}
    trials = [
        ("baseline", "t0", "finished", same | {"latency_ms": 2.0, "speedup": 1.0, "speedup_low": 1.0, "speedup_high": 1.0}),
        # the baseline's graph, timed 3% faster by chance: its interval holds 1.0
        ("d0.1", "t1", "finished", same | {"latency_ms": 1.94, "speedup": 1.03, "speedup_low": 0.98, "speedup_high": 1.08}),
        # really faster: its interval is above 1.0
        ("r8", "t2", "finished", same | {"latency_ms": 1.0, "speedup": 2.0, "speedup_low": 1.9, "speedup_high": 2.1}),
    ]
    parent_id = create_sweep(client, experiment_id, "noise", trials, start_time=1_000)
    rows = {r["trial_id"]: r for r in sweep_rows(client, client.get_run(parent_id))}
    assert rows["t1"]["on_front"] is False  # as fast as the baseline, and no better otherwise
    assert rows["t2"]["on_front"] is True and rows["t2"]["speedup"] == 2.0  # the paired figure, not a ratio


def test_format_markdown_has_a_header_separator():
    lines = format_rows(REPORT_ROWS, "markdown").splitlines()
    assert len(lines) == 2 + len(REPORT_ROWS)
    assert set(lines[1]) == {"|", "-"}
    assert lines[1].count("|") == lines[0].count("|")
    assert "| 2.00x |" in lines[3]


def test_format_table_has_the_legend_and_aligned_columns():
    lines = format_rows(REPORT_ROWS).splitlines()
    assert lines[-1].startswith("* = on the Pareto front")
    assert len({len(line) for line in lines[:-1]}) == 1
    assert "4.00x" in lines[2].split()
    assert "4.0" in lines[1].split()  # size in kB


def demo_rows(store):
    client, parents = store
    return sweep_rows(client, client.get_run(parents["demo"]))


def test_sweep_rows_baseline_first_then_by_accuracy(store):
    assert [r["trial_id"] for r in demo_rows(store)] == ["t0", "t1", "t2", "t3", "t4"]


def test_sweep_rows_ratios_against_the_baseline(store):
    rows = {r["trial_id"]: r for r in demo_rows(store)}
    assert rows["t0"]["speedup"] == pytest.approx(1.0)
    assert rows["t1"]["speedup"] == pytest.approx(2.0 / 1.0)
    assert rows["t1"]["compression"] == pytest.approx(4000 / 1000)
    assert rows["t1"]["accuracy_drop"] == pytest.approx(0.90 - 0.88)
    assert rows["t2"]["speedup"] == pytest.approx(2.0 / 2.5)
    assert rows["t2"]["compression"] == pytest.approx(4000 / 3000)
    assert "speedup" not in rows["t3"]  # diverged: no ratios
    assert "speedup" not in rows["t4"]


def test_sweep_rows_marks_the_front_and_statuses(store):
    rows = {r["trial_id"]: r for r in demo_rows(store)}
    assert {key for key, r in rows.items() if r["front"] == "*"} == {"t0", "t1"}
    assert rows["t3"]["status"] == "diverged"
    assert rows["t4"]["status"] == "error"
    assert rows["t0"]["baseline"] is True
    assert rows["t1"]["mode"] == "r8-q8"


def test_sweep_rows_reads_only_its_own_children(store):
    client, parents = store
    assert len(sweep_rows(client, client.get_run(parents["other"]))) == 2


def test_find_sweep_run_by_name_takes_the_newest(store):
    client, parents = store
    assert find_sweep_run(client, "demo").info.run_id == parents["demo"]


def test_find_sweep_run_by_run_id(store):
    client, parents = store
    assert find_sweep_run(client, parents["old demo"]).info.run_id == parents["old demo"]


def test_find_sweep_run_refuses_unknown_names_and_trial_ids(store):
    client, parents = store
    with pytest.raises(TrackingError, match="no sweep named or with run id 'nosuch'"):
        find_sweep_run(client, "nosuch")
    trial_id = demo_rows(store)[0]["run_id"]
    with pytest.raises(TrackingError):
        find_sweep_run(client, trial_id)


def test_log_report_attaches_tables_and_front(store, tmp_path):
    client, parents = store
    parent_id = parents["other"]
    rows = sweep_rows(client, client.get_run(parent_id))
    log_report(client, parent_id, rows)

    stored = {artifact.path for artifact in client.list_artifacts(parent_id)}
    assert {"tradeoff.csv", "tradeoff.md", "pareto_front.json", PLOT_FILE} <= stored
    assert Path(client.download_artifacts(parent_id, PLOT_FILE, str(tmp_path))).read_bytes()[:8] == PNG_MAGIC
    front = json.loads(Path(client.download_artifacts(parent_id, "pareto_front.json", str(tmp_path))).read_text())
    assert [r["trial_id"] for r in front] == [r["trial_id"] for r in rows if r["front"]]
    csv_text = Path(client.download_artifacts(parent_id, "tradeoff.csv", str(tmp_path))).read_text()
    assert len(list(csv.DictReader(io.StringIO(csv_text)))) == len(rows)
    metrics = client.get_run(parent_id).data.metrics
    assert metrics["trials"] == 2
    assert metrics["pareto_size"] == len(front) == 2
    assert metrics["baseline_latency_ms"] == 2.0
    assert metrics["baseline_size_bytes"] == 4000.0
    assert metrics["baseline_test_accuracy"] == pytest.approx(0.9)


PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def test_log_report_of_a_sweep_with_nothing_measured_logs_no_plot(store):
    client, parents = store
    parent_id = parents["unmeasured"]
    log_report(client, parent_id, sweep_rows(client, client.get_run(parent_id)))
    stored = {artifact.path for artifact in client.list_artifacts(parent_id)}
    assert "tradeoff.csv" in stored
    assert PLOT_FILE not in stored


def test_plot_tradeoff_marks_front_and_baseline(store, tmp_path):
    path = tmp_path / "plot.png"
    figure = plot_tradeoff(demo_rows(store), str(path), title="demo")
    assert path.read_bytes()[:8] == PNG_MAGIC
    axes = figure.axes[0]
    assert axes.get_xscale() == "linear"  # 1.0 to 2.5 ms
    assert axes.get_xlabel().startswith("inference latency in eager, batch 1, median (ms")
    assert axes.get_ylabel() == "test accuracy"
    assert "3 measured trials" in axes.get_title()  # the diverged and the failed trial are left out
    assert {text.get_text() for text in axes.texts} == {"baseline", "r8-q8"}  # the front, labelled
    legend = [text.get_text() for text in axes.get_legend().get_texts()]
    assert legend[0] == "baseline (dense fp32),\ndotted lines through it"
    assert legend[1] == "on the Pareto front (accuracy, latency, size)"
    assert legend[-2:] == ["stored size 1.0 kB", "stored size 4.0 kB"]


def test_plot_tradeoff_uses_a_log_axis_for_a_wide_latency_spread(tmp_path):
    rows = [
        row(mode="baseline", baseline=True, front="*", test_accuracy=0.9, latency_ms=50.0, size_bytes=4000.0),
        row(mode="q8", front="*", test_accuracy=0.89, latency_ms=0.5, size_bytes=1000.0),
    ]
    figure = plot_tradeoff(rows, str(tmp_path / "plot.png"))
    assert figure.axes[0].get_xscale() == "log"
    assert figure.axes[0].get_xlabel().endswith(", log scale")


def test_plot_tradeoff_refuses_a_sweep_with_nothing_measured(store, tmp_path):
    client, parents = store
    rows = sweep_rows(client, client.get_run(parents["unmeasured"]))
    with pytest.raises(ReportError, match="nothing to plot"):
        plot_tradeoff(rows, str(tmp_path / "plot.png"))
    assert not (tmp_path / "plot.png").exists()


@pytest.mark.parametrize(
    "drop, optimize, chosen",
    [
        (0.0, "latency", "t0"),  # nothing beats the baseline without losing accuracy
        (0.01, "latency", "t0"),
        (0.02, "latency", "t1"),  # 0.90 - 0.88 is 0.020000000000000018 in floats: still within 0.02
        (0.9, "latency", "t1"),  # t3 is faster and within 0.9, but diverged
        (0.05, "size", "t1"),
        (0.01, "size", "t0"),
    ],
)
def test_select_trial_takes_the_fastest_or_smallest_within_the_budget(store, drop, optimize, chosen):
    assert select_trial(demo_rows(store), drop, optimize)["trial_id"] == chosen


def test_select_trial_breaks_ties_by_accuracy():
    rows = [
        row(baseline=True, trial_id="t0", test_accuracy=0.9, latency_ms=2.0, size_bytes=9.0, accuracy_drop=0.0),
        row(trial_id="t1", test_accuracy=0.85, latency_ms=1.0, size_bytes=9.0, accuracy_drop=0.05),
        row(trial_id="t2", test_accuracy=0.87, latency_ms=1.0, size_bytes=9.0, accuracy_drop=0.03),
    ]
    assert select_trial(rows, 0.1)["trial_id"] == "t2"


def test_select_trial_refuses_when_none_qualifies(store):
    with pytest.raises(SelectionError, match=r"no trial is within -0.01 .* 0.9000; the closest is baseline \(t0\)"):
        select_trial(demo_rows(store), -0.01)


def test_select_trial_refuses_without_a_measured_baseline(store):
    rows = [r for r in demo_rows(store) if not r["baseline"]]
    with pytest.raises(SelectionError, match="no measured baseline"):
        select_trial(rows, 0.5)


def test_describe_choice_names_the_trial_and_its_gains(store):
    rows = demo_rows(store)
    chosen = select_trial(rows, 0.02)
    text = describe_choice(chosen, 0.02)
    assert text.startswith("chosen: r8-q8 (fastest trial within 0.02 of the baseline's test accuracy)")
    assert f"trial t1, MLflow run {chosen['run_id']}" in text
    assert "test accuracy 0.8800 (baseline 0.9000, drop 0.0200)" in text
    assert "(speedup 2.00x)" in text and "(compression 4.00x)" in text
    baseline_text = describe_choice(select_trial(rows, 0.0, "size"), 0.0, "size")
    assert baseline_text.startswith("chosen: baseline (smallest trial")
    assert baseline_text.endswith("no accelerated trial is smaller within the budget")
