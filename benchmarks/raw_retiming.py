"""Logged vs raw speedup: every finished trial's logged ONNX artifact timed again, raw, against the baseline's.

Reads a finished sweep from an MLflow store (the latest run of the experiment given, default
`quickstart` in ./mlflow.db, what `accelsweep run search_spaces/quickstart.yaml` writes), downloads
each finished trial's logged `model/model.onnx`, and times it independently of accelsweep's code:
`--sessions` ONNX Runtime sessions per artifact (default 3; 1 intra-op thread, 1 inter-op thread,
sequential), a numpy array in, `session.run`, nothing converted; every artifact once per round,
round `i` on its session `i mod n` (two sessions of one file differ in speed by where each sits in
memory: one session is one draw of that), in an order that rotates from round to round, all in
this one process; a trial's raw speedup is the median over rounds of the baseline's median call
divided by its own. Inputs are uniform random rows of the
graph's input shape (a dense MLP's latency does not depend on the values).

It prints, per trial, the logged speedup (the sweep's quiet phase) with its interval, the raw one
and their disagreement |logged / raw - 1|, and the raw speedup of a second session of the
baseline's own file (an A/A copy, its own sessions: how far the raw side lands from 1.0 by itself). Target: within
10% for every trial.

With `--method-check`, each artifact is also loaded as accelsweep's `OnnxRuntimeDeployable` and
timed by `trainers.measure.measure_latency` (the quiet phase's timer, its settings there) in the
same rounds: the "method" column is that speedup and "m-off" its disagreement with the raw one, in
one process, apart from the spread between processes that "off" also holds.

Run: python benchmarks/raw_retiming.py [--uri sqlite:///mlflow.db] [--experiment quickstart] [--rounds 15] [--sessions 3] [--method-check]
"""

import argparse
import os
import tempfile
import time

import numpy as np
import onnxruntime
import torch
from mlflow.tracking import MlflowClient

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # read when artifacts download

from trainers.measure import PAIRED_CALL_TIMING, measure_latency
from trainers.runtimes.onnxruntime import OnnxRuntimeDeployable

CALLS_PER_ROUND = 300
WARMUP_CALLS = 30


def finished_trials(client, experiment):
    """(mode, run, is_baseline) of every finished trial of the experiment's latest sweep."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    parents = client.search_runs([experiment_id], "tags.`accelsweep.kind` = 'sweep'", order_by=["attributes.start_time DESC"], max_results=1)
    parent_id = parents[0].info.run_id
    runs = client.search_runs([experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'", max_results=1000)
    return [
        (run.data.tags.get("accelsweep.mode", run.info.run_name), run, run.data.tags.get("accelsweep.baseline") == "true")
        for run in runs
        if run.data.tags.get("accelsweep.status") == "finished" and "speedup" in run.data.metrics
    ]


def session(path):
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = 1, 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    return onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def median_call_us(run, feeds):
    for _ in range(WARMUP_CALLS):
        run(None, feeds)
    times = []
    for _ in range(CALLS_PER_ROUND):
        start = time.perf_counter()
        run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e6


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uri", default="sqlite:///mlflow.db")
    parser.add_argument("--experiment", default="quickstart")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--sessions", type=int, default=3, help="ONNX Runtime sessions per artifact, taken in turn round by round")
    parser.add_argument("--method-check", action="store_true", help="also time each artifact with accelsweep's timer, in the same rounds")
    args = parser.parse_args()
    client = MlflowClient(tracking_uri=args.uri)
    trials = finished_trials(client, args.experiment)
    sessions, feeds, deployables = {}, {}, {}
    with tempfile.TemporaryDirectory() as directory:
        for mode, run, _ in trials:
            path = client.download_artifacts(run.info.run_id, "model/model.onnx", directory)
            sessions[mode] = [session(path) for _ in range(args.sessions)]
            if args.method_check:
                with open(path, "rb") as artifact:
                    deployables[mode] = OnnxRuntimeDeployable(artifact.read(), torch.device("cpu"))
            graph_input = sessions[mode][0].get_inputs()[0]
            shape = [1] + [int(dim) for dim in graph_input.shape[1:]]
            feeds[mode] = {graph_input.name: np.random.default_rng(0).uniform(0, 16, shape).astype(np.float32)}
    baseline = next(mode for mode, _, is_baseline in trials if is_baseline)
    control = f"{baseline} (A/A copy)"  # other sessions of the baseline's file: the raw side's own noise
    with tempfile.TemporaryDirectory() as directory:
        run_id = next(run.info.run_id for mode, run, _ in trials if mode == baseline)
        path = client.download_artifacts(run_id, "model/model.onnx", directory)
        sessions[control] = [session(path) for _ in range(args.sessions)]
    feeds[control] = feeds[baseline]
    names = list(sessions)
    medians = {name: [] for name in names}
    method_medians = {name: [] for name in deployables}
    examples = {name: torch.from_numpy(next(iter(feeds[name].values()))) for name in deployables}
    for round_index in range(args.rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            medians[name].append(median_call_us(sessions[name][round_index % args.sessions].run, feeds[name]))
            if name in deployables:
                timing = measure_latency(deployables[name], examples[name], **PAIRED_CALL_TIMING)
                method_medians[name].append(timing["median_ms"] * 1000)
    print(f"raw: numpy in, session.run, 1 thread, {args.sessions} sessions a file, {args.rounds} rounds x {CALLS_PER_ROUND} calls, batch 1")
    method_header = f" {'method':>7} {'m-off':>6}" if deployables else ""
    print(f"{'trial':<28} {'raw_us':>8} {'logged':>8} {'interval':>14} {'raw':>7} {'off':>6}{method_header}")
    worst = 0.0
    for mode, run, _ in trials:
        raw = float(np.median(np.array(medians[baseline]) / np.array(medians[mode])))
        metrics = run.data.metrics
        logged = metrics["speedup"]
        off = abs(logged / raw - 1)
        worst = max(worst, off)
        interval = f"[{metrics.get('speedup_low', float('nan')):.2f}, {metrics.get('speedup_high', float('nan')):.2f}]"
        method = ""
        if deployables:
            by_method = float(np.median(np.array(method_medians[baseline]) / np.array(method_medians[mode])))
            method = f" {by_method:6.2f}x {abs(by_method / raw - 1):6.1%}"
        print(f"{mode:<28} {np.median(medians[mode]):8.1f} {logged:7.2f}x {interval:>14} {raw:6.2f}x {off:6.1%}{method}")
    control_raw = float(np.median(np.array(medians[baseline]) / np.array(medians[control])))
    print(f"{control:<28} {np.median(medians[control]):8.1f} {'':>8} {'':>14} {control_raw:6.2f}x  (other sessions of one file)")
    print(f"worst logged-vs-raw disagreement: {worst:.1%} (target <= 10%)")


if __name__ == "__main__":
    main()
