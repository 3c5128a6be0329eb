"""Does the trainer reach the published Fashion-MNIST accuracies? Test accuracy per LR schedule.

Trains two recipes with `trainers.loop.train_trial`, one run per schedule, and prints each run's
test accuracy (measured on the exported model, as every trial's), epochs, parameters and training
seconds:
- mlp: dense 784-256-128-10, AdamW lr 1e-3, batch 64, 10 epochs; target >= 0.890 test accuracy
  (published: 0.8833 for an MLP 256-128-100);
- cnn: the built-in `cnn` kind with channels (32, 64) (under 100K parameters), AdamW lr 3e-3,
  batch 64, 10 epochs; target >= 0.915 (published: 0.925 for 2-conv nets under 100K).

One thread, seed 0, one run at a time.

Run: python benchmarks/trainer_targets.py --model mlp --schedules constant cosine onecycle
     (about 40 s per MLP run and 6-10 min per CNN run on one core of a 2-core EPYC)
"""

import argparse
import logging
import time

import torch

from trainers.data import load_dataset
from trainers.loop import SCHEDULES, TrialRecipe, train_trial

FASHION = "/usr/share/datasets/fashion-mnist"
RECIPES = {
    "mlp": (TrialRecipe(model_kind="mlp", hidden=(256, 128), epochs=10, lr=1e-3), 0.890),
    "cnn": (TrialRecipe(model_kind="cnn", channels=(32, 64), epochs=10, lr=3e-3), 0.915),
}


def run(model: str, schedule: str, data) -> dict:
    """Train one recipe under one schedule and return its figures.

    Args:
        model: a key of `RECIPES`.
        schedule: one of `trainers.loop.SCHEDULES`.
        data: Fashion-MNIST from `load_dataset`.

    Example:
        >>> run("mlp", "cosine", load_dataset("idx", FASHION))["test_accuracy"]
        0.89...
    """
    base, target = RECIPES[model]
    recipe = TrialRecipe(**(vars(base) | {"schedule": schedule}))
    started = time.perf_counter()
    final = train_trial(recipe, data, lambda metrics, checkpoint: None)
    return {
        "model": model,
        "schedule": schedule,
        "test_accuracy": final["test_accuracy"],
        "target": target,
        "epochs": final["epochs_trained"],
        "params": final["param_count"],
        "train_seconds": final["train_seconds"],
        "wall_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(RECIPES), default="mlp")
    parser.add_argument("--schedules", nargs="+", choices=SCHEDULES, default=list(SCHEDULES))
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    torch.set_num_threads(1)
    data = load_dataset("idx", FASHION)
    print("| model | schedule | test_acc | target | met | epochs | params | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for schedule in args.schedules:
        r = run(args.model, schedule, data)
        met = "yes" if r["test_accuracy"] >= r["target"] else "NO"
        print(
            f"| {r['model']} | {r['schedule']} | {r['test_accuracy']:.4f} | {r['target']:.3f} | {met} | "
            f"{r['epochs']} | {r['params']:.0f} | {r['train_seconds']:.0f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
