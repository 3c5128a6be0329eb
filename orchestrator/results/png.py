"""The trade-off plot as a PNG (matplotlib, Agg canvas: no display needed)."""

import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FormatStrFormatter, LogLocator, NullLocator, PercentFormatter

from orchestrator.results.front import pareto_front
from orchestrator.results.numbers import LOG_SCALE_SPREAD, is_number, number_text
from orchestrator.results.rows import ReportError, baseline_of, is_measured
from trainers.metrics import METRICS

PLOT_FILE = "tradeoff.png"


def plot_tradeoff(rows: list[dict], path: str, title: str = "sweep", x: str = "latency_ms") -> Figure:
    """Draw the trade-off as a PNG: test accuracy against latency (or `x`), marker area = stored size.

    Pareto-front trials are coloured and labelled with their recipe labels, the accuracy/x front
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
        >>> plot_tradeoff(sweep_rows(client, parent), "tradeoff.png", title="quickstart")  # doctest: +SKIP
    """
    points = plottable(rows, x)
    if not points:
        raise ReportError(f"nothing to plot for {title}: no trial finished with measured accuracy, {x} and size")
    figure = Figure(figsize=(10, 6.5), dpi=110, layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    largest = max(row["size_bytes"] for row in points)
    _draw_points(axes, points, x, largest)
    _draw_intervals(axes, points, x)
    baseline = _draw_front_and_baseline(axes, points, x)
    latencies = [row[x] for row in points]
    log_scale = max(latencies) > LOG_SCALE_SPREAD * min(latencies)
    if log_scale:
        axes.set_xscale("log")
        axes.xaxis.set_major_locator(LogLocator(subs=(1, 2, 5)))
        axes.xaxis.set_major_formatter(FormatStrFormatter("%g"))
        axes.xaxis.set_minor_locator(NullLocator())
    _label_points(axes, points, x, largest, log_scale)
    _name_axes(axes, points, x, title, log_scale)
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


def _draw_points(axes, points, x, largest):
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


def _draw_intervals(axes, points, x):
    intervals = [
        row for row in points if x == "latency_ms" and is_number(row.get("speedup_low")) and is_number(row.get("speedup_high"))
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


def _draw_front_and_baseline(axes, points, x):
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
    baseline = baseline_of(points)
    if baseline is not None:
        axes.axhline(baseline["test_accuracy"], color="tab:red", linestyle=":", linewidth=1, zorder=0)
        axes.axvline(baseline[x], color="tab:red", linestyle=":", linewidth=1, zorder=0)
    return baseline


def _label_points(axes, points, x, largest, log_scale):
    latencies = [row[x] for row in points]
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


def _name_axes(axes, points, x, title, log_scale):
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


def plottable(rows, x="latency_ms"):
    keys = ("test_accuracy", x, "size_bytes")
    return [row for row in rows if is_measured(row) and all(is_number(row.get(key)) for key in keys)]


def _axis_fraction(value, values, log_scale):
    scale = math.log if log_scale else float
    low, high = scale(min(values)), scale(max(values))
    return (scale(value) - low) / (high - low) if high > low else 0.0


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
               markersize=math.sqrt(_marker_area(size, largest)), label=f"stored size {number_text('size_bytes', size, unit=True)}")
        for size in sizes
    ]
