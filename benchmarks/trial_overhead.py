"""Per-trial overhead of a real sweep: what a trial costs beyond its training epochs.

Runs `accelsweep run` for real, in a temporary directory (so it writes its own mlflow.db), on:
1. search_spaces/quickstart.yaml as shipped (8 sampled trials + the baseline, 1 worker each);
2. a copy with `resources: {workers_per_trial: 2, cpus_per_worker: 1, max_concurrent_trials: 1}`
   and `search: {num_samples: 1, time_budget_s: 120}` (the baseline + 1 trial, each a 2-worker
   Ray Train trial; Tune stops the sweep after 120 s, so a trial whose workers never start is
   reported as unfinished instead of hanging the benchmark).
Then it reads each sweep's MLflow store: per trial, overhead = metric "trial_seconds" (wall time
from Tune's trial start to its completion, logged by orchestrator/tracking.py) minus
"train_seconds" (the training epochs alone). The overhead therefore holds everything else: worker
start-up, model build, per-epoch validation and reporting, export, latency/size measurement,
checkpoints. It prints per-trial and median overhead and each sweep's wall time (the whole
`accelsweep run` command, Ray start and MLflow included).

Targets: median overhead <= 1 s for 1-worker trials, <= 10 s for 2-worker trials.

Run: python benchmarks/trial_overhead.py   (about 2-3 minutes on 2 cores)
"""

import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import yaml
from mlflow.tracking import MlflowClient

from orchestrator.tracking.tags import KIND_TAG, MODE_TAG

REPO = Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "search_spaces" / "quickstart.yaml"
TWO_WORKER_CHANGES = {
    "name": "quickstart-2workers",
    "resources": {"workers_per_trial": 2, "cpus_per_worker": 1, "max_concurrent_trials": 1},
    "search": {"num_samples": 1, "time_budget_s": 120},
}


def two_worker_spec(directory):
    spec = yaml.safe_load(QUICKSTART.read_text())
    for section, values in TWO_WORKER_CHANGES.items():
        spec[section] = spec[section] | values if isinstance(values, dict) else values
    path = Path(directory) / "quickstart-2workers.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(spec_path, directory):
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    started = time.perf_counter()
    completed = subprocess.run(
        ["accelsweep", "run", str(spec_path)], cwd=directory, env=env, capture_output=True, text=True
    )
    wall = time.perf_counter() - started
    if completed.returncode != 0:
        print(f"\naccelsweep run {spec_path.name} exited with {completed.returncode}; its last log lines:\n"
              + "\n".join(completed.stderr.splitlines()[-5:]))
    return wall


def trial_overheads(directory):
    client = MlflowClient(tracking_uri=f"sqlite:///{Path(directory) / 'mlflow.db'}")
    experiments = client.search_experiments()
    runs = client.search_runs(
        [experiment.experiment_id for experiment in experiments], filter_string=f"tags.`{KIND_TAG}` = 'trial'"
    )
    rows = []
    for run in runs:
        metrics = run.data.metrics
        finished = "trial_seconds" in metrics and "train_seconds" in metrics
        rows.append({
            "mode": run.data.tags.get(MODE_TAG, "?"),
            "status": run.info.status,
            "trial_seconds": metrics.get("trial_seconds"),
            "train_seconds": metrics.get("train_seconds"),
            "overhead": metrics["trial_seconds"] - metrics["train_seconds"] if finished else None,
            "workers": int(metrics.get("world_size", 0)),
        })
    return sorted(rows, key=lambda row: row["mode"])


def report(title, wall, rows, target):
    print(f"\n{title}: {len(rows)} trials, sweep wall time {wall:.1f} s (the whole `accelsweep run`)")
    print(f"  {'mode':28s} {'workers':>7s} {'trial s':>8s} {'train s':>8s} {'overhead s':>10s}")
    for row in rows:
        if row["overhead"] is None:
            print(f"  {row['mode']:28s} did not finish (MLflow run status {row['status']}, no trial_seconds)")
            continue
        print(f"  {row['mode']:28s} {row['workers']:>7d} {row['trial_seconds']:>8.2f} "
              f"{row['train_seconds']:>8.2f} {row['overhead']:>10.2f}")
    overheads = [row["overhead"] for row in rows if row["overhead"] is not None]
    if not overheads:
        print(f"  no trial finished: overhead not measurable (target <= {target} s: MISSES)")
        return
    median = statistics.median(overheads)
    verdict = "meets" if median <= target else "MISSES"
    print(f"  median overhead {median:.2f} s over {len(overheads)} finished trials (target <= {target} s: {verdict})")


def main():
    with tempfile.TemporaryDirectory(prefix="accelsweep-bench-") as root:
        one, two = Path(root, "one-worker"), Path(root, "two-workers")
        one.mkdir()
        two.mkdir()
        wall = run_sweep(QUICKSTART, one)
        report("quickstart (1 worker per trial, 2 concurrent)", wall, trial_overheads(one), target=1.0)
        wall = run_sweep(two_worker_spec(two), two)
        report("quickstart with 2 workers per trial (1 concurrent)", wall, trial_overheads(two), target=10.0)
    print("\nFor scale (figure from the issue, not measured here): a hand-written Ray Tune + MLflow script "
          "running 8 digits trials of 5 epochs, without compression or measurement, took about 58 s wall "
          "on this kind of machine.")


if __name__ == "__main__":
    main()
