"""Latency and stored size of the same trained models in each deployment runtime, against eager fp32.

Models: the quickstart MLP (64-64-10), the Fashion-MNIST MLP (784-256-128-10) and the CNN
(channels 16/32, 1x28x28 inputs). Candidates, each exported with `trainers.runtimes.export_to`
from the model exactly as a trial leaves it (`trainers.loop.build_trial_model`, weight transforms
baked, the techniques' eager export): eager, torch.compile and AOTInductor in fp32; ONNX Runtime
fp32, int8 and int4; the techniques' eager int8; low rank in eager, ONNX Runtime fp32 and
ONNX Runtime int8. No training: weights are the seeded initial ones (latency does not depend on
their values; accuracy is the sweep's business).

Timing: one thread everywhere; every candidate warmed up at both batch sizes, then timed in
interleaved rounds: each round times every candidate once (a block of calls lasting about 20 ms,
per-call mean), in an order that rotates by one each round, at batch 1 and at batch 256. The
speedup of a candidate is the median over rounds of (eager fp32's time in that round / its time
in that round), so load that drifts between rounds hits both sides of each ratio alike; the
quartiles of the per-round ratios show how much the machine's load moved them.

Run: python benchmarks/runtimes.py   (about 3 minutes on 2 cores, most of it AOTInductor builds)
"""

import dataclasses
import logging
import statistics
import time

import torch

from trainers.data import load_dataset
from trainers.loop import TrialRecipe, build_trial_model, export_deployable
from trainers.runtimes import RuntimeUnavailable, export_to, runtime_versions

ROUNDS = 15
BLOCK_SECONDS = 0.02
BATCH_SIZES = (1, 256)
CPU = torch.device("cpu")
MODELS = {  # title: (recipe, input shape, low rank)
    "quickstart MLP 64-64-10": (TrialRecipe(model_kind="mlp", hidden=(64,)), (64,), 16),
    "Fashion MLP 784-256-128-10": (TrialRecipe(model_kind="mlp", hidden=(256, 128)), (784,), 32),
    "CNN 16/32 ch, 1x28x28": (TrialRecipe(model_kind="cnn", channels=(16, 32)), (1, 28, 28), 8),
}


def candidates(rank):
    return {  # label: (runtime, technique choices)
        "eager fp32": ("eager", {}),
        "compile fp32": ("compile", {}),
        "aotinductor fp32": ("aotinductor", {}),
        "ORT fp32": ("onnxruntime", {}),
        "ORT int8": ("onnxruntime", {"quant_bits": 8}),
        "ORT int4": ("onnxruntime", {"quant_bits": 4}),
        "eager int8 (torch.ao)": ("eager", {"quant_bits": 8}),
        f"eager r{rank}": ("eager", {"rank": rank}),
        f"ORT r{rank} fp32": ("onnxruntime", {"rank": rank}),
        f"ORT r{rank} int8": ("onnxruntime", {"rank": rank, "quant_bits": 8}),
    }


def dataset(shape):
    flat = load_dataset("synthetic", n_samples=1500, n_features=int(torch.Size(shape).numel())).preprocessed()
    return dataclasses.replace(
        flat, **{split: getattr(flat, split).reshape(-1, *shape) for split in ("x_train", "x_val", "x_test")}
    )


def export(recipe, data, runtime, choices):
    model, data, configs, _ = build_trial_model(dataclasses.replace(recipe, choices=choices, epochs=1), data)
    exported = export_deployable(model, configs, data.preprocess(), data.x_test[:1])
    return export_to(runtime, exported.inputs_for_runtimes(data.x_test[:8], data.x_train[:256], threads=1))


def seconds_per_call(deployable, batch, calls):
    started = time.perf_counter()
    for _ in range(calls):
        deployable(batch)
    return (time.perf_counter() - started) / calls


def compare(title, recipe, shape, rank):
    data = dataset(shape)
    deployables = {}
    for label, (runtime, choices) in candidates(rank).items():
        try:
            deployables[label] = export(recipe, data, runtime, choices)
        except RuntimeUnavailable as error:
            print(f"  {label}: unavailable: {error}")
    batches = {size: data.x_test[:size] for size in BATCH_SIZES}
    calls = {}
    for label, deployable in deployables.items():
        for size, batch in batches.items():
            seconds_per_call(deployable, batch, 3)  # warm-up (torch.compile compiles per batch size here)
            calls[label, size] = max(3, round(BLOCK_SECONDS / seconds_per_call(deployable, batch, 3)))
    times = {key: [] for key in calls}
    labels = list(deployables)
    for round_index in range(ROUNDS):
        for label in labels[round_index % len(labels):] + labels[: round_index % len(labels)]:
            for size, batch in batches.items():
                times[label, size].append(seconds_per_call(deployables[label], batch, calls[label, size]))

    def speedup(label, size):  # median per-round ratio, with its quartiles over rounds
        ratios = [base / own for base, own in zip(times["eager fp32", size], times[label, size])]
        low, _, high = statistics.quantiles(ratios, n=4)
        return f"{statistics.median(ratios):5.2f}x [{low:.2f}-{high:.2f}]"

    dense_bytes = deployables["eager fp32"].stored_bytes()
    print(f"\n{title}: {ROUNDS} interleaved rounds, 1 thread; speedup = median per-round ratio vs eager fp32")
    speedup_header = f"{'speedup [quartiles]':>20s}"
    print(f"  {'candidate':24s} {'b1 µs':>8s} {speedup_header} {'b256 ms':>8s} {speedup_header} "
          f"{'size KiB':>9s} {'smaller':>8s} {'compile s':>9s}")
    for label, deployable in deployables.items():
        b1, b256 = statistics.median(times[label, 1]), statistics.median(times[label, 256])
        compiled = getattr(deployable, "compile_seconds", None)
        print(f"  {label:24s} {b1 * 1e6:8.1f} {speedup(label, 1):>20s} {b256 * 1e3:8.3f} {speedup(label, 256):>20s} "
              f"{deployable.stored_bytes() / 1024:9.1f} {dense_bytes / deployable.stored_bytes():7.2f}x "
              f"{'' if compiled is None else f'{compiled:9.1f}'}")


def main():
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    print(", ".join(f"{name} {version}" for name, version in runtime_versions(["eager", "onnxruntime"]).items()))
    for title, (recipe, shape, rank) in MODELS.items():
        compare(title, recipe, shape, rank)


if __name__ == "__main__":
    main()
