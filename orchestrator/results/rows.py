"""A sweep's results, computed once from MLflow alone: one row per trial, with ratios against the
dense fp32 baseline, training figures, and the Pareto front marked. Every renderer reads these rows.

Because it reads only MLflow, it works after the fact and from another machine.
"""

from mlflow.tracking import MlflowClient

from orchestrator.errors import UserError
from orchestrator.results.front import FRONT_OBJECTIVES, pareto_front, speedup_holds_one
from orchestrator.results.numbers import is_number
from orchestrator.results.training_figures import DEFAULT_TOLERANCE, add_training_figures
from orchestrator.tracking.filters import quoted
from orchestrator.tracking.tags import BASELINE_TAG, MODE_TAG, NOTE_TAG_PREFIX, PARENT_TAG, RUNTIME_TAG, STATUS_TAG, TRIAL_ID_TAG
from trainers.metrics import BENCH_METRICS, FRONT_METRICS, METRICS


class ReportError(UserError):
    """The sweep asked for cannot be found, or holds nothing to report."""


def sweep_rows(
    client: MlflowClient,
    parent_run,
    host: str | None = None,
    objectives: list[tuple[str, str]] | None = None,
    target_tolerance: float = DEFAULT_TOLERANCE,
) -> list[dict]:
    """One row per trial of the sweep, with ratios against the baseline and the Pareto front marked.

    Latency and speedup are the quiet measurement phase's (paired with the baseline, in the primary
    runtime); a sweep measured before that phase existed falls back to latency ratios.

    Args:
        client: the tracking client.
        parent_run: the sweep's parent run.
        host: show the figures this host measured (`accelsweep bench` on it); None: the latest.
        objectives: (metric, "max" | "min") pairs the front is drawn over (`parse_objectives`);
            None: test accuracy, latency and size.
        target_tolerance: the training target is the baseline's final validation accuracy minus
            this, unless the spec set `train.target_accuracy` (see `training_figures`).

    Returns:
        Rows (dicts keyed by COLUMNS and MACHINE_COLUMNS), the baseline first, then by test
        accuracy, best first.

    Example:
        >>> rows = sweep_rows(client, find_sweep_run(client, "quickstart"))  # doctest: +SKIP
    """
    children = client.search_runs(
        [parent_run.info.experiment_id],
        filter_string=f"tags.{PARENT_TAG} = {quoted(parent_run.info.run_id)}",
        max_results=10_000,
    )
    rows = [_row(run) for run in children]
    if host is not None:
        _use_host(client, rows, host)
    baseline = baseline_of(rows)
    for row in rows:
        _add_ratios(row, baseline)
    add_training_figures(client, parent_run, rows, baseline, target_tolerance)
    front_objectives = [("front_latency_ms" if key == "latency_ms" else key, mode) for key, mode in objectives or FRONT_OBJECTIVES]
    for index in pareto_front(rows, front_objectives):
        rows[index]["front"] = "*"
    for row in rows:
        row["on_front"] = row["front"] == "*"
    rows.sort(key=lambda row: (not row["baseline"], -(row.get("test_accuracy") or -1)))
    return rows


def parse_objectives(text: str) -> list[tuple[str, str]]:
    """`--objectives` as (metric, direction) pairs, each direction from the metrics table.

    Args:
        text: comma-separated metric names, e.g. "test_accuracy,time_to_target_s,cost_cpu_s".

    Raises:
        ReportError: an unknown name, or fewer than two.

    Example:
        >>> parse_objectives("test_accuracy,latency_ms")
        [('test_accuracy', 'max'), ('latency_ms', 'min')]
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    for name in names:
        if name not in FRONT_METRICS:
            raise ReportError(f"--objectives: unknown metric {name!r}; valid: {', '.join(FRONT_METRICS)}")
    if len(set(names)) < 2:
        raise ReportError(f"--objectives: a front needs at least two different metrics, got {text!r}")
    return [(name, METRICS[name].direction) for name in names]


def _row(run):
    tags, metrics = run.data.tags, run.data.metrics
    row = dict(metrics)
    row |= {
        "front": "",
        "runtime": tags.get(RUNTIME_TAG) or tags.get(f"{NOTE_TAG_PREFIX}runtime", "eager"),
        "mode": tags.get(MODE_TAG, "?"),
        "trial_id": tags.get(TRIAL_ID_TAG, run.info.run_id),
        "status": tags.get(STATUS_TAG, run.info.status.lower()),
        "baseline": tags.get(BASELINE_TAG) == "true",
        "run_id": run.info.run_id,
    }
    return row


def _use_host(client, rows, host):
    from orchestrator.tracking.measured_figures import host_figures  # reads the bench/<host>.json artifacts

    for row in rows:
        for key in BENCH_METRICS:
            row.pop(key, None)
        row |= host_figures(client, row["run_id"], host) or {}
    if not any(is_number(row.get("latency_ms")) for row in rows):
        raise ReportError(f"host {host!r} measured no trial of this sweep (run `accelsweep bench` there)")


def is_measured(row: dict) -> bool:
    """Whether a row is a finished trial with a measured latency.

    Example:
        >>> is_measured({"status": "finished", "latency_ms": 0.01}), is_measured({"status": "error"})
        (True, False)
    """
    return row["status"] == "finished" and is_number(row.get("latency_ms"))


def baseline_of(rows: list[dict]) -> dict | None:
    """The baseline row ratios are taken against: the first measured baseline trial (the one the
    search started with and the quiet phase paired with), or None.

    Example:
        >>> baseline_of([{"baseline": True, "status": "finished", "latency_ms": 0.01, "trial_id": "a_00000"}])["trial_id"]
        'a_00000'
    """
    candidates = [row for row in rows if row["baseline"] and is_measured(row)]
    return min(candidates, key=lambda row: row.get("trial_id", ""), default=None)


def _add_ratios(row, baseline):
    if baseline is None or row["status"] != "finished" or not is_number(row.get("test_accuracy")):
        return
    row["accuracy_drop"] = baseline["test_accuracy"] - row["test_accuracy"]
    row["compression"] = baseline["size_bytes"] / row["size_bytes"]
    if not is_measured(row):
        return
    if not is_number(row.get("speedup")):  # measured before the paired phase existed
        row["speedup"] = baseline["latency_ms"] / row["latency_ms"]
    row["front_latency_ms"] = baseline["latency_ms"] if speedup_holds_one(row) else row["latency_ms"]


