"""Training throughput of the trainer's loop against two plain PyTorch loops.

Measures training samples/s (per epoch, validation excluded) of:
- trainer: `trainers.loop.train_trial` with a `TrialRecipe`; the figure is the metric
  "train_samples_per_s" that it reports after every epoch;
- (a) tutorial: `TensorDataset` + `DataLoader(shuffle=True, batch_size=64)`, `loss.item()` every
  batch, as a typical tutorial article writes it;
- (b) slicing: a hand-written loop that slices tensors already on the device by a `randperm`;
- (c) slicing+fused, for reference only (no target): loop (b) with `AdamW(fused=True)`, the
  change found to speed up this loop most on CPU; it shows what the trainer could reach with it.

Same model (`build_model("mlp", ...)`, same seed), same data, batch size 64, AdamW (lr 3e-3, no
weight decay), one thread. Each data set is run as several interleaved repeats (the order rotates
every repeat) on the same machine in the same process; each repeat's figure is the median of its
epochs, and the printed figure is the median over repeats.

Targets: trainer / (a) >= 1.5x, trainer / (b) >= 0.95x.

Run: python benchmarks/train_throughput.py   (about 30 s on 2 cores)
"""

import logging
import statistics
import time

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

from trainers.data import load_dataset
from trainers.loop import TrialRecipe, train_trial
from trainers.models import build_model

BATCH_SIZE = 64
LR = 3e-3
HIDDEN = (64,)
SEED = 0
REPEATS = 5
TARGETS = {"tutorial": 1.5, "slicing": 0.95}


def trainer_run(data, epochs):
    recipe = TrialRecipe(
        model_kind="mlp", epochs=epochs, batch_size=BATCH_SIZE, optimizer="adamw", lr=LR,
        seed=SEED, hidden=HIDDEN, threads=1,
    )
    rates = []

    def report(metrics, checkpoint):
        if "train_samples_per_s" in metrics:
            rates.append(metrics["train_samples_per_s"])

    train_trial(recipe, data, report)
    return rates


def _model_and_optimizer(data, fused=None):
    torch.manual_seed(SEED)
    model = build_model("mlp", data.input_shape, data.num_classes, hidden=HIDDEN)
    return model, torch.optim.AdamW(model.parameters(), lr=LR, weight_decay=0.0, fused=fused)


def tutorial_run(data, epochs):
    model, optimizer = _model_and_optimizer(data)
    loader = DataLoader(TensorDataset(data.x_train, data.y_train), batch_size=BATCH_SIZE, shuffle=True)
    criterion = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        model.train()
        started = time.perf_counter()
        running_loss = 0.0
        for inputs, labels in loader:
            optimizer.zero_grad()
            loss = criterion(model(inputs), labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item() * inputs.size(0)
        rates.append(len(data.x_train) / (time.perf_counter() - started))
    return rates


def slicing_run(data, epochs, fused=None):
    model, optimizer = _model_and_optimizer(data, fused)
    x, y = data.x_train, data.y_train
    rates = []
    for _ in range(epochs):
        model.train()
        started = time.perf_counter()
        order = torch.randperm(len(x))
        for start in range(0, len(x), BATCH_SIZE):
            batch = order[start : start + BATCH_SIZE]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        rates.append(len(x) / (time.perf_counter() - started))
    return rates


def slicing_fused_run(data, epochs):
    return slicing_run(data, epochs, fused=True)


RUNNERS = {
    "trainer": trainer_run,
    "tutorial": tutorial_run,
    "slicing": slicing_run,
    "slicing+fused": slicing_fused_run,
}


def compare(name, data, epochs):
    print(f"\n{name}: {len(data.x_train)} training samples of shape {data.input_shape}, "
          f"mlp hidden {HIDDEN}, batch {BATCH_SIZE}, {epochs} epochs x {REPEATS} interleaved repeats")
    per_repeat = {runner: [] for runner in RUNNERS}
    names = list(RUNNERS)
    for repeat in range(REPEATS):
        order = names[repeat % len(names):] + names[: repeat % len(names)]
        for runner in order:
            per_repeat[runner].append(statistics.median(RUNNERS[runner](data, epochs)))
    medians = {runner: statistics.median(values) for runner, values in per_repeat.items()}
    for runner, values in per_repeat.items():
        spread = ", ".join(f"{value:,.0f}" for value in values)
        print(f"  {runner:13s} {medians[runner]:>10,.0f} samples/s  (repeats: {spread})")
    for baseline, target in TARGETS.items():
        ratio = medians["trainer"] / medians[baseline]
        verdict = "meets" if ratio >= target else "MISSES"
        print(f"  trainer / {baseline:8s} = {ratio:.2f}x  (target >= {target}x: {verdict})")
    print(f"  (reference) slicing+fused / tutorial = {medians['slicing+fused'] / medians['tutorial']:.2f}x, "
          f"slicing+fused / slicing = {medians['slicing+fused'] / medians['slicing']:.2f}x")
    return medians


def main():
    logging.disable(logging.INFO)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread")
    compare("digits", load_dataset("digits").preprocessed(), epochs=10)
    compare("synthetic 20000x784", load_dataset("synthetic", n_samples=20000, n_features=784).preprocessed(), epochs=3)


if __name__ == "__main__":
    main()
