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
        column: where the report shows it, lowest first: a number below 1000 is a column of the
            table (and of the CSV and JSON); 1000 and above, of the CSV and JSON only; None: neither.
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
    column: int | None = None


_TABLE = (
    Metric("val_accuracy", "epoch", "max", "fraction"),
    Metric("val_loss", "epoch", "min", "nats"),
    Metric("train_loss", "epoch", "min", "nats"),
    Metric("epoch_seconds", "epoch", None, "s"),
    Metric("train_samples_per_s", "epoch", "max", "samples/s", "train/s", ".0f", column=70),
    Metric("sparsity", "epoch", None, "fraction"),
    Metric("lr", "epoch", None, "learning rate at the epoch's last step"),
    Metric("test_accuracy", "final", "max", "fraction", "test_acc", column=10),
    Metric("test_loss", "final", "min", "nats"),
    Metric("latency_provisional_ms", "final", "min", "ms", column=1030),
    Metric("latency_b256_provisional_ms", "final", "min", "ms"),
    Metric("runtime_max_abs_diff", "final", None, "fraction of the largest logit"),
    Metric("param_count", "final", "min", "count", "params", ".0f", column=90),
    Metric("size_bytes", "final", "min", "bytes", "size_kB", "kB", column=80),
    Metric("train_seconds", "final", None, "s", column=1060),
    Metric("world_size", "final", None, "count", column=1070),
    Metric("comm_bytes_per_step", "final", "min", "bytes", "comm_kB/step", "kB", column=132),
    Metric("sync_rounds", "final", "min", "count", "syncs", ".0f", column=134),
    Metric("comm_bytes", "final", None, "bytes"),
    Metric("optimizer_steps", "final", None, "count"),
    Metric("ddp_replica_checksum_spread", "final", None, "weights"),
    Metric("ddp_ranks_trained", "final", None, "count"),
    Metric("diverged", "final", None, "flag"),
    Metric("diverged_epoch", "final", None, "epoch"),
    Metric("compile_seconds", "final", None, "s"),
    Metric("inference_compile_seconds", "final", None, "s"),
    Metric("resumed_from_epoch", "final", None, "epoch"),
    Metric("epochs_trained", "final", None, "epoch"),
    Metric("reached_target", "final", None, "flag", column=1040),
    Metric("latency_ms", "bench", "min", "ms", "lat_b1_ms", online="latency_provisional_ms", column=30),
    Metric("latency_p95_ms", "bench", None, "ms", "p95_b1_ms", column=40),
    Metric("latency_b256_ms", "bench", "min", "ms", "lat_b256_ms", online="latency_b256_provisional_ms", column=50),
    Metric("latency_b256_p95_ms", "bench", None, "ms"),
    Metric("inference_samples_per_s", "bench", None, "samples/s", "infer/s", ".0f", column=60),
    Metric("speedup", "bench", None, "ratio", "speedup", "ratio", column=100),
    Metric("speedup_low", "bench", None, "ratio", "", "ratio", column=1010),
    Metric("speedup_high", "bench", None, "ratio", "", "ratio", column=1020),
    Metric("train_step_ms", "bench", None, "ms", column=1055),
    Metric("train_epoch_s", "bench", None, "s"),
    Metric("train_step_speedup", "bench", None, "ratio"),
    Metric("train_step_speedup_low", "bench", None, "ratio", column=1056),
    Metric("train_step_speedup_high", "bench", None, "ratio", column=1057),
    Metric("accuracy_drop", "report", None, "fraction", "acc_drop", column=20),
    Metric("compression", "report", None, "ratio", "compression", "ratio", column=120),
    Metric("time_to_target_s", "report", "min", "s", "t2t_s", ".2f", online="time_to_target_s", column=130),
    Metric("time_to_target_speedup", "report", "max", "ratio", "t2t_x", "ratio", column=1050),
    Metric("train_speedup", "report", "max", "ratio", "train_x", "ratio", column=140),
    Metric("train_speedup_provisional", "report", None, "ratio", column=1058),
    Metric("time_to_target_provisional_s", "report", None, "s", column=1059),
    Metric("cost_cpu_s", "report", "min", "CPU-seconds", "cpu_s", ".1f", online="cost_cpu_s", column=1080),
    Metric("cost_gpu_s", "report", "min", "GPU-seconds", "gpu_s", ".1f", online="cost_gpu_s", column=1090),
    Metric("workers_speedup", "report", "max", "ratio", "workers_x", "ratio", column=1100),
    Metric("scaling_efficiency", "report", "max", "fraction", "scaling", ".2f", column=1110),
)

METRICS: dict[str, Metric] = {metric.name: metric for metric in _TABLE}
EPOCH_METRICS = tuple(m.name for m in _TABLE if m.phase == "epoch")
FINAL_METRICS = tuple(m.name for m in _TABLE if m.phase == "final")
TRAINED_FOR_EXPORT = "trained_for_export"
"""The key that marks a worker group's last report when it holds the trained state its trial
driver exports (`trainers.loop.train_for_export`): a hand-over between processes, never logged."""
BENCH_METRICS = tuple(m.name for m in _TABLE if m.phase == "bench")
FRONT_METRICS = tuple(m.name for m in _TABLE if m.direction is not None)
"""What a report's front may be drawn over (`accelsweep report --objectives`)."""
REPORT_COLUMNS = tuple(m.name for m in sorted(_TABLE, key=lambda m: m.column or 0) if m.column is not None)
"""The metrics the report shows, in column order (see `Metric.column`)."""
TABLE_COLUMNS = tuple(name for name in REPORT_COLUMNS if METRICS[name].column < 1000)
"""Those of the terminal and Markdown table."""
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
