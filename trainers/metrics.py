"""The metrics table: every figure a trial reports or the report derives, in one place.

Spec validation (which metrics a search may optimise), the training loop (what it reports when),
tracking (what it logs per epoch and at the end), the report (columns, headers, formats) and the
registry all read this table. It imports nothing heavy, so `accelsweep report` and `validate`
stay free of torch and Ray.
"""

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    """One metric.

    Attributes:
        name: the MLflow metric name.
        phase: "epoch" (reported after every epoch, logged with the epoch as step), "final"
            (reported once, when the trial ends) or "report" (derived by the report from the rows).
        direction: "max" or "min" when a search or the front may optimise it, else None.
        unit: what the number counts, e.g. "fraction", "ms", "bytes", "s".
        header: the report column's header.
        fmt: the report cell's format: a format spec such as ".4f", "ratio" (1.23x) or "kB".

    Example:
        >>> METRICS["latency_ms"].direction
        'min'
    """

    name: str
    phase: str
    direction: str | None
    unit: str
    header: str = ""
    fmt: str = ".4f"


_TABLE = (
    Metric("val_accuracy", "epoch", "max", "fraction"),
    Metric("val_loss", "epoch", "min", "nats"),
    Metric("train_loss", "epoch", "min", "nats"),
    Metric("epoch_seconds", "epoch", None, "s"),
    Metric("train_samples_per_s", "epoch", "max", "samples/s", "train/s", ".0f"),
    Metric("sparsity", "epoch", None, "fraction"),
    Metric("test_accuracy", "final", "max", "fraction", "test_acc"),
    Metric("test_loss", "final", "min", "nats"),
    Metric("latency_ms", "final", "min", "ms", "lat_b1_ms"),
    Metric("latency_p95_ms", "final", "min", "ms", "p95_b1_ms"),
    Metric("latency_b256_ms", "final", "min", "ms", "lat_b256_ms"),
    Metric("latency_b256_p95_ms", "final", "min", "ms"),
    Metric("inference_samples_per_s", "final", "max", "samples/s", "infer/s", ".0f"),
    Metric("param_count", "final", "min", "count", "params", ".0f"),
    Metric("size_bytes", "final", "min", "bytes", "size_kB", "kB"),
    Metric("train_seconds", "final", None, "s"),
    Metric("world_size", "final", None, "count"),
    Metric("ddp_replica_checksum_spread", "final", None, "weights"),
    Metric("ddp_ranks_trained", "final", None, "count"),
    Metric("diverged", "final", None, "flag"),
    Metric("diverged_epoch", "final", None, "epoch"),
    Metric("compile_seconds", "final", None, "s"),
    Metric("inference_compile_seconds", "final", None, "s"),
    Metric("resumed_from_epoch", "final", None, "epoch"),
    Metric("accuracy_drop", "report", None, "fraction", "acc_drop"),
    Metric("speedup", "report", None, "ratio", "speedup", "ratio"),
    Metric("compression", "report", None, "ratio", "compression", "ratio"),
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in _TABLE}
EPOCH_METRICS = tuple(m.name for m in _TABLE if m.phase == "epoch")
FINAL_METRICS = tuple(m.name for m in _TABLE if m.phase == "final")
OBJECTIVES = tuple(m.name for m in _TABLE if m.direction is not None and m.phase != "report")
"""What `search.metric` may name: measured metrics with a direction."""
EPOCH_OBJECTIVES = tuple(name for name in OBJECTIVES if METRICS[name].phase == "epoch")
"""What a scheduler that stops trials early (ASHA) may compare: reported after every epoch."""


def format_metric(name: str, value: object) -> str:
    """A report cell: the value formatted as the table says, "-" when missing.

    Args:
        name: a metric name, or another column (shown as text).
        value: the value.

    Example:
        >>> format_metric("speedup", 2.345), format_metric("size_bytes", 21500.0), format_metric("latency_ms", None)
        ('2.35x', '21.5', '-')
    """
    if value is None:
        return "-"
    metric = METRICS.get(name)
    if metric is None or not isinstance(value, (int, float)):
        return f"{value:.4f}" if isinstance(value, float) else str(value)
    if metric.fmt == "ratio":
        return f"{value:.2f}x"
    if metric.fmt == "kB":
        return f"{value / 1000:.1f}"
    return format(value, metric.fmt)
