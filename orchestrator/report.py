"""The trade-off report: every trial of a sweep, read back from MLflow alone, with the Pareto front
over (test accuracy up, latency down, stored size down) and ratios against the dense fp32 baseline.

Because it reads only MLflow, it works after the fact and from another machine.
"""

import csv
import io
import json
import math

from mlflow.tracking import MlflowClient

from orchestrator.errors import UserError
from orchestrator.tracking import BASELINE_TAG, KIND_TAG, MODE_TAG, PARENT_TAG, STATUS_TAG, SWEEP_TAG, TRIAL_ID_TAG

FRONT_OBJECTIVES = (("test_accuracy", "max"), ("latency_ms", "min"), ("size_bytes", "min"))
COLUMNS = (
    "front",
    "mode",
    "trial_id",
    "status",
    "test_accuracy",
    "accuracy_drop",
    "latency_ms",
    "latency_p95_ms",
    "latency_b256_ms",
    "inference_samples_per_s",
    "train_samples_per_s",
    "size_bytes",
    "param_count",
    "speedup",
    "compression",
)
FORMATS = ("table", "csv", "json", "markdown")


class ReportError(UserError):
    """The sweep asked for cannot be found."""


def find_sweep_run(client: MlflowClient, name_or_id: str):
    """The parent run of a sweep, by run id or by sweep name (the newest sweep of that name).

    Args:
        client: the tracking client.
        name_or_id: a parent run id, or the spec's `name`.

    Returns:
        The MLflow parent run.

    Raises:
        ReportError: no such sweep in the store.

    Example:
        >>> find_sweep_run(client, "quickstart").info.run_id
    """
    try:
        run = client.get_run(name_or_id)
        if run.data.tags.get(KIND_TAG) == "sweep":
            return run
    except Exception:  # not a run id: look it up as a name
        pass
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{SWEEP_TAG}` = '{name_or_id}' and tags.`{KIND_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ReportError(f"no sweep named or with run id {name_or_id!r} in {client.tracking_uri}")
    return runs[0]


def sweep_rows(client: MlflowClient, parent_run) -> list[dict]:
    """One row per trial of the sweep, with ratios against the baseline and the Pareto front marked.

    Args:
        client: the tracking client.
        parent_run: the sweep's parent run.

    Returns:
        Rows (dicts keyed by COLUMNS), the baseline first, then by test accuracy, best first.

    Example:
        >>> rows = sweep_rows(client, find_sweep_run(client, "quickstart"))
    """
    children = client.search_runs(
        [parent_run.info.experiment_id],
        filter_string=f"tags.{PARENT_TAG} = '{parent_run.info.run_id}'",
        max_results=10_000,
    )
    rows = [_row(run) for run in children]
    baseline = next((row for row in rows if row["baseline"] and _measured(row)), None)
    for row in rows:
        _add_ratios(row, baseline)
    for index in pareto_front(rows, FRONT_OBJECTIVES):
        rows[index]["front"] = "*"
    rows.sort(key=lambda row: (not row["baseline"], -(row.get("test_accuracy") or -1)))
    return rows


def pareto_front(rows: list[dict], objectives=FRONT_OBJECTIVES) -> list[int]:
    """Indices of the rows no other row dominates (as good in every objective, better in one).

    Rows missing an objective (failed or diverged trials) are never on the front.

    Args:
        rows: dicts holding the objective values.
        objectives: (key, "max" | "min") pairs.

    Returns:
        The indices of the non-dominated rows, in order.

    Example:
        >>> pareto_front([{"a": 1, "b": 1}, {"a": 2, "b": 2}], [("a", "max"), ("b", "max")])
        [1]
    """
    signs = {"max": 1.0, "min": -1.0}
    points = {
        index: tuple(signs[mode] * row[key] for key, mode in objectives)
        for index, row in enumerate(rows)
        if row.get("status", "finished") == "finished" and all(_is_number(row.get(key)) for key, _ in objectives)
    }
    return [
        index
        for index, point in points.items()
        if not any(_dominates(other, point) for other_index, other in points.items() if other_index != index)
    ]


def format_rows(rows: list[dict], fmt: str = "table") -> str:
    """Render report rows as a terminal table, CSV, JSON or Markdown.

    Args:
        rows: from `sweep_rows`.
        fmt: one of FORMATS.

    Example:
        >>> print(format_rows(rows, "markdown"))
    """
    if fmt == "json":
        return json.dumps([{key: row.get(key) for key in COLUMNS} for row in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    cells = [[_cell(key, row.get(key)) for key in COLUMNS] for row in rows]
    headers = [_HEADERS.get(key, key) for key in COLUMNS]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    lines = ["  ".join(text.ljust(width) for text, width in zip(headers, widths))]
    lines += ["  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in cells]
    legend = "* = on the Pareto front of (test accuracy up, latency down, size down); ratios vs the baseline"
    return "\n".join(lines + [legend])


_HEADERS = {
    "front": "",
    "trial_id": "trial",
    "test_accuracy": "test_acc",
    "accuracy_drop": "acc_drop",
    "latency_ms": "lat_b1_ms",
    "latency_p95_ms": "p95_b1_ms",
    "latency_b256_ms": "lat_b256_ms",
    "inference_samples_per_s": "infer/s",
    "train_samples_per_s": "train/s",
    "size_bytes": "size_kB",
    "param_count": "params",
}


def _row(run):
    tags, metrics = run.data.tags, run.data.metrics
    row = {key: metrics.get(key) for key in COLUMNS if key in metrics}
    row |= {
        "front": "",
        "mode": tags.get(MODE_TAG, "?"),
        "trial_id": tags.get(TRIAL_ID_TAG, run.info.run_id),
        "status": tags.get(STATUS_TAG, run.info.status.lower()),
        "baseline": tags.get(BASELINE_TAG) == "true",
        "run_id": run.info.run_id,
    }
    return row


def _measured(row):
    return row["status"] == "finished" and _is_number(row.get("latency_ms"))


def _add_ratios(row, baseline):
    if baseline is None or not _measured(row):
        return
    row["accuracy_drop"] = baseline["test_accuracy"] - row["test_accuracy"]
    row["speedup"] = baseline["latency_ms"] / row["latency_ms"]
    row["compression"] = baseline["size_bytes"] / row["size_bytes"]


def _dominates(a, b):
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _is_number(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def _cell(key, value):
    if value is None:
        return "-"
    if key == "size_bytes":
        return f"{value / 1000:.1f}"
    if key in ("param_count", "inference_samples_per_s", "train_samples_per_s"):
        return f"{value:.0f}"
    if key in ("speedup", "compression"):
        return f"{value:.2f}x"
    if key in ("test_accuracy", "accuracy_drop"):
        return f"{value:.4f}"
    if isinstance(value, float):
        return f"{value:.4f}"
    return str(value)


def log_report(client: MlflowClient, parent_id: str, rows: list[dict]) -> None:
    """Attach the trade-off table and the Pareto front to the sweep's parent run.

    Logs `tradeoff.csv`, `tradeoff.md`, `pareto_front.json`, and the parent metrics
    `trials`, `pareto_size`, `baseline_test_accuracy`, `baseline_latency_ms`, `baseline_size_bytes`.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        rows: from `sweep_rows`.

    Example:
        >>> log_report(client, parent_id, sweep_rows(client, client.get_run(parent_id)))
    """
    client.log_text(parent_id, format_rows(rows, "csv"), "tradeoff.csv")
    client.log_text(parent_id, format_rows(rows, "markdown"), "tradeoff.md")
    front = [row for row in rows if row["front"]]
    client.log_text(parent_id, format_rows(front, "json"), "pareto_front.json")
    client.log_metric(parent_id, "trials", len(rows))
    client.log_metric(parent_id, "pareto_size", len(front))
    baseline = next((row for row in rows if row["baseline"] and _measured(row)), None)
    for key in ("test_accuracy", "latency_ms", "size_bytes"):
        if baseline is not None:
            client.log_metric(parent_id, f"baseline_{key}", baseline[key])
