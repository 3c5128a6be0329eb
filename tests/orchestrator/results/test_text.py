"""orchestrator.results.text: the table's columns come from the metrics table alone."""

import importlib
import json
import sys
import types
from pathlib import Path

import pytest

import orchestrator.results.numbers
import orchestrator.results.text
import trainers.metrics
from orchestrator.results.text import COLUMNS, MACHINE_COLUMNS
from trainers.metrics import METRICS


def test_the_table_shows_the_trial_then_the_metrics_in_column_order():
    assert COLUMNS[:5] == ("front", "mode", "trial_id", "status", "runtime")
    assert COLUMNS[COLUMNS.index("speedup") + 1] == "speedup_interval"
    placed = [name for name in COLUMNS if name in METRICS]
    assert placed == sorted(placed, key=lambda name: METRICS[name].column)
    assert MACHINE_COLUMNS[-1] == "run_id" and "speedup_interval" not in MACHINE_COLUMNS
    assert "epochs_trained" not in MACHINE_COLUMNS  # the shipped table gives it no column (see below)


README_ENTRY = 'Metric("epochs_trained", "final", None, "epoch", "epochs", ".0f", column=145),'


@pytest.fixture
def epochs_column(monkeypatch):
    """The results modules as they read a metrics table holding the README's "Adding a report
    column" entry (`epochs_trained` with a header, a format and a column) instead of the shipped one."""
    source = Path(trainers.metrics.__file__).read_text()
    shipped = 'Metric("epochs_trained", "final", None, "epoch"),'
    assert shipped in source
    edited = types.ModuleType("trainers.metrics")
    edited.__file__ = trainers.metrics.__file__
    exec(compile(source.replace(shipped, README_ENTRY), edited.__file__, "exec"), edited.__dict__)
    monkeypatch.setitem(sys.modules, "trainers.metrics", edited)
    importlib.reload(orchestrator.results.numbers)
    yield importlib.reload(orchestrator.results.text)
    monkeypatch.undo()
    importlib.reload(orchestrator.results.numbers)
    importlib.reload(orchestrator.results.text)


def test_a_metric_entry_alone_adds_a_report_column(epochs_column):
    rows = [{"front": "*", "mode": "baseline", "trial_id": "t0", "status": "finished", "runtime": "onnxruntime",
             "train_speedup": 1.0, "epochs_trained": 7.0, "run_id": "r0"}]  # fmt: skip
    header, line = epochs_column.format_rows(rows).splitlines()[:2]
    assert header.split()[-1] == "epochs" and line.split()[-1] == "7"
    assert json.loads(epochs_column.format_rows(rows, "json"))[0]["epochs_trained"] == 7.0
