"""Measure a deployable model as it runs: accuracy, parameter count, stored bytes, latency.

Every figure comes from the deployable itself on its own device (never from FLOPs or bit counts):
it says what it stores (`Deployable.stored_bytes`, `parameter_count`), and latency is wall-clock
time per call. Nothing here knows a technique or a layer type.
"""

import functools
import logging
import time
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from trainers.data import Dataset
from trainers.deployable import Deployable
from trainers.metrics import latency_name

logger = logging.getLogger(__name__)

Model = Callable[[torch.Tensor], torch.Tensor]
"""Anything that maps an input batch to logits: a Deployable, or an eval-mode nn.Module."""


EVAL_BATCH = 1024
"""Rows per forward call when a split is evaluated."""
PAIRED_CALL_TIMING = {"warmup": 3, "min_repeats": 5, "min_time_s": 0.03}
"""What `paired_latencies` passes `measure_latency` for one candidate, batch size and round."""


def evaluate(model: Model, x: torch.Tensor, y: torch.Tensor, batch_size: int = EVAL_BATCH) -> dict:
    """Accuracy and mean cross-entropy of a classifier, without gradients.

    Args:
        model: the classifier: a Deployable (an `EagerDeployable` puts its module in eval mode).
        x: inputs, on the model's device.
        y: integer class labels, on the model's device.
        batch_size: rows per forward call.

    Returns:
        {"accuracy": fraction of argmax predictions equal to y, "loss": mean cross-entropy}.

    Example:
        >>> evaluate(torch.nn.Identity(), torch.tensor([[2.0, 0.0], [0.0, 1.0]]), torch.tensor([0, 0]))
        {'accuracy': 0.5, 'loss': 0.720...}
    """
    return evaluate_batches(model, ((x[start : start + batch_size], y[start : start + batch_size]) for start in range(0, len(x), batch_size)))


def evaluate_batches(model: Model, batches) -> dict:
    """`evaluate` over batches as they come (a streamed split), holding one batch at a time.

    Args:
        model: the classifier.
        batches: (inputs, labels) pairs, on the model's device.

    Returns:
        {"accuracy", "loss"} over all the batches' rows.

    Example:
        >>> evaluate_batches(torch.nn.Identity(), [(torch.tensor([[2.0, 0.0]]), torch.tensor([0]))])["accuracy"]
        1.0
    """
    correct, loss_sum, rows = 0, 0.0, 0
    with torch.inference_mode():
        for inputs, labels in batches:
            logits = model(inputs)
            correct += (logits.argmax(dim=1) == labels).sum().item()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
            rows += len(labels)
    if rows == 0:
        raise ValueError("evaluate needs at least one row, got none")
    return {"accuracy": correct / rows, "loss": loss_sum / rows}


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: Model,
    example: torch.Tensor,
    *,
    warmup: int = 5,
    min_repeats: int = 20,
    max_repeats: int = 200,
    min_time_s: float = 0.2,
    threads: int = 1,
) -> dict:
    """Wall-clock latency of one forward call on `example`, on the example's device.

    A `Deployable` is timed on its `native_call`: the runtime as its users call it (ONNX Runtime's
    `session.run` on a numpy array, a module on a tensor), the example converted once beforehand.

    Runs `warmup` untimed calls, then timed calls until both `min_repeats` calls and
    `min_time_s` seconds of timed calls are reached, or `max_repeats` calls are made. CPU
    threads are set to `threads` for the duration and restored; CUDA is synchronised around
    each call.

    Args:
        model: the deployable model.
        example: one input batch, on the model's device.
        warmup: untimed calls first.
        min_repeats: fewest timed calls.
        max_repeats: most timed calls.
        min_time_s: least total timed seconds, unless `max_repeats` is reached first.
        threads: torch CPU threads while measuring.

    Returns:
        {"median_ms": float, "p95_ms": float, "repeats": int, "times_ms": every timed call}.

    Example:
        >>> latency = measure_latency(torch.nn.Linear(64, 10), torch.randn(1, 64), min_time_s=0.01)
        >>> sorted(latency), latency["median_ms"] > 0
        (['median_ms', 'p95_ms', 'repeats', 'times_ms'], True)
    """
    call = model.native_call(example) if isinstance(model, Deployable) else functools.partial(model, example)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                call()
            times_s, timed_s = [], 0.0  # a running total: the least work between two timed calls
            while len(times_s) < max_repeats and (len(times_s) < min_repeats or timed_s < min_time_s):
                _synchronize(example.device)
                start = time.perf_counter()
                call()
                _synchronize(example.device)
                times_s.append(time.perf_counter() - start)
                timed_s += times_s[-1]
    finally:
        torch.set_num_threads(previous_threads)
    times_ms = np.array(times_s) * 1000.0
    return {
        "median_ms": float(np.median(times_ms)),
        "p95_ms": float(np.percentile(times_ms, 95)),
        "repeats": len(times_ms),
        "times_ms": times_ms.tolist(),
    }


def measure_inference(
    model: Model,
    sample: torch.Tensor,
    *,
    batch_sizes: tuple[int, ...] = (1, 256),
    threads: int = 1,
) -> dict[str, float]:
    """Latency at each batch size and throughput at the largest, for a trial's metrics.

    Batches are the first rows of `sample`, repeated cyclically when it has fewer rows than the
    batch size. Batch 1 gives "latency_ms" and "latency_p95_ms"; batch n > 1 gives
    "latency_b{n}_ms" and "latency_b{n}_p95_ms"; "inference_samples_per_s" is the largest batch
    size divided by its median latency.

    Args:
        model: the deployable model.
        sample: input rows, on the model's device.
        batch_sizes: batch sizes to time.
        threads: torch CPU threads while measuring.

    Returns:
        With the default batch sizes exactly: "latency_ms", "latency_p95_ms", "latency_b256_ms",
        "latency_b256_p95_ms", "inference_samples_per_s".

    Example:
        >>> figures = measure_inference(torch.nn.Linear(64, 10), torch.randn(8, 64))
        >>> sorted(figures), figures["inference_samples_per_s"] > 0
        (['inference_samples_per_s', 'latency_b256_ms', 'latency_b256_p95_ms', 'latency_ms', 'latency_p95_ms'], True)
    """
    if len(sample) == 0:
        raise ValueError("measure_inference needs at least one sample row, got 0")
    metrics = {}
    for batch_size in batch_sizes:
        rows = torch.arange(batch_size, device=sample.device) % len(sample)
        latency = measure_latency(model, sample[rows], threads=threads)
        metrics[latency_name(batch_size)] = latency["median_ms"]
        metrics[latency_name(batch_size, "p95_ms")] = latency["p95_ms"]
    largest = max(batch_sizes)
    metrics["inference_samples_per_s"] = largest / (metrics[latency_name(largest)] / 1000.0)
    logger.info("inference on %s: %s", sample.device, metrics)
    return metrics


def measure_deployable(
    deployable: Deployable, data: Dataset, device: torch.device, threads: int = 1
) -> dict[str, float]:
    """Everything a trial reports about its deployable: test accuracy and loss, parameter count,
    stored bytes, latency at batch 1 and 256, throughput.

    Args:
        deployable: the trial's deployable, on its device.
        data: the data set as the deployable takes it (its raw test split is used; a
            `StreamedDataset`'s is streamed, its first test rows are the latency sample).
        device: where the deployable runs (the test split is moved there).
        threads: CPU threads while timing.

    Returns:
        "test_accuracy", "test_loss", "param_count", "size_bytes" and `measure_inference`'s keys.

    Example:
        >>> from trainers.data import load_dataset
        >>> from trainers.deployable import EagerDeployable
        >>> deployable = EagerDeployable(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10)))
        >>> measure_deployable(deployable, load_dataset("digits"), torch.device("cpu"))["size_bytes"]
        4453.0
    """
    batches = data.split_batches("test", EVAL_BATCH)  # a streamed test split is read batch by batch
    test = evaluate_batches(deployable, ((x.to(device), y.to(device)) for x, y in batches))
    x_test = data.x_test[:256].to(device)
    return {
        "test_accuracy": test["accuracy"],
        "test_loss": test["loss"],
        "param_count": float(deployable.parameter_count()),
        "size_bytes": float(deployable.stored_bytes()),
        **measure_inference(deployable, x_test[:256], threads=threads),
    }


def paired_latencies(
    candidates: dict[str, Model | list[Model]],
    baseline: str,
    samples: dict[str, torch.Tensor],
    *,
    batch_sizes: tuple[int, ...] = (1, 256),
    rounds: int = 7,
    min_rounds: int = 5,
    precision: float = 0.05,
    threads: int = 1,
    min_time_s: float = PAIRED_CALL_TIMING["min_time_s"],
    control: str | None = None,
) -> dict[str, dict[int, dict]]:
    """Time every candidate against the baseline in interleaved rounds, as a paired A/B benchmark.

    In each round every candidate still timed is timed once per batch size (`measure_latency`,
    its own warm-up), with the baseline, one batch size after the other, in an order that rotates
    from round to round; its per-round speedup is the baseline's median in that round divided by
    its own. Drift over the run (another process, thermal state) hits both sides of a round alike,
    so the ratios stay honest where two separate timings would not. The rounds are adaptive, as
    `torch.utils.benchmark`'s `adaptive_autorange` stops once its spread is small: after
    `min_rounds`, a candidate whose per-round speedups' 95% interval is narrower than `precision`
    of their median at every batch size leaves the rotation; `rounds` caps the rest.

    A candidate may be given as several copies of one model (ONNX Runtime sessions of one file,
    which differ in speed by where each was placed in memory): round `i` times copy `i mod n`, so
    its median is taken over the copies rather than one copy's draw.

    Args:
        candidates: deployables by name, each one model or a list of copies of it; `baseline`
            must be one of them.
        baseline: the name of the reference.
        samples: input rows by candidate name (candidates may read differently shaped inputs,
            e.g. after feature selection), on each candidate's device.
        batch_sizes: batch sizes to time.
        rounds: the most interleaved rounds (at least 3).
        min_rounds: the fewest rounds a candidate is timed in (at most `rounds`).
        precision: the interval width, relative to the median speedup, that ends a candidate's rounds.
        threads: torch CPU threads while timing.
        min_time_s: least timed seconds per candidate, batch size and round.
        control: the name of a second copy of the baseline among the candidates (an A/A
            control). Two copies of one model differ a little in speed (memory placement, order
            in the round); the control's interval measures that error, and every interval is
            widened by it (divided and multiplied by its largest distance from 1.0), so a trial
            whose graph is the baseline's shows an interval holding 1.0.

    Returns:
        {name: {batch size: {"median_ms", "p95_ms", "speedup", "speedup_low", "speedup_high",
        "round_speedups"}}}: median over its rounds of the per-round medians, p95 of every timed
        call, and the median per-round speedup with its 95% bootstrap interval.

    Example:
        >>> a, b, x = torch.nn.Linear(64, 10), torch.nn.Linear(64, 10), torch.randn(8, 64)
        >>> figures = paired_latencies({"baseline": a, "r8": b}, "baseline", {"baseline": x, "r8": x}, batch_sizes=(1,), rounds=3)
        >>> sorted(figures["r8"][1])
        ['median_ms', 'p95_ms', 'round_speedups', 'speedup', 'speedup_high', 'speedup_low']
    """
    if baseline not in candidates:
        raise ValueError(f"the baseline {baseline!r} is not among the candidates {sorted(candidates)}")
    if rounds < 3:
        raise ValueError(f"paired timing needs at least 3 rounds, got {rounds}")
    medians = {name: {batch: {} for batch in batch_sizes} for name in candidates}  # round index -> median
    all_calls = {name: {batch: [] for batch in batch_sizes} for name in candidates}
    copies = {name: model if isinstance(model, list) else [model] for name, model in candidates.items()}
    active = [name for name in candidates if name != baseline]
    for round_index in range(rounds):
        timed = [baseline] + active
        shift = round_index % len(timed)
        for batch in batch_sizes:  # a batch size at a time: batch 1 after batch 256's calls ran ~2 us slower here
            for name in timed[shift:] + timed[:shift]:
                sample = samples[name]
                rows = torch.arange(batch, device=sample.device) % len(sample)
                copy = copies[name][round_index % len(copies[name])]
                timing = measure_latency(copy, sample[rows], **(PAIRED_CALL_TIMING | {"min_time_s": min_time_s}), threads=threads)
                medians[name][batch][round_index] = timing["median_ms"]
                all_calls[name][batch].extend(timing["times_ms"])
        if round_index + 1 >= min(min_rounds, rounds):
            active = [name for name in active if not _tight(medians, baseline, name, batch_sizes, precision)]
        if not active:
            break
    figures = {}
    for name in candidates:
        figures[name] = {}
        for batch in batch_sizes:
            ratios = _round_ratios(medians, baseline, name, batch)
            low, high = bootstrap_median_interval(ratios)
            if control is not None:
                control_low, control_high = bootstrap_median_interval(_round_ratios(medians, baseline, control, batch))
                spread = max(control_high, 1.0 / control_low)  # how far from 1.0 an identical model lands
                low, high = low / spread, high * spread
            figures[name][batch] = {
                "median_ms": float(np.median(list(medians[name][batch].values()))),
                "p95_ms": float(np.percentile(all_calls[name][batch], 95)),
                "speedup": float(np.median(ratios)),
                "speedup_low": low,
                "speedup_high": high,
                "round_speedups": [float(ratio) for ratio in ratios],
            }
    return figures


def _round_ratios(medians, baseline, name, batch):
    own = medians[name][batch]
    return np.array([medians[baseline][batch][index] / own[index] for index in sorted(own)])


def _tight(medians, baseline, name, batch_sizes, precision):
    for batch in batch_sizes:
        ratios = _round_ratios(medians, baseline, name, batch)
        low, high = bootstrap_median_interval(ratios, resamples=1000)
        if high - low > precision * float(np.median(ratios)):
            return False
    return True


def bootstrap_median_interval(values, confidence: float = 0.95, resamples: int = 4000, seed: int = 0) -> tuple[float, float]:
    """A percentile-bootstrap confidence interval for the median of `values`.

    Args:
        values: the observations (e.g. per-round speedups).
        confidence: the interval's coverage.
        resamples: bootstrap resamples.
        seed: the resampling generator's seed (the same values give the same interval).

    Returns:
        (low, high).

    Example:
        >>> bootstrap_median_interval([0.98, 1.01, 1.0, 0.99, 1.02, 1.0, 0.97])
        (0.98, 1.01)
    """
    values = np.asarray(values, dtype=float)
    generator = np.random.default_rng(seed)
    medians = np.median(generator.choice(values, size=(resamples, len(values)), replace=True), axis=1)
    tail = (1 - confidence) / 2 * 100
    return float(np.percentile(medians, tail)), float(np.percentile(medians, 100 - tail))
