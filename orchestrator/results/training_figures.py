"""Training speed as a result: time to a quality target, training speedup, cost, and workers scaling.

Computed from what every trial already logs (per-epoch `val_accuracy` and `epoch_seconds`, its
`train_samples_per_s`, `train_seconds` and `world_size`), so it works after the fact on any sweep.
Where the quiet phase timed a trial's training step paired with the baseline's (`train_step_speedup`,
`train_epoch_s`), those are the figures: `train_speedup` is the quiet one, and `time_to_target_s`
is the epochs the trial took to the target times its quiet epoch cost. The trials' own timings,
taken while another trial trained beside them, stay as `train_speedup_provisional` and
`time_to_target_provisional_s`.
MLPerf Training's rule, time to reach a fixed quality, is the comparison: the target is the spec's
`train.target_accuracy` if it set one, else the baseline's final validation accuracy minus a
tolerance (one point by default).
"""

import math
import re

from mlflow.tracking import MlflowClient

from orchestrator.results.numbers import is_number

DEFAULT_TOLERANCE = 0.01
"""How far below the baseline's final validation accuracy the default target sits (one point)."""


def training_target(parent_run, baseline: dict | None, tolerance: float = DEFAULT_TOLERANCE) -> float | None:
    """The validation accuracy every trial races to.

    Args:
        parent_run: the sweep's parent run (its params hold `train.target_accuracy`).
        baseline: the baseline's report row (its final `val_accuracy`), or None.
        tolerance: how far below the baseline's accuracy the target sits.

    Returns:
        The target, or None when there is neither a spec target nor a baseline.

    Example:
        >>> training_target(parent, {"val_accuracy": 0.9})  # doctest: +SKIP
        0.89
    """
    stated = parent_run.data.params.get("train.target_accuracy", "null")
    if stated not in ("null", "None", ""):
        return float(stated)
    if baseline is None or not is_number(baseline.get("val_accuracy")):
        return None
    return baseline["val_accuracy"] - tolerance


def add_training_figures(
    client: MlflowClient, parent_run, rows: list[dict], baseline: dict | None, tolerance: float = DEFAULT_TOLERANCE
) -> float | None:
    """Add to each finished row: `time_to_target_s` (or `reached_target` False), `train_speedup`,
    `time_to_target_speedup`, `cost_cpu_s`, `cost_gpu_s`, and for multi-worker trials with a
    1-worker twin, `workers_speedup` and `scaling_efficiency`.

    Args:
        client: the tracking client (per-epoch histories are read from it).
        parent_run: the sweep's parent run (its params hold the resources and the target).
        rows: the report's rows; changed in place.
        baseline: the baseline's row, or None.
        tolerance: see `training_target`.

    Returns:
        The target used, or None.

    Example:
        >>> target = add_training_figures(client, parent, rows, baseline_row)  # doctest: +SKIP
    """
    target = training_target(parent_run, baseline, tolerance)
    params = parent_run.data.params
    cpus = float(params.get("resources.cpus_per_worker", 1))
    gpus = float(params.get("resources.gpus_per_worker", 0))
    for row in rows:
        if row["status"] != "finished":
            continue
        if target is not None:
            epochs, seconds = _to_target(client, row["run_id"], target)
            row["time_to_target_provisional_s"] = seconds
            quiet = epochs * row["train_epoch_s"] if epochs is not None and is_number(row.get("train_epoch_s")) else None
            row["time_to_target_s"] = seconds if quiet is None else quiet
            row["reached_target"] = epochs is not None
        if is_number(row.get("train_seconds")):
            row |= worker_cost(row["train_seconds"], row.get("world_size") or 1, cpus, gpus)
    for row in rows:
        if baseline is not None and row["status"] == "finished":
            row["train_speedup_provisional"] = _ratio(row.get("train_samples_per_s"), baseline.get("train_samples_per_s"))
            quiet = row.get("train_step_speedup")
            row["train_speedup"] = quiet if is_number(quiet) else row["train_speedup_provisional"]
            row["time_to_target_speedup"] = _ratio(baseline.get("time_to_target_s"), row.get("time_to_target_s"))
        _add_scaling(row, rows)
    return target


def worker_cost(train_seconds: float, workers: int, cpus_per_worker: float, gpus_per_worker: float) -> dict:
    """A trial's training cost in worker-seconds, per device kind.

    Args:
        train_seconds: the trial's training time.
        workers: how many workers trained it.
        cpus_per_worker: CPUs each worker held.
        gpus_per_worker: GPUs (or fractions) each worker held.

    Returns:
        {"cost_cpu_s": ..., "cost_gpu_s": ...}.

    Example:
        >>> worker_cost(10.0, 2, 1, 0.5)
        {'cost_cpu_s': 20.0, 'cost_gpu_s': 10.0}
    """
    return {
        "cost_cpu_s": train_seconds * workers * cpus_per_worker,
        "cost_gpu_s": train_seconds * workers * gpus_per_worker,
    }


def search_figures(result: dict, cpus_per_worker: float, gpus_per_worker: float, target_accuracy: float | None) -> dict:
    """The training figures a search may steer by, from one finished trial's last result alone.

    The report's figures need every trial's history and the baseline's; a search needs them as
    each trial ends. Cost needs nothing else. Time to target does when the spec states
    `train.target_accuracy`: a trial stops at the first epoch that reaches it, so its training
    seconds are its time to target (counted from where the trial last started: a trial resumed
    from a checkpoint counts the epochs since). A trial that never reached it gets no time.

    Args:
        result: the trial's last result (its final metrics).
        cpus_per_worker: see `worker_cost`.
        gpus_per_worker: see `worker_cost`.
        target_accuracy: the spec's `train.target_accuracy`, or None.

    Returns:
        Some of `cost_cpu_s`, `cost_gpu_s`, `time_to_target_s`.

    Example:
        >>> search_figures({"train_seconds": 8.0, "world_size": 1, "reached_target": 1.0}, 1, 0, 0.85)
        {'cost_cpu_s': 8.0, 'cost_gpu_s': 0.0, 'time_to_target_s': 8.0}
    """
    if not is_number(result.get("train_seconds")):
        return {}
    figures = worker_cost(result["train_seconds"], result.get("world_size") or 1, cpus_per_worker, gpus_per_worker)
    if target_accuracy is not None and result.get("reached_target") == 1.0:
        figures["time_to_target_s"] = result["train_seconds"]
    return figures


def _to_target(client, run_id, target):
    # (epochs to the target, their in-sweep seconds), or (None, None) when it never got there
    accuracy = {metric.step: metric.value for metric in client.get_metric_history(run_id, "val_accuracy")}
    seconds = {metric.step: metric.value for metric in client.get_metric_history(run_id, "epoch_seconds")}
    elapsed = 0.0
    for count, epoch in enumerate(sorted(accuracy), start=1):
        elapsed += seconds.get(epoch, math.nan)
        if accuracy[epoch] >= target:
            return count, (elapsed if math.isfinite(elapsed) else None)
    return None, None


def _add_scaling(row, rows):
    workers = row.get("world_size") or 1
    if workers <= 1 or row["status"] != "finished":
        return
    recipe = re.sub(r"-?w\d+$", "", row["mode"]) or "baseline"
    single = next(
        (
            other
            for other in rows
            if other["status"] == "finished" and (other.get("world_size") or 1) == 1 and other["mode"] == recipe
        ),
        None,
    )
    speedup = _ratio(row.get("train_samples_per_s"), single.get("train_samples_per_s") if single else None)
    if speedup is not None:
        row["workers_speedup"] = speedup
        row["scaling_efficiency"] = speedup / workers


def _ratio(numerator, denominator):
    if is_number(numerator) and is_number(denominator) and denominator > 0:
        return numerator / denominator
    return None
