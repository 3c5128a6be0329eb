"""Why structured pruning and distillation miss their accuracy targets on the zoo ResNet: per-epoch
validation accuracy of the pruned and distilled trials, beside narrow ResNets trained from scratch
for the same epochs, and distillation with the student's own architecture.

Data and recipe: `structured.py`'s (Fashion-MNIST subset, zoo ResNet width 16, batch 128, AdamW 3e-3
cosine), eager PyTorch (accuracy only, no latency). Every trial is a real `train_trial`; the teacher
is the baseline just trained. `channel_sparsity` trials train dense for the first half of the epochs,
are pruned, and fine-tune for the rest.

Rows: the baseline; cp75 and cp50 with and without `distill` 0.7 (T = 4); the dense model
distilled at w = 0.7 with T = 4 and T = 1 and at w = 1.0 (T = 4); ResNets of width 4 and 8 (the
widths cp75 and cp50 leave) trained from scratch.

Run: PYTHONPATH=. python benchmarks/prune_distill_probe.py [--train-images 3000] [--epochs 4]
(about 3 minutes on 2 quiet cores with the defaults)
"""

import argparse
import dataclasses
import logging
import os
import tempfile

from structured import BASE, fashion_subset
from trainers.checkpoints import save_atomically
from trainers.loop import train_trial
from trainers.techniques.distill import Distill

TRIALS = {
    "cp75": {"channel_sparsity": 0.75},
    "cp75-kd0.7": {"channel_sparsity": 0.75, "distill": 0.7},
    "cp50": {"channel_sparsity": 0.5},
    "cp50-kd0.7": {"channel_sparsity": 0.5, "distill": 0.7},
    "dense-kd0.7": {"distill": 0.7},
    "dense-kd0.7-T1": {"distill": 0.7, "temperature": 1.0},
    "dense-kd1.0": {"distill": 1.0},
}
WIDTHS = (4, 8)


def run(recipe, data):
    accuracies, kept = [], {}

    def report(metrics, checkpoint):
        accuracies.append(metrics["val_accuracy"])
        kept.update(checkpoint or {})

    final = train_trial(recipe, data, report)
    return accuracies, final["test_accuracy"], kept


def show(name, accuracies, test_accuracy):
    print(f"  {name:22s} {' '.join(f'{value:.3f}' for value in accuracies):>32s}   {test_accuracy:.4f}", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=3000, help="training images (the first N)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs of every trial (pruned at epochs // 2)")
    arguments = parser.parse_args()
    logging.disable(logging.WARNING)
    Distill.space_options = ("temperature",)  # this probe only: T read from the trial's choices
    data, described = fashion_subset(arguments.train_images)
    base = dataclasses.replace(BASE, epochs=arguments.epochs, runtime="eager")
    print(f"{described}; {base.epochs} epochs, eager PyTorch")
    print(f"  {'trial':22s} {'val accuracy after each epoch':>32s}   test acc")
    accuracies, test_accuracy, baseline = run(base, data)
    show("baseline (width 16)", accuracies, test_accuracy)
    teacher_path = os.path.join(tempfile.mkdtemp(prefix="probe-"), "trained.pt")
    save_atomically(baseline["trained"], teacher_path)
    for name, choices in TRIALS.items():
        accuracies, test_accuracy, _ = run(dataclasses.replace(base, choices=choices, teacher_path=teacher_path), data)
        show(name, accuracies, test_accuracy)
    for width in WIDTHS:
        accuracies, test_accuracy, _ = run(dataclasses.replace(base, model_options={"width": width}), data)
        show(f"width {width} from scratch", accuracies, test_accuracy)


if __name__ == "__main__":
    main()
