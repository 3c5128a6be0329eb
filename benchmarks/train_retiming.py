"""Logged vs re-trained training speedup: every finished trial of a sweep trained again, quietly, paired with the baseline.

Reads a finished sweep from an MLflow store (the latest run of `--sweep`, default `quickstart` in
./mlflow.db, what `accelsweep run search_spaces/quickstart.yaml` writes) and its stored spec, then
trains every finished trial again from scratch with `trainers.loop.train_trial` (its recipe as
the sweep ran it: techniques, epochs, batch size, optimizer, threads), one at a time in this
process, nothing else running: every trial once per round, in an order that rotates from round
to round. A trial's cost is the median over its epochs of its training samples per second (the
loop's `train_samples_per_s`, training steps only); its re-trained speedup is the median over
rounds of its samples/s divided by the baseline's of the same round, and the lowest and highest
of those per-round ratios are printed beside it: the referee's own spread (every round builds the
trial's model, optimizer and data afresh, so it also moves with where they land in memory).

It prints, per trial, the logged training speedup (`train_step_speedup`: the sweep's quiet phase,
a few training steps per call timed round-robin with the baseline) with its interval, the
re-trained one and their disagreement |logged / re-trained - 1|. Target (issue 17): within 10%
for every trial.

Run: python benchmarks/train_retiming.py [--uri sqlite:///mlflow.db] [--sweep quickstart] [--rounds 5]
"""

import argparse
import logging
import os

import numpy as np

from orchestrator.config.preflight import load_in_memory
from orchestrator.config.recipe import recipe_for
from orchestrator.deploy import trust
from orchestrator.quiet.measurement import trials_to_measure
from orchestrator.tracking import store
from orchestrator.tracking.tags import MODE_TAG
from trainers.loop import train_trial


def samples_per_s(recipe, data):
    epochs = []
    train_trial(recipe, data, lambda metrics, checkpoint: epochs.append(metrics.get("train_samples_per_s")))
    return float(np.median([value for value in epochs if value]))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    parser.add_argument("--sweep", default="quickstart")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read when artifacts download
    logging.getLogger().setLevel(logging.ERROR)  # ONNX Runtime's quantizer warns through the root logger
    client = store.connect(args.uri, create=False)
    parent = store.find_sweep_run(client, args.sweep)
    spec, spec_path = trust.vouched_spec(client, parent, None, False)
    data = load_in_memory(spec, spec_path, "train_retiming")
    runs = {trial.trial_id: (trial, client.get_run(trial.run_id)) for trial in trials_to_measure(client, parent)}
    trials = [trial for trial, run in runs.values() if "train_step_speedup" in run.data.metrics]
    baseline = next(trial.trial_id for trial in trials if trial.baseline)
    recipes = {trial.trial_id: recipe_for(spec, trial.choices) for trial in trials}
    speeds = {trial.trial_id: [] for trial in trials}
    for round_index in range(args.rounds):
        shift = round_index % len(trials)
        for trial in trials[shift:] + trials[:shift]:
            speeds[trial.trial_id].append(samples_per_s(recipes[trial.trial_id], data))
        print(f"round {round_index + 1} of {args.rounds} trained", flush=True)
    print(f"re-trained: train_trial, one at a time, {args.rounds} rounds; samples/s = median over each trial's epochs")
    print(f"{'trial':<32} {'samples/s':>10} {'logged':>8} {'interval':>14} {'re-trained':>11} {'its rounds':>14} {'off':>6}")
    worst = 0.0
    for trial in trials:
        run = runs[trial.trial_id][1]
        metrics = run.data.metrics
        ratios = np.array(speeds[trial.trial_id]) / np.array(speeds[baseline])
        retrained = float(np.median(ratios))
        logged = metrics["train_step_speedup"]
        off = abs(logged / retrained - 1)
        worst = max(worst, off)
        interval = f"[{metrics['train_step_speedup_low']:.2f}, {metrics['train_step_speedup_high']:.2f}]"
        label = run.data.tags.get(MODE_TAG, trial.trial_id)
        spread = f"[{ratios.min():.2f}, {ratios.max():.2f}]"
        print(f"{label:<32} {np.median(speeds[trial.trial_id]):10.0f} {logged:7.2f}x {interval:>14} {retrained:10.2f}x {spread:>14} {off:6.1%}")
    print(f"worst logged-vs-re-trained disagreement: {worst:.1%} (target <= 10%)")


if __name__ == "__main__":
    main()
