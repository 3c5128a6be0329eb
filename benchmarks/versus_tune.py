"""Whole-process wall of the quickstart against the hand-written script it replaces, paired.

The script is what a user would write without accelsweep (below, `SCRIPT`): Ray Tune over the
quickstart's MLP on digits with MLflow's `MLflowLoggerCallback`, the same trials (the baseline
plus 8 sampled from the quickstart's rank, weight decay and dropout choices; plain fp32 training,
no export, no quiet timing), the same epochs, batch size, optimizer, 1 CPU per trial and 2 at a
time. Each side runs as its own process in a fresh temporary directory (its own mlflow.db):
`python -m orchestrator run search_spaces/quickstart.yaml` against `python script.py`, one warm-up
each (not counted; `--warmups`), then `--pairs` pairs in alternating order (A B, B A, ...), so drift on a
shared machine hits both. It prints each run's wall and CPU seconds (children's user + system),
the medians and the ratio accelsweep / script (CPU seconds count only processes that were waited
for: a lower bound where Ray's workers outlive their raylet). Target: wall ratio <= 1.0x.

Run: python benchmarks/versus_tune.py [--pairs 3]   (about 2 minutes a pair on 2 cores)
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "search_spaces" / "quickstart.yaml"

SCRIPT = '''
import numpy as np, torch, torch.nn.functional as F
from torch import nn
from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from sklearn.datasets import load_digits

def low_rank(inputs, outputs, rank):
    return nn.Linear(inputs, outputs) if rank is None else nn.Sequential(nn.Linear(inputs, rank, bias=False), nn.Linear(rank, outputs))

def train(config):
    torch.set_num_threads(1)
    torch.manual_seed(0)
    x, y = load_digits(return_X_y=True)
    x, y = torch.tensor(x / 16.0, dtype=torch.float32), torch.tensor(y)
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    train_rows, val_rows = order[:1437], order[1437:]
    widths, layers = [64, 512, 512], []
    for inputs, outputs in zip(widths, widths[1:]):
        layers += [low_rank(inputs, outputs, config["rank"]), nn.ReLU(), nn.Dropout(config["dropout"])]
    model = nn.Sequential(*layers, low_rank(512, 10, config["rank"]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=config["weight_decay"])
    for epoch in range(5):
        model.train()
        for batch in train_rows[torch.randperm(len(train_rows))].split(64):
            optimizer.zero_grad()
            F.cross_entropy(model(x[batch]), y[batch]).backward()
            optimizer.step()
        model.eval()
        with torch.no_grad():
            accuracy = (model(x[val_rows]).argmax(1) == y[val_rows]).float().mean().item()
        tune.report({"val_accuracy": accuracy, "epoch": epoch + 1})

space = {"rank": tune.choice([None, 8, 16, 32]), "weight_decay": tune.loguniform(1e-5, 1e-2), "dropout": tune.choice([0.0, 0.1, 0.3])}
baseline = {"rank": None, "weight_decay": 0.0, "dropout": 0.0}
tuner = tune.Tuner(
    tune.with_resources(train, {"cpu": 1}),
    param_space=space,
    tune_config=tune.TuneConfig(
        metric="val_accuracy", mode="max", num_samples=9, max_concurrent_trials=2,
        search_alg=tune.search.BasicVariantGenerator(points_to_evaluate=[baseline]),
    ),
    run_config=tune.RunConfig(callbacks=[MLflowLoggerCallback(tracking_uri="sqlite:///mlflow.db", experiment_name="script")]),
)
print(tuner.fit().get_best_result().metrics["val_accuracy"])
'''


def timed_run(command, directory):
    """(wall seconds, children's CPU seconds) of one command run in `directory`."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    environment = {**os.environ, "PYTHONPATH": str(REPO)}
    environment.pop("MLFLOW_TRACKING_URI", None)
    completed = subprocess.run(command, cwd=directory, env=environment, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if completed.returncode != 0:
        raise SystemExit(f"{command} failed:\n{completed.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def run_side(side):
    with tempfile.TemporaryDirectory() as directory:
        if side == "accelsweep":
            return timed_run([sys.executable, "-m", "orchestrator", "run", str(QUICKSTART)], directory)
        Path(directory, "script.py").write_text(SCRIPT)
        return timed_run([sys.executable, "script.py"], directory)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--warmups", type=int, default=1, help="uncounted runs of each side first")
    args = parser.parse_args()
    sides = ("accelsweep", "script")
    for side in sides * args.warmups:
        print(f"warm-up {side}: {run_side(side)[0]:.1f} s", flush=True)
    walls, cpus = {side: [] for side in sides}, {side: [] for side in sides}
    for pair in range(args.pairs):
        for side in sides if pair % 2 == 0 else sides[::-1]:
            wall, cpu = run_side(side)
            walls[side].append(wall)
            cpus[side].append(cpu)
            print(f"pair {pair + 1} {side:<10} wall {wall:6.1f} s  cpu {cpu:6.1f} s", flush=True)
    median = {side: statistics.median(walls[side]) for side in sides}
    median_cpu = {side: statistics.median(cpus[side]) for side in sides}
    for side in sides:
        print(f"{side:<10} median wall {median[side]:6.1f} s, cpu {median_cpu[side]:6.1f} s")
    print(f"wall ratio accelsweep / script: {median['accelsweep'] / median['script']:.2f}x (target <= 1.0x); "
          f"cpu ratio {median_cpu['accelsweep'] / median_cpu['script']:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
