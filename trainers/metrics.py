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
            (reported once, when the trial ends), "bench" (the quiet, paired measurement phase
            after the trials) or "report" (derived by the report from the rows).
        direction: "max" or "min" when a search or the front may optimise it, else None.
        unit: what the number counts, e.g. "fraction", "ms", "bytes", "s".
        header: the report column's header.
        fmt: the report cell's format: a format spec such as ".4f", "ratio" (1.23x) or "kB".
        online: for a "bench" or "report" metric a search may optimise, what the search sees
            while it runs: a bench metric's provisional figure, which the trials report (the quiet
            one comes only after every trial ended); for a report metric, the same figure worked
            out from each finished trial alone (`training_figures.search_figures`).

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
    online: str | None = None


_TABLE = (
    Metric("val_accuracy", "epoch", "max", "fraction"),
    Metric("val_loss", "epoch", "min", "nats"),
    Metric("train_loss", "epoch", "min", "nats"),
    Metric("epoch_seconds", "epoch", None, "s"),
    Metric("train_samples_per_s", "epoch", "max", "samples/s", "train/s", ".0f"),
    Metric("sparsity", "epoch", None, "fraction"),
    Metric("lr", "epoch", None, "learning rate at the epoch's last step"),
    Metric("test_accuracy", "final", "max", "fraction", "test_acc"),
    Metric("test_loss", "final", "min", "nats"),
    Metric("latency_provisional_ms", "final", "min", "ms"),
    Metric("latency_b256_provisional_ms", "final", "min", "ms"),
    Metric("runtime_max_abs_diff", "final", None, "fraction of the largest logit"),
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
    Metric("epochs_trained", "final", None, "epoch"),
    Metric("reached_target", "final", None, "flag"),
    Metric("latency_ms", "bench", "min", "ms", "lat_b1_ms", online="latency_provisional_ms"),
    Metric("latency_p95_ms", "bench", None, "ms", "p95_b1_ms"),
    Metric("latency_b256_ms", "bench", "min", "ms", "lat_b256_ms", online="latency_b256_provisional_ms"),
    Metric("latency_b256_p95_ms", "bench", None, "ms"),
    Metric("inference_samples_per_s", "bench", None, "samples/s", "infer/s", ".0f"),
    Metric("speedup", "bench", None, "ratio", "speedup", "ratio"),
    Metric("speedup_low", "bench", None, "ratio", "", "ratio"),
    Metric("speedup_high", "bench", None, "ratio", "", "ratio"),
    Metric("accuracy_drop", "report", None, "fraction", "acc_drop"),
    Metric("compression", "report", None, "ratio", "compression", "ratio"),
    Metric("time_to_target_s", "report", "min", "s", "t2t_s", ".2f", online="time_to_target_s"),
    Metric("time_to_target_speedup", "report", "max", "ratio", "t2t_x", "ratio"),
    Metric("train_speedup", "report", "max", "ratio", "train_x", "ratio"),
    Metric("cost_cpu_s", "report", "min", "CPU-seconds", "cpu_s", ".1f", online="cost_cpu_s"),
    Metric("cost_gpu_s", "report", "min", "GPU-seconds", "gpu_s", ".1f", online="cost_gpu_s"),
    Metric("workers_speedup", "report", "max", "ratio", "workers_x", "ratio"),
    Metric("scaling_efficiency", "report", "max", "fraction", "scaling", ".2f"),
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in _TABLE}
EPOCH_METRICS = tuple(m.name for m in _TABLE if m.phase == "epoch")
FINAL_METRICS = tuple(m.name for m in _TABLE if m.phase == "final")
BENCH_METRICS = tuple(m.name for m in _TABLE if m.phase == "bench")
FRONT_METRICS = tuple(m.name for m in _TABLE if m.direction is not None)
"""What a report's front may be drawn over (`accelsweep report --objectives`)."""
OBJECTIVES = tuple(m.name for m in _TABLE if m.direction is not None and (m.phase in ("epoch", "final") or m.online))
"""What `search.metric` may name: measured metrics with a direction (a quiet latency is searched
by its provisional figure: `online_name`; time to target and cost by each trial's own figure)."""
EPOCH_OBJECTIVES = tuple(name for name in OBJECTIVES if METRICS[name].phase == "epoch")
"""What a scheduler that stops trials early (ASHA) may compare: reported after every epoch."""


def online_name(name: str) -> str:
    """The metric a search sees for `name` while the trials run.

    Example:
        >>> online_name("latency_ms"), online_name("val_accuracy")
        ('latency_provisional_ms', 'val_accuracy')
    """
    return METRICS[name].online or name if name in METRICS else name


def latency_name(batch_size: int, suffix: str = "ms") -> str:
    """The metric of the primary runtime's latency at one batch size.

    Example:
        >>> latency_name(1), latency_name(256), latency_name(256, "p95_ms")
        ('latency_ms', 'latency_b256_ms', 'latency_b256_p95_ms')
    """
    return f"latency_{suffix}" if batch_size == 1 else f"latency_b{batch_size}_{suffix}"


def runtime_latency_name(runtime: str, batch_size: int) -> str:
    """The metric holding one runtime's quiet median latency at one batch size.

    Example:
        >>> runtime_latency_name("onnxruntime", 1), runtime_latency_name("eager", 256)
        ('latency_onnxruntime_ms', 'latency_eager_b256_ms')
    """
    return f"latency_{runtime}_ms" if batch_size == 1 else f"latency_{runtime}_b{batch_size}_ms"


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
