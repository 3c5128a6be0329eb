"""Structured pruning and distillation on the zoo's ResNet: accuracy in ONNX Runtime, paired latency.

Data: 6,000 Fashion-MNIST training images (the first 6,000 of the loader's training split), 1,000
validation images (the first of its validation split) and the full 10,000-image test split, from
`/usr/share/datasets/fashion-mnist/`; without it, scikit-learn's digits (the output says which).

Trials, each a real `trainers.loop.train_trial` on the zoo's ResNet (`tests.trainers.zoo:resnet`,
width 16) with ONNX Runtime as the primary runtime, so the test accuracy printed is the ONNX
Runtime artifact's: the dense baseline; `channel_sparsity` 0.5 and 0.75 from scratch (dense for
the first half of the epochs, pruned, fine-tuned for the rest); the same two started from the
baseline's `trained.pt` (`start_from="baseline"`: pruned before their first epoch, then
fine-tuned for as many epochs as the baseline trained; their training seconds leave out the
baseline's, which they waited for); then, on whichever of the from-scratch ones lost the most
accuracy, the same trial with `distill` 0.7, and on whichever of the from-baseline ones lost the
most, the same started trial with `distill` 0.7 and 0.3 (prune the trained model, fine-tune it
from the unpruned teacher); the teacher is always the baseline just trained, its `trained.pt`,
and T is distill.py's default, 4.

Latency: every trial's ONNX Runtime artifact and a second export of the baseline (an A/A control)
timed by `trainers.measure.paired_latencies` in one process: interleaved rounds whose order
rotates, one thread, batch 1 and 256; speedup = median per-round ratio against the baseline, with
its 95% bootstrap interval widened by the control's spread.

Targets: channel_sparsity 0.5 at least 1.5x faster at batch 256 within 2 accuracy points (printed
for both starts); distillation recovers at least a third of the points the most-hurt trial lost
(printed for both starts, and for each weight).

Run: python benchmarks/structured.py   (about 8.5 minutes on 2 shared cores before the two trials
from the baseline were added); a longer recipe, e.g.
python benchmarks/structured.py --train-images 12000 --epochs 6   (3x the training steps; 9 min 42 s
with them, load average 2-4, before the distilled trials from the baseline were added; 29 min 54 s
with those at load average 4-5, where every trial but the last two trained 1.5-10x slower than at
load 2-4)
"""

import argparse
import dataclasses
import logging
import os
import tempfile
from pathlib import Path

import torch

from trainers.checkpoints import save_atomically
from trainers.data import load_dataset
from trainers.loop import TrialRecipe, deploy_to, rebuild_deployable, train_trial
from trainers.measure import paired_latencies

FASHION = Path("/usr/share/datasets/fashion-mnist")
TRAIN_IMAGES = 6000
VAL_IMAGES = 1000
BASE = TrialRecipe(
    model_kind="tests.trainers.zoo:resnet", epochs=4, batch_size=128, lr=3e-3, schedule="cosine", threads=2, runtime="onnxruntime"
)
COMPRESSED = {"cp50": {"channel_sparsity": 0.5}, "cp75": {"channel_sparsity": 0.75}}
FROM_BASELINE = " from baseline"
DISTILL_WEIGHTS = {"": (0.7,), FROM_BASELINE: (0.7, 0.3)}  # per start: its most-hurt trial's distill weights
ROUNDS = 9


def fashion_subset(train_images):
    if not FASHION.is_dir():
        return load_dataset("digits"), "scikit-learn digits (Fashion-MNIST not installed)"
    full = load_dataset("idx", str(FASHION))
    subset = dataclasses.replace(
        full,
        x_train=full.x_train[:train_images],
        y_train=full.y_train[:train_images],
        x_val=full.x_val[:VAL_IMAGES],
        y_val=full.y_val[:VAL_IMAGES],
    )
    return subset, f"Fashion-MNIST: {len(subset.x_train)} training, {VAL_IMAGES} validation, {len(full.x_test)} test images"


def trial(recipe, data):
    kept = {}

    def report(metrics, checkpoint):
        if checkpoint is not None:
            kept.update(checkpoint)

    final = train_trial(recipe, data, report)
    return final, kept


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES, help="training images (the first N)")
    parser.add_argument(
        "--epochs", type=int, default=BASE.epochs,
        help="epochs of every trial (pruned at epochs // 2 from scratch, at 0 from the baseline)",
    )
    arguments = parser.parse_args()
    base = dataclasses.replace(BASE, epochs=arguments.epochs)
    logging.disable(logging.WARNING)
    data, described = fashion_subset(arguments.train_images)
    print(described)
    results, artifacts = {}, {}
    results["baseline"], baseline = trial(base, data)
    artifacts["baseline"] = baseline["deployable"]
    baseline_path = os.path.join(tempfile.mkdtemp(prefix="structured-"), "trained.pt")
    save_atomically(baseline["trained"], baseline_path)
    started = dataclasses.replace(base, start_from="baseline", start_weights_path=baseline_path)
    starts = {"": base, FROM_BASELINE: started}
    for name, choices in COMPRESSED.items():
        for start, recipe in starts.items():
            results[name + start], kept = trial(dataclasses.replace(recipe, choices=choices), data)
            artifacts[name + start] = kept["deployable"]
    distilled = []  # (the most-hurt trial of a start, its distilled trial)
    for start, weights in DISTILL_WEIGHTS.items():
        most_hurt = min(COMPRESSED, key=lambda name: results[name + start]["test_accuracy"])
        for weight in weights:
            name = f"{most_hurt}-kd{weight}{start}"
            choices = COMPRESSED[most_hurt] | {"distill": weight}
            recipe = dataclasses.replace(starts[start], choices=choices, teacher_path=baseline_path)
            results[name], kept = trial(recipe, data)
            artifacts[name] = kept["deployable"]
            distilled.append((most_hurt + start, name))

    # the A/A control: the baseline exported again, from the same trained weights
    rebuilt, _ = rebuild_deployable(base, data, baseline_path)
    artifacts["baseline (A/A)"] = deploy_to("onnxruntime", rebuilt, data, torch.device("cpu"))
    samples = {name: data.x_test[:256] for name in artifacts}
    figures = paired_latencies(artifacts, "baseline", samples, rounds=ROUNDS, control="baseline (A/A)")

    print(f"\nzoo ResNet (width 16), {base.epochs} epochs, batch {base.batch_size}; ONNX Runtime, 1 thread, "
          f"{ROUNDS} interleaved rounds; speedup = median per-round ratio vs baseline [95% interval]")
    width = max(map(len, artifacts))
    print(f"  {'trial':{width}s} {'test acc':>8s} {'params':>8s} {'KiB':>7s} {'b1 ms':>7s} {'speedup':>20s} "
          f"{'b256 ms':>8s} {'speedup':>20s} {'train s':>7s}")
    for name, deployable in artifacts.items():
        final = results.get(name, results["baseline"])
        row = [f"  {name:{width}s} {final['test_accuracy']:8.4f} {deployable.parameter_count():8d} "
               f"{deployable.stored_bytes() / 1024:7.1f}"]
        for batch in (1, 256):
            figure = figures[name][batch]
            interval = f"{figure['speedup']:.2f}x [{figure['speedup_low']:.2f}-{figure['speedup_high']:.2f}]"
            row.append(f"{figure['median_ms']:{7 if batch == 1 else 8}.3f} {interval:>20s}")
        row.append(f"{final['train_seconds']:7.1f}")
        print(" ".join(row))

    base_accuracy = results["baseline"]["test_accuracy"]
    print()
    for name in ("cp50", "cp50" + FROM_BASELINE):
        lost, speedup = base_accuracy - results[name]["test_accuracy"], figures[name][256]["speedup"]
        print(f"{name}: {speedup:.2f}x at batch 256 (target >= 1.5x), {100 * lost:.2f} points lost (target <= 2)")
    print(f"the trials from the baseline trained {results['cp50' + FROM_BASELINE]['train_seconds']:.1f} s (cp50) and "
          f"{results['cp75' + FROM_BASELINE]['train_seconds']:.1f} s (cp75) after waiting for the baseline's "
          f"{results['baseline']['train_seconds']:.1f} s")
    for most_hurt, name in distilled:
        lost = base_accuracy - results[most_hurt]["test_accuracy"]
        recovered = results[name]["test_accuracy"] - results[most_hurt]["test_accuracy"]
        print(f"{name}: the most-hurt trial {most_hurt} lost {100 * lost:.2f} points; distillation recovered "
              f"{100 * recovered:.2f} ({recovered / lost:.0%} of them; target >= 33%)" if lost > 0 else
              f"{most_hurt} lost no accuracy: nothing for distillation to recover")


if __name__ == "__main__":
    main()
