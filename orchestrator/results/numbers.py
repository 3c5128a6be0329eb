"""The one number formatter of the results: every renderer (table, CSV-free text, Markdown, PNG,
HTML, run descriptions) shows a figure the way its entry in `trainers.metrics` says (`fmt`,
`unit`), so a new column needs no formatting code of its own."""

import math

from trainers.metrics import METRICS

LOG_SCALE_SPREAD = 10.0
"""A plot's latency axis turns logarithmic when the slowest trial is this many times the fastest."""
_UNITS_SHOWN = ("ms", "s", "CPU-seconds", "GPU-seconds", "samples/s")


def is_number(value: object) -> bool:
    """Whether `value` is a finite int or float (not a bool): a figure that was measured.

    Example:
        >>> is_number(0.5), is_number(float("nan")), is_number(None), is_number(True)
        (True, False, False, False)
    """
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def number_text(key: str, value: object, unit: bool = False) -> str:
    """A figure as the results show it: in its metric's format, "-" when missing.

    Args:
        key: a metric name (`trainers.metrics.METRICS`) or another row key (shown as text).
        value: the value.
        unit: follow the number with its unit where a reader needs one ("21.5 kB", "0.0119 ms");
            the table's headers carry the units instead.

    Example:
        >>> number_text("speedup", 2.345), number_text("size_bytes", 21500.0), number_text("latency_ms", None)
        ('2.35x', '21.5', '-')
        >>> number_text("size_bytes", 2.5e6, unit=True), number_text("latency_ms", 0.01188, unit=True)
        ('2.5 MB', '0.0119 ms')
    """
    if value is None or value == "":
        return "-"
    metric = METRICS.get(key)
    if metric is None or not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if metric.fmt == "ratio":
        return f"{value:.2f}x"
    if metric.fmt == "kB":
        if not unit:
            return f"{value / 1000:.1f}"
        return f"{value / 1e3:.1f} kB" if value < 1e6 else f"{value / 1e6:.1f} MB"
    text = format(value, metric.fmt)
    return f"{text} {metric.unit}" if unit and metric.unit in _UNITS_SHOWN else text


def interval_text(low: object, high: object) -> str:
    """A ratio's 95% interval, "-" when either end is missing.

    Example:
        >>> interval_text(0.98, 1.02), interval_text(None, 1.02)
        ('0.98-1.02', '-')
    """
    return f"{low:.2f}-{high:.2f}" if is_number(low) and is_number(high) else "-"
