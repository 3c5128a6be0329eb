"""Measure a deployable model as it runs: accuracy, parameter count, stored bytes, latency.

Every figure comes from the model itself on its own device (never from FLOPs or bit counts):
size is the length of its saved state_dict, latency is wall-clock time per forward call.
"""

import io
import logging
import time

import numpy as np
import torch
import torch.ao.nn.quantized as quantized
import torch.nn.functional as F
from torch import nn

from trainers.techniques.prune import SparseLinear
from trainers.techniques.quantize import PackedWeight

logger = logging.getLogger(__name__)


def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1024) -> dict:
    """Accuracy and mean cross-entropy of a classifier, in eval mode without gradients.

    Args:
        model: the classifier; it is put in eval mode.
        x: inputs, on the model's device.
        y: integer class labels, on the model's device.
        batch_size: rows per forward call.

    Returns:
        {"accuracy": fraction of argmax predictions equal to y, "loss": mean cross-entropy}.

    Example:
        >>> evaluate(model, x_test, y_test)
        {'accuracy': 0.91, 'loss': 0.27}
    """
    model.eval()
    correct = 0
    loss_sum = 0.0
    with torch.inference_mode():
        for start in range(0, len(x), batch_size):
            logits = model(x[start : start + batch_size])
            labels = y[start : start + batch_size]
            correct += (logits.argmax(dim=1) == labels).sum().item()
            loss_sum += F.cross_entropy(logits, labels, reduction="sum").item()
    return {"accuracy": correct / len(x), "loss": loss_sum / len(x)}


def _stored_tensor_numels(module: nn.Module) -> list[int]:
    if isinstance(module, quantized.Linear):
        bias = module.bias()
        return [module.weight().numel()] + ([] if bias is None else [bias.numel()])
    if isinstance(module, PackedWeight):
        return [module.weight_shape.numel()] + ([] if module.bias is None else [module.bias.numel()])
    if isinstance(module, SparseLinear):  # the non-zero weights it stores
        return [module.values.numel()] + ([] if module.bias is None else [module.bias.numel()])
    return [parameter.numel() for parameter in module.parameters(recurse=False)]


def count_parameters(model: nn.Module) -> int:
    """Number of logical weight and bias elements the model stores.

    Counts ordinary parameters plus the weights and biases of quantised Linear layers (whose
    .parameters() is empty), of packed low-bit layers (logical elements, not bytes) and of sparse
    layers (their stored non-zero weights).
    Buffers such as BatchNorm running statistics are not counted.

    Args:
        model: any model, float or quantised.

    Returns:
        The element count.

    Example:
        >>> count_parameters(nn.Linear(4, 2))
        10
    """
    return sum(sum(_stored_tensor_numels(module)) for module in model.modules())


def stored_size_bytes(model: nn.Module) -> int:
    """Bytes of `torch.save(model.state_dict())`: what storing the model really costs.

    Args:
        model: any model.

    Returns:
        The length of the serialised state_dict.

    Example:
        >>> stored_size_bytes(nn.Linear(256, 256)) > 256 * 256 * 4
        True
    """
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_latency(
    model: nn.Module,
    example: torch.Tensor,
    *,
    warmup: int = 5,
    min_repeats: int = 20,
    max_repeats: int = 200,
    min_time_s: float = 0.2,
    threads: int = 1,
) -> dict:
    """Wall-clock latency of one forward call on `example`, on the example's device.

    Runs `warmup` untimed calls, then timed calls until both `min_repeats` calls and
    `min_time_s` seconds of timed calls are reached, or `max_repeats` calls are made. CPU
    threads are set to `threads` for the duration and restored; CUDA is synchronised around
    each call.

    Args:
        model: the deployable model; it is put in eval mode.
        example: one input batch, on the model's device.
        warmup: untimed calls first.
        min_repeats: fewest timed calls.
        max_repeats: most timed calls.
        min_time_s: least total timed seconds, unless `max_repeats` is reached first.
        threads: torch CPU threads while measuring.

    Returns:
        {"median_ms": float, "p95_ms": float, "repeats": int}.

    Example:
        >>> measure_latency(nn.Linear(64, 10), torch.randn(1, 64))
        {'median_ms': 0.006, 'p95_ms': 0.008, 'repeats': 200}
    """
    model.eval()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        with torch.inference_mode():
            for _ in range(warmup):
                model(example)
            times_s = []
            while len(times_s) < max_repeats and (len(times_s) < min_repeats or sum(times_s) < min_time_s):
                _synchronize(example.device)
                start = time.perf_counter()
                model(example)
                _synchronize(example.device)
                times_s.append(time.perf_counter() - start)
    finally:
        torch.set_num_threads(previous_threads)
    times_ms = np.array(times_s) * 1000.0
    return {
        "median_ms": float(np.median(times_ms)),
        "p95_ms": float(np.percentile(times_ms, 95)),
        "repeats": len(times_ms),
    }


def _latency_key(batch_size: int) -> str:
    return "latency" if batch_size == 1 else f"latency_b{batch_size}"


def measure_inference(
    model: nn.Module,
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
        >>> measure_inference(model, x_test[:256])["inference_samples_per_s"]
        181000.0
    """
    if len(sample) == 0:
        raise ValueError("measure_inference needs at least one sample row, got 0")
    metrics = {}
    for batch_size in batch_sizes:
        rows = torch.arange(batch_size, device=sample.device) % len(sample)
        latency = measure_latency(model, sample[rows], threads=threads)
        metrics[f"{_latency_key(batch_size)}_ms"] = latency["median_ms"]
        metrics[f"{_latency_key(batch_size)}_p95_ms"] = latency["p95_ms"]
    largest = max(batch_sizes)
    metrics["inference_samples_per_s"] = largest / (metrics[f"{_latency_key(largest)}_ms"] / 1000.0)
    logger.info("inference on %s: %s", sample.device, metrics)
    return metrics
