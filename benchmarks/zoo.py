"""Compressed trials of the zoo's ResNet and transformer against their fp32 baseline, in ONNX Runtime.

Data: a Fashion-MNIST subset (the first 6,000 training images, 1,000 validation images carved from
the training split, the first 2,000 test images), or digits when Fashion-MNIST is not installed
(the first line printed says which). Each trial is a real `trainers.loop.train_trial` run with
runtime "onnxruntime" (the agreement check included) and its shipped deployable is the one timed:
the baseline (dense fp32), int8 (QAT: weights and, for convolutions, activations), low rank, and
low rank + int8.

Test accuracy is measured in ONNX Runtime on the test rows. Latency: batch 256 (and batch 1), one
intra-op thread, ONNX Runtime's native call (`session.run` on a numpy batch made once), every
trial timed once per round in an order that rotates, for `ROUNDS` rounds; a trial's speedup is the
median over rounds of (baseline's time in that round / its time in that round), with the
quartiles of the per-round ratios.

Targets (issue 15): the ResNet's int8 trial within 1 point of the baseline's accuracy is >= 2x
faster at batch 256; some compressed transformer trial within 1 point is >= 1.5x faster.

A trial that fails its runtime-agreement check is printed as failed, with the difference.

Run: python benchmarks/zoo.py [resnet] [transformer]   (about 8 minutes on 2 quiet cores; 20 with
two other jobs running)
"""

import argparse
import dataclasses
import logging
import os
import statistics
import time

import numpy as np
import torch

from trainers.data import load_dataset
from trainers.loop import TrialFailed, TrialRecipe, train_trial
from trainers.runtimes import runtime_versions

FASHION = "/usr/share/datasets/fashion-mnist"
ROUNDS = 9
BLOCK_SECONDS = 0.05
BATCH_SIZES = (1, 256)
ARCHITECTURES = {  # name: (title, model kind, options, epochs, trials by label)
    "resnet": (
        "ResNet (width 16, 3 blocks, BatchNorm)", "tests.trainers.zoo:resnet", {"width": 16}, 2,
        {"baseline": {}, "q8": {"quant_bits": 8}, "r8": {"rank": 8}},
    ),
    "transformer": (
        "transformer (dim 64, 4 heads, 2 layers, rows as tokens)", "tests.trainers.zoo:transformer", {"dim": 64, "heads": 4, "layers": 2}, 3,
        {"baseline": {}, "q8": {"quant_bits": 8}, "r16": {"rank": 16}, "r16-q8": {"rank": 16, "quant_bits": 8}},
    ),
}


def dataset():
    if not os.path.isdir(FASHION):
        return "digits (Fashion-MNIST is not installed)", load_dataset("digits")
    data = load_dataset("idx", FASHION)
    subset = dataclasses.replace(
        data,
        x_train=data.x_train[:6000], y_train=data.y_train[:6000],
        x_val=data.x_val[:1000], y_val=data.y_val[:1000],
        x_test=data.x_test[:2000], y_test=data.y_test[:2000],
    )
    return "Fashion-MNIST subset: 6,000 train, 1,000 validation, 2,000 test images", subset


def train(kind, options, epochs, choices, data):
    recipe = TrialRecipe(
        model_kind=kind, model_options=options, choices=choices, epochs=epochs, runtime="onnxruntime",
        batch_size=64, lr=3e-3, schedule="cosine", threads=2,
    )
    shipped = {}

    def report(metrics, checkpoint):
        if checkpoint and "deployable" in checkpoint:
            shipped["deployable"], shipped["metrics"] = checkpoint["deployable"], metrics

    started = time.perf_counter()
    train_trial(recipe, data, report)
    return shipped["deployable"], shipped["metrics"], time.perf_counter() - started


def seconds_per_call(session, feed, calls):
    started = time.perf_counter()
    for _ in range(calls):
        session.run(None, feed)
    return (time.perf_counter() - started) / calls


def interleaved_times(deployables, data):
    feeds = {}
    for label, deployable in deployables.items():
        name = deployable.session.get_inputs()[0].name
        for size in BATCH_SIZES:
            feeds[label, size] = {name: data.x_test[:size].numpy().astype(np.float32)}
    calls = {}
    for key, feed in feeds.items():
        session = deployables[key[0]].session
        seconds_per_call(session, feed, 3)  # warm-up
        calls[key] = max(3, round(BLOCK_SECONDS / seconds_per_call(session, feed, 3)))
    times = {key: [] for key in feeds}
    labels = list(deployables)
    for round_index in range(ROUNDS):
        shift = round_index % len(labels)
        for label in labels[shift:] + labels[:shift]:
            for size in BATCH_SIZES:
                times[label, size].append(seconds_per_call(deployables[label].session, feeds[label, size], calls[label, size]))
    return times


def speedup(times, label, size):
    ratios = [base / own for base, own in zip(times["baseline", size], times[label, size])]
    low, _, high = statistics.quantiles(ratios, n=4)
    return statistics.median(ratios), low, high


def compare(title, kind, options, epochs, trials, data):
    deployables, metrics = {}, {}
    for label, choices in trials.items():
        try:
            deployables[label], metrics[label], seconds = train(kind, options, epochs, choices, data)
        except TrialFailed as error:  # a finding: the trial fails its agreement check
            print(f"  {label} failed: {error}")
            continue
        print(f"  trained {label}: {seconds:.0f} s, {metrics[label]['notes'].get('onnx_weights', '')}")
    times = interleaved_times(deployables, data)
    base_accuracy = metrics["baseline"]["test_accuracy"]
    print(f"\n{title}, {epochs} epochs; ONNX Runtime, 1 thread, {ROUNDS} interleaved rounds; "
          "speedup = median per-round ratio vs the baseline [quartiles]")
    print(f"  {'trial':8s} {'test acc':>8s} {'vs base':>8s} {'agree':>8s} {'b1 ms':>8s} {'b1 speedup':>20s} "
          f"{'b256 ms':>8s} {'b256 speedup':>20s} {'KiB':>7s}")
    for label, deployable in deployables.items():
        accuracy = metrics[label]["test_accuracy"]
        cells = []
        for size in BATCH_SIZES:
            ratio, low, high = speedup(times, label, size)
            cells += [f"{statistics.median(times[label, size]) * 1e3:8.3f}", f"{f'{ratio:.2f}x [{low:.2f}-{high:.2f}]':>20s}"]
        print(f"  {label:8s} {accuracy:8.4f} {100 * (accuracy - base_accuracy):+7.2f}p "
              f"{metrics[label]['runtime_max_abs_diff']:8.4f} {' '.join(cells)} {deployable.stored_bytes() / 1024:7.1f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("architectures", nargs="*", choices=list(ARCHITECTURES), default=list(ARCHITECTURES))
    names = parser.parse_args().architectures
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    description, data = dataset()
    print(description)
    print(", ".join(f"{name} {version}" for name, version in runtime_versions(["eager", "onnxruntime"]).items()))
    for name in names:
        title, kind, options, epochs, trials = ARCHITECTURES[name]
        print(f"\n{title}")
        compare(title, kind, options, epochs, trials, data)


if __name__ == "__main__":
    main()
