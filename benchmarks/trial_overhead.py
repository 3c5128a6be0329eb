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

`--breakdown [ROUNDS]` instead splits one 2-worker trial into its phases, without Tune or MLflow:
a local Ray (`connect_ray`, as `accelsweep run` starts it) fits a Ray Train `TorchTrainer` of 2 workers whose loop is the trial
driver's own worker function (`_train_worker`: a 1-epoch digits trial), and the workers write
the times they saw. Phases: `ray.init`; fit start -> the first worker process exists (the Train
V2 controller actor starts and asks for the worker group); worker process start -> its loop
starts (the worker boots: Ray, torch and Ray Train import, the gloo process group is set up);
the loop (importing the trial driver's modules, then training, exporting and measuring); loop
end -> fit returns (reports, worker group and controller teardown). Each round runs the
variants interleaved, a fresh Ray each: `as shipped`, `preimport` (a `worker_process_setup_hook`
that imports torch and the trial driver's modules as each Ray worker process starts) and the same
without Ray Train's preemption watcher (`RAY_TRAIN_ENABLE_PREEMPTION_WATCHER=0`: one actor fewer
per fit); it prints each phase's median per variant.
"""

import dataclasses
import os
import statistics
import subprocess
import sys
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


def _timed_worker(config):
    import json

    import psutil

    entry = time.time()
    from orchestrator.sweep.trial_driver import _train_worker

    imported = time.time()
    _train_worker(config)
    times = {"created": psutil.Process().create_time(), "entry": entry, "imported": imported, "exit": time.time()}
    Path(config["times_dir"], f"{os.getpid()}.json").write_text(json.dumps(times))


def breakdown_round(setup_hook, directory):
    import json

    import ray
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from orchestrator.cluster.ray_connection import connect_ray
    from orchestrator.config.loading import parse_spec
    from orchestrator.config.recipe import recipe_for
    from trainers.data import load_dataset

    started = time.time()
    connect_ray(None, runtime_env={"worker_process_setup_hook": setup_hook} if setup_hook else None)
    fit_started = time.time()
    spec = parse_spec({"name": "overhead", "data": {"source": "digits"}, "model": {"kind": "mlp", "hidden": [32]}, "train": {"epochs": 1}})
    config = {"recipe": dataclasses.asdict(recipe_for(spec, {})), "data_ref": [ray.put(load_dataset("digits"))],
              "baseline_weights_ref": None, "baseline_weights_fields": None, "times_dir": str(directory)}
    TorchTrainer(_timed_worker, train_loop_config=config, scaling_config=ScalingConfig(num_workers=2),
                 run_config=RunConfig(storage_path=str(directory))).fit()
    fit_ended = time.time()
    ray.shutdown()
    workers = [json.loads(path.read_text()) for path in Path(directory).glob("*.json")]
    return {
        "ray.init": fit_started - started,
        "controller + worker processes start": min(w["created"] for w in workers) - fit_started,
        "worker boot (Ray, torch, gloo)": max(w["entry"] - w["created"] for w in workers),
        "import trial driver modules": max(w["imported"] - w["entry"] for w in workers),
        "trial (train, export, measure)": max(w["exit"] - w["imported"] for w in workers),
        "teardown (loop end -> fit returns)": fit_ended - max(w["exit"] for w in workers),
        "fit total": fit_ended - fit_started,
    }


PREIMPORT = "orchestrator.cluster.ray_connection.preimport_training_modules"
BREAKDOWN_VARIANTS = {
    "as shipped": (None, {}),
    "preimport": (PREIMPORT, {}),
    "preimport, no preemption watcher": (PREIMPORT, {"RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0"}),
}
"""name -> (worker_process_setup_hook, environment variables of the fit)."""


def breakdown(rounds):
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")  # as the CLI sets it
    phases = {name: [] for name in BREAKDOWN_VARIANTS}
    for round_index in range(rounds):
        for name, (hook, env) in BREAKDOWN_VARIANTS.items():
            saved = {key: os.environ.get(key) for key in env}
            os.environ.update(env)
            with tempfile.TemporaryDirectory(prefix="accelsweep-overhead-") as directory:
                phases[name].append(breakdown_round(hook, directory))
            for key, value in saved.items():
                os.environ.pop(key) if value is None else os.environ.__setitem__(key, value)
            print(f"round {round_index + 1} {name}: " + ", ".join(f"{k} {v:.2f}" for k, v in phases[name][-1].items()), flush=True)
    print(f"\n| phase (median of {rounds}, s) | " + " | ".join(BREAKDOWN_VARIANTS) + " |")
    print("|---|" + "---|" * len(BREAKDOWN_VARIANTS))
    for phase in phases["as shipped"][0]:
        medians = [statistics.median(r[phase] for r in phases[name]) for name in BREAKDOWN_VARIANTS]
        print(f"| {phase} | " + " | ".join(f"{m:.2f}" for m in medians) + " |")


def main():
    if "--breakdown" in sys.argv:
        rounds = sys.argv[sys.argv.index("--breakdown") + 1:]
        breakdown(int(rounds[0]) if rounds else 3)
        return
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
