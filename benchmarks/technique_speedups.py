"""Inference speed and stored size of each technique's deployable model against dense fp32.

For each technique (low-rank r16 and r0.25, quantisation to 16/8/4/2 bits, pruning to 50% and 90%
with sparse export, dropout 0.1, and r16+q8) on a 784-1024-1024-10 MLP and on the built-in cnn
(1x28x28 input, channels 16, 32), it builds the deployable model exactly as the trainer does:
`trainers.loop.build_trial_model` with a `TrialRecipe` whose choices select the technique, the
pruning masks set as in a 1-epoch trial (`update_pruning` at epoch 0), then
`trainers.loop.export_deployable`. No training: weights are the seeded initial ones (speed and
size do not depend on their values, except that pruning keeps the largest magnitudes). It then
measures every model with `trainers.measure.measure_inference` (1 thread, median latency at
batch 1 and batch 256) and `Deployable.stored_bytes`, side by side in one process, in interleaved
repeats whose order rotates; the printed latency is the median over repeats.

Speedup = dense fp32 latency / technique latency (above 1 is faster); compression = dense
stored bytes / technique stored bytes. A speedup below 1 means the technique is slower on this
machine: that is a finding, printed as it is.

Run: python benchmarks/technique_speedups.py   (about 2 minutes on 2 cores)
"""

import dataclasses
import logging
import statistics

import torch

from trainers import techniques
from trainers.data import load_dataset
from trainers.loop import TrialRecipe, build_trial_model, export_deployable
from trainers.measure import measure_inference

REPEATS = 3
TECHNIQUES = {
    "dense fp32": {},
    "r16": {"rank": 16},
    "r0.25": {"rank": 0.25},
    "q16": {"quant_bits": 16},
    "q8": {"quant_bits": 8},
    "q4": {"quant_bits": 4},
    "q2": {"quant_bits": 2},
    "sp50 (sparse export)": {"sparsity": 0.5},
    "sp90 (sparse export)": {"sparsity": 0.9},
    "d0.1": {"dropout": 0.1},
    "r16+q8": {"rank": 16, "quant_bits": 8},
}


def datasets():
    flat = load_dataset("synthetic", n_samples=400, n_features=784).preprocessed()
    images = dataclasses.replace(
        flat,
        name="synthetic 1x28x28",
        **{split: getattr(flat, split).reshape(-1, 1, 28, 28) for split in ("x_train", "x_val", "x_test")},
    )
    return {
        "mlp 784-1024-1024-10": (TrialRecipe(model_kind="mlp", hidden=(1024, 1024)), flat),
        "cnn 1x28x28, channels 16-32": (TrialRecipe(model_kind="cnn", channels=(16, 32)), images),
    }


def deployable_model(base_recipe, data, choices):
    recipe = dataclasses.replace(base_recipe, choices=choices, epochs=1)
    model, data, configs, notes = build_trial_model(recipe, data)
    techniques.epoch_start(model, configs, epoch=0, epochs=recipe.epochs)
    return export_deployable(model, configs, data.preprocess(), data.x_test[:1].to(recipe.device)).eager


def compare(title, base_recipe, data):
    models = {label: deployable_model(base_recipe, data, choices) for label, choices in TECHNIQUES.items()}
    sample = data.x_test[:256]
    latencies = {label: {"b1": [], "b256": []} for label in models}
    labels = list(models)
    for repeat in range(REPEATS):
        for label in labels[repeat % len(labels):] + labels[: repeat % len(labels)]:
            inference = measure_inference(models[label], sample, batch_sizes=(1, 256), threads=1)
            latencies[label]["b1"].append(inference["latency_ms"])
            latencies[label]["b256"].append(inference["latency_b256_ms"])
    medians = {label: {batch: statistics.median(values) for batch, values in by_batch.items()}
               for label, by_batch in latencies.items()}
    sizes = {label: model.stored_bytes() for label, model in models.items()}
    dense = medians["dense fp32"], sizes["dense fp32"]

    print(f"\n{title}: median of {REPEATS} interleaved repeats, 1 thread")
    print(f"  {'technique':22s} {'b1 ms':>8s} {'b256 ms':>8s} {'speedup b1':>10s} {'speedup b256':>12s} "
          f"{'size KiB':>9s} {'compression':>11s}")
    for label in models:
        b1, b256 = medians[label]["b1"], medians[label]["b256"]
        print(f"  {label:22s} {b1:8.3f} {b256:8.2f} {dense[0]['b1'] / b1:9.2f}x {dense[0]['b256'] / b256:11.2f}x "
              f"{sizes[label] / 1024:9.1f} {dense[1] / sizes[label]:10.2f}x")


def main():
    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, quantized engine {torch.backends.quantized.engine}")
    for title, (recipe, data) in datasets().items():
        compare(title, recipe, data)


if __name__ == "__main__":
    main()
