"""What the communication knobs save on 2 workers, measured: bytes per step, sync rounds, accuracy.

Trains the wide Fashion-MNIST MLP (784-1024-1024-10) on 2 gloo ranks of this machine
(torch.multiprocessing, no Ray: the figures are the trials' own, and they do not depend on how
the worker group starts) with the trainers' loop, once per row:
- `none`: DDP's gradient all-reduce every step, which is also `sync_every: 1`;
- `powersgd` rank 4 (`grad_compression`);
- `sync_every: 8` (local SGD: parameters and AdamW's moments averaged every 8 steps).
Each trial reports `comm_bytes_per_step` (bytes one worker handed to all-reduce, per optimizer
step, counted where the collectives are issued) and `sync_rounds`.

Targets (issue 20): powersgd rank 4 sends >= 8x fewer bytes per step than none, within 1 point
of its test accuracy; sync_every 8 makes 8x fewer sync rounds than sync_every 1, within 1 point.

Run: PYTHONPATH=. python benchmarks/communication.py [--train-images 6000] [--epochs 2]
(by default a 6,000-image subset of Fashion-MNIST, 2 epochs: 94 steps per worker, so that it
finishes on 2 cores shared with other work; the data set falls back to scikit-learn's digits
where it is missing)
"""

import argparse
import dataclasses
import os
import sys
import tempfile
from pathlib import Path

import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.data import load_dataset
from trainers.loop import TrialRecipe, train_trial

FASHION = Path("/usr/share/datasets/fashion-mnist")
TRAIN_IMAGES, VAL_IMAGES = 6_000, 1_000
BASE = TrialRecipe(model_kind="mlp", hidden=(1024, 1024), epochs=2, batch_size=64, lr=1e-3, optimizer="adamw")
ROWS = {
    "none (= sync_every 1)": {},
    "powersgd rank 4": {"grad_compression": "powersgd", "powersgd_rank": 4},
    "sync_every 8": {"sync_every": 8},
}
KEPT = ("test_accuracy", "comm_bytes_per_step", "sync_rounds", "optimizer_steps", "train_seconds", "ddp_replica_checksum_spread")


def data_set(train_images):
    if not FASHION.is_dir():
        return load_dataset("digits"), "scikit-learn digits (Fashion-MNIST not installed)"
    full = load_dataset("idx", str(FASHION))
    cut = {"x_train": train_images, "y_train": train_images, "x_val": VAL_IMAGES, "y_val": VAL_IMAGES}
    subset = dataclasses.replace(full, **{name: getattr(full, name)[:rows] for name, rows in cut.items()})
    return subset, f"Fashion-MNIST: {len(subset.x_train)} training, {VAL_IMAGES} validation, {len(full.x_test)} test images"


def _rank(rank, init_file, data, recipe, results):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        final = train_trial(recipe, data, lambda metrics, checkpoint: None)
        if rank == 0:
            results.update({key: final[key] for key in KEPT})
    finally:
        dist.destroy_process_group()


def two_worker_trial(data, recipe):
    results = mp.Manager().dict()
    with tempfile.TemporaryDirectory() as directory:
        mp.spawn(_rank, args=(os.path.join(directory, "init"), data, recipe, results), nprocs=2, join=True)
    return dict(results)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-images", type=int, default=TRAIN_IMAGES, help="training images, split between the 2 workers")
    parser.add_argument("--epochs", type=int, default=BASE.epochs)
    args = parser.parse_args()
    data, described = data_set(args.train_images)
    base_recipe = dataclasses.replace(BASE, epochs=args.epochs)
    print(f"{described}; {BASE.hidden} MLP, {args.epochs} epochs, batch {BASE.batch_size} per worker, 2 gloo workers", flush=True)
    measured = {}
    for name, choices in ROWS.items():
        measured[name] = two_worker_trial(data, dataclasses.replace(base_recipe, choices=choices))
        print(f"  {name}: {measured[name]}", flush=True)
    base = measured["none (= sync_every 1)"]
    print(f"\n| row | test acc | vs none (points) | comm kB/step | fewer bytes | sync rounds | fewer rounds | train s |")
    print("|---|---|---|---|---|---|---|---|")
    for name, row in measured.items():
        points = 100 * (row["test_accuracy"] - base["test_accuracy"])
        print(
            f"| {name} | {row['test_accuracy']:.4f} | {points:+.2f} | {row['comm_bytes_per_step'] / 1e3:.1f} | "
            f"{base['comm_bytes_per_step'] / row['comm_bytes_per_step']:.1f}x | {row['sync_rounds']:.0f} | "
            f"{base['sync_rounds'] / row['sync_rounds']:.1f}x | {row['train_seconds']:.1f} |"
        )
    psgd, sync8 = measured["powersgd rank 4"], measured["sync_every 8"]
    print(f"\npowersgd rank 4: {base['comm_bytes_per_step'] / psgd['comm_bytes_per_step']:.1f}x fewer bytes per step "
          f"(target >= 8x), {100 * (psgd['test_accuracy'] - base['test_accuracy']):+.2f} points (target >= -1)")
    print(f"sync_every 8: {base['sync_rounds'] / sync8['sync_rounds']:.2f}x fewer sync rounds (target 8x), "
          f"{100 * (sync8['test_accuracy'] - base['test_accuracy']):+.2f} points (target >= -1)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
