"""The trade-off report: every trial of a sweep, read back from MLflow alone, with the Pareto front
over (test accuracy up, latency down, stored size down) and ratios against the dense fp32 baseline,
as a table, a plot, and the one trial to deploy under an accuracy budget.

Because it reads only MLflow, it works after the fact and from another machine.
"""

import csv
import io
import json
import logging
import math
import os
import tempfile

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator, PercentFormatter
from mlflow.tracking import MlflowClient

from orchestrator.errors import UserError
from orchestrator.mlflow_filters import quoted
from orchestrator.tags import (
    BASELINE_TAG,
    KIND_TAG,
    MODE_TAG,
    NOTE_TAG_PREFIX,
    PARENT_TAG,
    RUNTIME_TAG,
    STATUS_TAG,
    SWEEP_TAG,
    TRIAL_ID_TAG,
)
from orchestrator.training_figures import DEFAULT_TOLERANCE, add_training_figures
from trainers.metrics import BENCH_METRICS, FRONT_METRICS, METRICS, format_metric

FRONT_OBJECTIVES = (("test_accuracy", "max"), ("latency_ms", "min"), ("size_bytes", "min"))
"""The sweep report's default front. In a sweep's report, latency counts as `front_latency_ms`: the
latency, except that a trial whose speedup interval contains 1.0 counts as exactly as fast as the
baseline, so noise puts no trial on the front."""
COLUMNS = (
    "front",
    "mode",
    "trial_id",
    "status",
    "runtime",
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
    "speedup_interval",
    "compression",
    "time_to_target_s",
    "train_speedup",
)
MACHINE_COLUMNS = ("on_front",) + tuple(key for key in COLUMNS if key not in ("front", "speedup_interval")) + (
    "speedup_low",
    "speedup_high",
    "latency_provisional_ms",
    "reached_target",
    "time_to_target_speedup",
    "train_seconds",
    "world_size",
    "cost_cpu_s",
    "cost_gpu_s",
    "workers_speedup",
    "scaling_efficiency",
    "run_id",
)
"""The JSON and CSV columns: numbers as numbers, the front as a boolean."""
FORMATS = ("table", "csv", "json", "markdown")
OPTIMIZE = {"latency": "latency_ms", "size": "size_bytes"}
"""What `select_trial` minimises: batch-1 median latency, or stored bytes."""
_DROP_TOLERANCE = 1e-9  # 0.90 - 0.88 > 0.02 in floats
PLOT_FILE = "tradeoff.png"
LOG_SCALE_SPREAD = 10.0
"""The latency axis turns logarithmic when the slowest trial is this many times the fastest."""

logger = logging.getLogger(__name__)


class ReportError(UserError):
    """The sweep asked for cannot be found, or holds nothing to report."""


class SelectionError(UserError):
    """No trial meets the accuracy budget, or there is no measured baseline to measure it against."""


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
    try:
        name = quoted(name_or_id)
    except ValueError:
        raise ReportError(f"no sweep named or with run id {name_or_id!r}: a sweep's name holds no quotes") from None
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{SWEEP_TAG}` = {name} and tags.`{KIND_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise ReportError(f"no sweep named or with run id {name_or_id!r} in {client.tracking_uri}")
    return runs[0]


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
        >>> rows = sweep_rows(client, find_sweep_run(client, "quickstart"))
    """
    children = client.search_runs(
        [parent_run.info.experiment_id],
        filter_string=f"tags.{PARENT_TAG} = {quoted(parent_run.info.run_id)}",
        max_results=10_000,
    )
    rows = [_row(run) for run in children]
    if host is not None:
        _use_host(client, rows, host)
    baseline = _baseline(rows)
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


def format_rows(rows: list[dict], fmt: str = "table", objectives: list[tuple[str, str]] | None = None) -> str:
    """Render report rows as a terminal table, CSV, JSON or Markdown.

    Args:
        rows: from `sweep_rows`.
        fmt: one of FORMATS.
        objectives: the front's objectives, named in the table's legend and shown as columns
            (None: the default).

    Example:
        >>> print(format_rows(rows, "markdown"))
    """
    if fmt == "json":
        return json.dumps([{key: row.get(key) for key in MACHINE_COLUMNS} for row in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MACHINE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    columns = COLUMNS + tuple(key for key, _ in objectives or () if key not in COLUMNS)  # the front's axes, shown
    cells = [[_cell(key, row) for key in columns] for row in rows]
    headers = [_header(key) for key in columns]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    lines = ["  ".join(text.ljust(width) for text, width in zip(headers, widths))]
    lines += ["  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in cells]
    front = ", ".join(f"{key} {'up' if mode == 'max' else 'down'}" for key, mode in objectives or FRONT_OBJECTIVES)
    legend = (
        f"* = on the Pareto front of ({front}); ratios vs the baseline, speedups paired round by round in the "
        "runtime shown (95% interval; ≈ = the interval holds 1.00x); t2t_s = training seconds to the target accuracy"
    )
    return "\n".join(lines + [legend])


def _cell(key, row):
    if key == "time_to_target_s" and row.get("reached_target") is False:
        return "never"
    if key == "speedup" and _speedup_holds_one(row):
        return f"≈{row['speedup']:.2f}x"
    if key == "speedup_interval":
        low, high = row.get("speedup_low"), row.get("speedup_high")
        return f"{low:.2f}-{high:.2f}" if _is_number(low) and _is_number(high) else "-"
    return format_metric(key, row.get(key))


def _speedup_holds_one(row):
    low, high = row.get("speedup_low"), row.get("speedup_high")
    return _is_number(low) and _is_number(high) and low <= 1.0 <= high


def _header(key):
    if key == "front":
        return ""
    if key == "trial_id":
        return "trial"
    if key == "speedup_interval":
        return "95%"
    if key in METRICS and METRICS[key].header:
        return METRICS[key].header
    return key


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
    from orchestrator.bench import host_figures  # reads the bench/<host>.json artifacts

    for row in rows:
        for key in BENCH_METRICS:
            row.pop(key, None)
        row |= host_figures(client, row["run_id"], host) or {}
    if not any(_is_number(row.get("latency_ms")) for row in rows):
        raise ReportError(f"host {host!r} measured no trial of this sweep (run `accelsweep bench` there)")


def _measured(row):
    return row["status"] == "finished" and _is_number(row.get("latency_ms"))


def _baseline(rows):
    # the first baseline trial is the one the search started with and the measurement paired with
    candidates = [row for row in rows if row["baseline"] and _measured(row)]
    return min(candidates, key=lambda row: row.get("trial_id", ""), default=None)


def _add_ratios(row, baseline):
    if baseline is None or row["status"] != "finished" or not _is_number(row.get("test_accuracy")):
        return
    row["accuracy_drop"] = baseline["test_accuracy"] - row["test_accuracy"]
    row["compression"] = baseline["size_bytes"] / row["size_bytes"]
    if not _measured(row):
        return
    if not _is_number(row.get("speedup")):  # measured before the paired phase existed
        row["speedup"] = baseline["latency_ms"] / row["latency_ms"]
    row["front_latency_ms"] = baseline["latency_ms"] if _speedup_holds_one(row) else row["latency_ms"]


def _dominates(a, b):
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def _is_number(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def log_report(client: MlflowClient, parent_id: str, rows: list[dict]) -> None:
    """Attach the trade-off table and the Pareto front to the sweep's parent run.

    Logs `tradeoff.csv`, `tradeoff.md`, `pareto_front.json`, the plots `tradeoff.png` and
    `tradeoff.html` (when at least one trial was measured), and the parent metrics `trials`,
    `pareto_size`, `baseline_test_accuracy`, `baseline_latency_ms`, `baseline_size_bytes`; sets
    the descriptions of the parent run and of every trial's run.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        rows: from `sweep_rows`.

    Example:
        >>> log_report(client, parent_id, sweep_rows(client, client.get_run(parent_id)))
    """
    from orchestrator import descriptions, tradeoff_html  # they import this module

    descriptions.log_descriptions(client, parent_id, rows)
    client.log_text(parent_id, format_rows(rows, "csv"), "tradeoff.csv")
    client.log_text(parent_id, format_rows(rows, "markdown"), "tradeoff.md")
    front = [row for row in rows if row["front"]]
    client.log_text(parent_id, format_rows(front, "json"), "pareto_front.json")
    client.log_metric(parent_id, "trials", len(rows))
    client.log_metric(parent_id, "pareto_size", len(front))
    baseline = _baseline(rows)
    for key in ("test_accuracy", "latency_ms", "size_bytes"):
        if baseline is not None:
            client.log_metric(parent_id, f"baseline_{key}", baseline[key])
    if not _plottable(rows):
        logger.info("no trial of run %s was measured: no %s", parent_id, PLOT_FILE)
        return
    sweep = client.get_run(parent_id).data.tags.get(SWEEP_TAG, parent_id)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, PLOT_FILE)
        plot_tradeoff(rows, path, title=sweep)
        client.log_artifact(parent_id, path)
    client.log_text(parent_id, tradeoff_html.tradeoff_html(rows, title=sweep), tradeoff_html.HTML_FILE)


def plot_tradeoff(rows: list[dict], path: str, title: str = "sweep", x: str = "latency_ms") -> Figure:
    """Draw the trade-off as a PNG: test accuracy against latency (or `x`), marker area = stored size.

    Pareto-front trials are coloured and labelled with their mode strings, the accuracy/x front
    is drawn as a staircase, and the baseline is a star with dotted lines through it. The x axis
    is logarithmic when its values spread over more than LOG_SCALE_SPREAD times. Latency points
    carry the 95% interval of their paired speedup. Drawn with matplotlib's Agg canvas: no
    display needed.

    Args:
        rows: from `sweep_rows` (unmeasured trials are left out).
        path: the PNG file to write.
        title: the sweep's name, shown in the title.
        x: the metric on the x axis (lower is better), e.g. "time_to_target_s" or "cost_cpu_s".

    Returns:
        The matplotlib figure (already saved).

    Raises:
        ReportError: no trial of the sweep was measured.

    Example:
        >>> plot_tradeoff(sweep_rows(client, parent), "tradeoff.png", title="quickstart")
    """
    points = _plottable(rows, x)
    if not points:
        raise ReportError(f"nothing to plot for {title}: no trial finished with measured accuracy, {x} and size")
    figure = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    largest = max(row["size_bytes"] for row in points)

    def draw(group, **style):
        if group:
            axes.scatter(
                [row[x] for row in group],
                [row["test_accuracy"] for row in group],
                s=[_marker_area(row["size_bytes"], largest) for row in group],
                edgecolors="black",
                linewidths=0.6,
                **style,
            )

    draw([row for row in points if not row["front"] and not row["baseline"]], color="0.7", alpha=0.7, zorder=2)
    draw([row for row in points if row["front"] and not row["baseline"]], color="tab:blue", alpha=0.85, zorder=3)
    draw([row for row in points if row["baseline"]], color="tab:red", marker="*", zorder=4)
    intervals = [
        row for row in points if x == "latency_ms" and _is_number(row.get("speedup_low")) and _is_number(row.get("speedup_high"))
    ]
    if intervals:  # the paired speedup's 95% interval, as a latency range around each point
        axes.errorbar(
            [row[x] for row in intervals],
            [row["test_accuracy"] for row in intervals],
            xerr=[
                [row[x] * (1 - row["speedup"] / row["speedup_high"]) for row in intervals],
                [row[x] * (row["speedup"] / row["speedup_low"] - 1) for row in intervals],
            ],
            fmt="none",
            ecolor="0.35",
            elinewidth=0.8,
            capsize=2,
            zorder=1,
        )

    staircase = sorted((points[i] for i in pareto_front(points, [("test_accuracy", "max"), (x, "min")])), key=lambda r: r[x])
    axes.step(
        [row[x] for row in staircase],
        [row["test_accuracy"] for row in staircase],
        where="post",
        color="tab:blue",
        linestyle="--",
        linewidth=1,
        zorder=1,
    )
    baseline = _baseline(points)
    if baseline is not None:
        axes.axhline(baseline["test_accuracy"], color="tab:red", linestyle=":", linewidth=1, zorder=0)
        axes.axvline(baseline[x], color="tab:red", linestyle=":", linewidth=1, zorder=0)
    latencies = [row[x] for row in points]
    log_scale = max(latencies) > LOG_SCALE_SPREAD * min(latencies)
    if log_scale:
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.xaxis.set_minor_locator(NullLocator())
    labelled = sorted((row for row in points if row["front"] or row["baseline"]), key=lambda row: row[x])
    for index, row in enumerate(labelled):
        right_half = _axis_fraction(row[x], latencies, log_scale) > 0.5
        gap = math.sqrt(_marker_area(row["size_bytes"], largest)) / 2 + 6
        axes.annotate(
            row["mode"],
            (row[x], row["test_accuracy"]),
            xytext=(-gap if right_half else gap, gap if index % 2 == 0 else -gap - 6),
            textcoords="offset points",
            horizontalalignment="right" if right_half else "left",
            fontsize=8,
            bbox={"boxstyle": "round,pad=0.15", "facecolor": "white", "edgecolor": "none", "alpha": 0.8},
            arrowprops={"arrowstyle": "-", "color": "0.4", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 0},
            zorder=5,
        )
    axes.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if x == "latency_ms":
        runtime = points[0].get("runtime", "eager")
        label = f"inference latency in {runtime}, batch 1, median (ms; bars: 95% interval of the paired speedup)"
    else:
        label = f"{x} ({METRICS[x].unit})" if x in METRICS else x
    axes.set_xlabel(label + (", log scale" if log_scale else ""))
    axes.set_ylabel("test accuracy")
    what = "latency" if x == "latency_ms" else x
    axes.set_title(f"{title}: test accuracy vs {what} of {len(points)} measured trials\nmarker area = stored size")
    axes.grid(True, which="major", alpha=0.3)
    axes.margins(0.08)
    axes.legend(
        handles=_kind_handles(baseline is not None) + _size_handles(points, largest),
        loc="upper left",
        bbox_to_anchor=(1.01, 1),
        fontsize=8,
        labelspacing=1.2,
        borderpad=1,
        handletextpad=1.5,
    )
    figure.savefig(path, bbox_inches="tight")
    return figure


def select_trial(rows: list[dict], max_accuracy_drop: float, optimize: str = "latency") -> dict:
    """The trial to deploy: the fastest (or smallest) whose test accuracy is within the budget.

    A trial qualifies when baseline test accuracy - its test accuracy <= `max_accuracy_drop`
    (absolute: 0.01 is one point). The baseline itself qualifies, so when nothing beats it the
    answer is the baseline. Ties go to the more accurate trial.

    Args:
        rows: from `sweep_rows`.
        max_accuracy_drop: the largest accuracy loss accepted, as a fraction; a negative value asks
            for a trial more accurate than the baseline.
        optimize: "latency" (lowest latency_ms) or "size" (lowest size_bytes).

    Returns:
        The chosen row.

    Raises:
        SelectionError: the sweep has no measured baseline, or no trial qualifies.

    Example:
        >>> select_trial(sweep_rows(client, parent), 0.01)["mode"]
        'r16-q8'
    """
    baseline = _baseline(rows)
    if baseline is None:
        raise SelectionError("the sweep has no measured baseline trial, so no accuracy drop can be computed")
    key = OPTIMIZE[optimize]
    measured = [row for row in rows if _measured(row) and _is_number(row.get(key))]
    candidates = [row for row in measured if row["accuracy_drop"] <= max_accuracy_drop + _DROP_TOLERANCE]
    if not candidates:
        best = min(measured, key=lambda row: row["accuracy_drop"])
        raise SelectionError(
            f"no trial is within {max_accuracy_drop:g} of the baseline's test accuracy "
            f"{baseline['test_accuracy']:.4f}; the closest is {best['mode']} ({best['trial_id']}) "
            f"with a drop of {best['accuracy_drop']:.4f}"
        )
    return min(candidates, key=lambda row: (row[key], -row["test_accuracy"]))


def describe_choice(row: dict, max_accuracy_drop: float, optimize: str = "latency") -> str:
    """A few lines naming the trial `select_trial` chose and what it buys against the baseline.

    Args:
        row: the chosen row.
        max_accuracy_drop: the budget it was chosen under.
        optimize: "latency" or "size", as given to `select_trial`.

    Example:
        >>> print(describe_choice(select_trial(rows, 0.01), 0.01))
    """
    criterion = "fastest" if optimize == "latency" else "smallest"
    baseline_accuracy = row["test_accuracy"] + row["accuracy_drop"]
    lines = [
        f"chosen: {row['mode']} ({criterion} trial within {max_accuracy_drop:g} of the baseline's test accuracy)",
        f"  trial {row['trial_id']}, MLflow run {row['run_id']}",
        f"  test accuracy {row['test_accuracy']:.4f} "
        f"(baseline {baseline_accuracy:.4f}, drop {row['accuracy_drop']:.4f})",
        f"  latency {row['latency_ms']:.4f} ms in {row.get('runtime', 'eager')} (speedup {_cell('speedup', row)}), "
        f"size {_size_text(row['size_bytes'])} (compression {row['compression']:.2f}x)",
    ]
    if row["baseline"]:
        lines.append(f"  no accelerated trial is {'faster' if optimize == 'latency' else 'smaller'} within the budget")
    return "\n".join(lines)


def _plottable(rows, x="latency_ms"):
    keys = ("test_accuracy", x, "size_bytes")
    return [row for row in rows if _measured(row) and all(_is_number(row.get(key)) for key in keys)]


def _axis_fraction(value, values, log_scale):
    scale = math.log if log_scale else float
    low, high = scale(min(values)), scale(max(values))
    return (scale(value) - low) / (high - low) if high > low else 0.0


def _size_text(size_bytes):
    return f"{size_bytes / 1e3:.1f} kB" if size_bytes < 1e6 else f"{size_bytes / 1e6:.1f} MB"


def _marker_area(size_bytes, largest):
    return 40 + 560 * size_bytes / largest


def _kind_handles(with_baseline):
    def marker(label, color, shape="o", size=9):
        return Line2D([], [], marker=shape, linestyle="", markersize=size, color=color, markeredgecolor="black",
                      label=label)

    handles = [
        marker("on the Pareto front (accuracy, latency, size)", "tab:blue"),
        marker("other trials", "0.7"),
        Line2D([], [], color="tab:blue", linestyle="--", label="accuracy/latency front"),
    ]
    if with_baseline:
        handles.insert(0, marker("baseline (dense fp32),\ndotted lines through it", "tab:red", "*", 13))
    return handles


def _size_handles(points, largest):
    sizes = sorted({min(row["size_bytes"] for row in points), largest})
    return [
        Line2D([], [], marker="o", linestyle="", color="0.85", markeredgecolor="black",
               markersize=math.sqrt(_marker_area(size, largest)), label=f"stored size {_size_text(size)}")
        for size in sizes
    ]
