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

`--paired-with DIR [ROUNDS]` runs the 2-worker copy with 4 sampled trials (and the baseline) with this
checkout's code and with DIR's (another checkout, e.g. `git worktree add /tmp/before HEAD~1`),
alternately, ROUNDS times each (default 2), and prints the overheads of each sweep and the median
of the trials after each sweep's first (whose trial driver starts, and exports, for the first time).

`--breakdown [TRIALS]` instead runs the 2-worker copy with TRIALS sampled trials (default 3, plus the
baseline) on a Ray whose logs go to a temporary directory, and reads where each worker-group
trial's seconds went from Ray's own logs: every process the sweep started (from its core-worker
log's first line to its actor's construction, with the actor's class from its stdout), grouped
by class with how many each trial started; Ray Train's controller's own
"[Worker Group Initialization]" phases; and each trial's overhead from MLflow, apart for the first
trial (whose trial driver exports for the first time) and the later ones.
"""

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
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


def two_worker_spec(directory, trials=1):
    spec = yaml.safe_load(QUICKSTART.read_text())
    for section, values in TWO_WORKER_CHANGES.items():
        spec[section] = spec[section] | values if isinstance(values, dict) else values
    spec["search"] |= {"num_samples": trials, "time_budget_s": 120 * trials}
    path = Path(directory) / "quickstart-2workers.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(spec_path, directory, code=REPO):
    env = {key: value for key, value in os.environ.items() if key not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    env["PYTHONPATH"] = str(code)  # `accelsweep run` of this checkout, or of the one it is paired with
    started = time.perf_counter()
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", str(spec_path)], cwd=directory, env=env, capture_output=True, text=True
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
            "started": run.info.start_time,
        })
    return sorted(rows, key=lambda row: row["started"])


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


def breakdown(trials):
    with tempfile.TemporaryDirectory(prefix="accelsweep-overhead-") as root:
        os.environ["RAY_TMPDIR"] = str(Path(root, "ray"))
        wall = run_sweep(two_worker_spec(root, trials), root)
        rows = trial_overheads(root)
        (session,) = Path(root, "ray").rglob("session_2*")
        processes, phases = ray_processes(session / "logs"), controller_phases(session / "logs" / "train")
    fits = len(rows)  # each trial one Ray Train fit, its controller in the trial's process (trial_driver.py)
    print(f"\n{fits} trials of 2 workers, sweep wall time {wall:.1f} s")
    print(f"\n| process (actor class) | started per fit | boot, median s (process start -> actor constructed) |\n|---|---|---|")
    by_class = {}
    for process in processes:
        by_class.setdefault(process["actor"], []).append(process["boot"])
    for actor, boots in sorted(by_class.items(), key=lambda item: -len(item[1])):
        print(f"| {actor} | {len(boots) / fits:.2g} | {statistics.median(boots):.2f} |")
    print(f"\n| Ray Train controller phase | median s |\n|---|---|")
    for phase, seconds in phases.items():
        print(f"| {phase} | {statistics.median(seconds):.2f} |")
    overheads = [row["overhead"] for row in rows if row["overhead"] is not None]
    if overheads:
        later = overheads[1:] or overheads
        print(f"\noverhead (trial - training), s: first trial {overheads[0]:.2f}; later trials median "
              f"{statistics.median(later):.2f} over {len(later)} ({', '.join(f'{o:.2f}' for o in later)}); target <= 10 s")


LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")


def _log_time(line):
    match = LOG_TIME.match(line)
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp() if match else None


def ray_processes(logs):
    processes = []
    for log in logs.glob("python-core-worker-*.log"):
        lines = log.read_text(errors="replace").splitlines()
        constructed = [_log_time(line) for line in lines if "Actor creation task finished" in line]
        pid = log.stem.rsplit("_", 1)[-1]
        outputs = [path.read_text(errors="replace") for path in logs.glob(f"worker-*-{pid}.*")]
        names = [match.group(1) for text in outputs for match in [re.search(r":actor_name:(\w+)", text)] if match]
        if constructed and names:
            processes.append({"actor": names[0], "boot": constructed[0] - _log_time(lines[0])})
    return processes


def controller_phases(train_logs):
    phases = {}
    for log in train_logs.glob("ray-train-sys-controller-*.log"):
        for line in log.read_text(errors="replace").splitlines():
            message = json.loads(line).get("message", "") if line.startswith("{") else ""
            match = re.match(r"\[Worker Group Initialization\] (.+?) in ([0-9.]+)s", message)
            if match:
                phases.setdefault(match.group(1), []).append(float(match.group(2)))
    return phases


def paired(other, rounds, trials):
    later = {"this checkout": [], str(other): []}
    for round_index in range(rounds):
        order = list(later) if round_index % 2 == 0 else list(reversed(later))
        for name in order:
            with tempfile.TemporaryDirectory(prefix="accelsweep-paired-") as root:
                wall = run_sweep(two_worker_spec(root, trials), root, REPO if name == "this checkout" else other)
                overheads = [row["overhead"] for row in trial_overheads(root) if row["overhead"] is not None]
            later[name] += overheads[1:]
            print(f"round {round_index + 1} {name}: sweep wall {wall:.1f} s, overheads " + ", ".join(f"{o:.2f}" for o in overheads), flush=True)
    for name, overheads in later.items():
        median = f"{statistics.median(overheads):.2f} s" if overheads else "none finished"
        print(f"{name}: later trials' median overhead {median} over {len(overheads)}")


def main():
    if "--breakdown" in sys.argv:
        trials = sys.argv[sys.argv.index("--breakdown") + 1:]
        breakdown(int(trials[0]) if trials else 3)
        return
    if "--paired-with" in sys.argv:
        other, *rounds = sys.argv[sys.argv.index("--paired-with") + 1:]
        paired(Path(other).resolve(), int(rounds[0]) if rounds else 2, trials=4)
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
