"""The quiet, paired measurement phase: every finished trial timed in every runtime, against the baseline.

Trials time themselves while other trials train on the same cores, so their latency is only
provisional. Once a sweep's trials are done, one task per sweep (on one node, holding all of its
CPUs so that nothing else runs there) rebuilds every finished trial's deployable from its logged
weights, exports it to each runtime of `deploy.runtimes` (the ONNX Runtime artifact a trial logged,
`model/model.onnx`, is opened as logged, not exported again: what is timed is the file that ships,
in `SESSIONS_PER_ARTIFACT` sessions taken in turn round by round), and times all of them
round-robin with the baseline's (`trainers.measure.paired_latencies`): speedups are medians of
per-round ratios, with a 95% bootstrap interval. `accelsweep bench` runs the same phase later, on
another machine.

Training speed is timed the same way: every one-worker trial's training step, rebuilt from its
checkpoint (`trainers.loop.training_steps`), a few steps per call, round-robin with the baseline's,
one task alone on the node; the speedup is the median per-round ratio of the cost per training
sample. (Trials time their own epochs while another trial trains beside them: those figures stay
as the provisional ones.)

Figures land in each trial's MLflow run: the primary runtime's as `latency_ms`, `latency_b256_ms`,
`speedup`, `speedup_low`, `speedup_high`, ...; every runtime's as `latency_<runtime>_ms`; the
training step's as `train_step_ms`, `train_epoch_s`, `train_step_speedup` (with `_low`, `_high`);
the host and versions as tags; and all of it as `bench/<host>.json` (what `report --host` reads).
"""

import contextlib
import json
import logging
import math
import os
import platform
import socket
import tempfile
import time
from dataclasses import dataclass

from mlflow.entities import Metric, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.config.schema import Spec
from orchestrator.tracking.filters import quoted
from orchestrator.tracking.measured_figures import artifact_path, primary_metrics
from orchestrator.tracking.tags import (
    BASELINE_TAG,
    BENCH_HARDWARE_TAG,
    BENCH_HOST_TAG,
    BENCH_VERSIONS_TAG,
    PARENT_TAG,
    RUNTIME_STATUS_TAG_PREFIX,
    RUNTIME_TAG,
    STATUS_TAG,
    TRIAL_ID_TAG,
)
from trainers.metrics import runtime_latency_name

logger = logging.getLogger(__name__)

SESSIONS_PER_ARTIFACT = 3
"""ONNX Runtime sessions opened on each logged model.onnx, timed in turn round by round: two sessions
of one file differ in speed by 5-7% here (where each was placed in memory), so a figure is the
median over sessions, not one session's draw (benchmarks/README.md, raw_retiming.py)."""
TRAIN_STEPS_PER_CALL = 2
"""Training steps per timed call of the quiet phase (a call is timed about 8 times a round, warm-up included)."""


@dataclass(frozen=True)
class TrialToMeasure:
    """One finished trial, as the measurement phase needs it.

    Attributes:
        trial_id: the Tune trial id.
        run_id: its MLflow child run.
        choices: its technique values by space key.
        trained: the bytes of its `trained.pt` checkpoint.
        baseline: whether it is the sweep's dense fp32 baseline.
        onnx_artifact: the bytes of its logged `model/model.onnx` (a trial whose primary runtime
            was ONNX Runtime), or None.
    """

    trial_id: str
    run_id: str
    choices: dict
    trained: bytes
    baseline: bool
    onnx_artifact: bytes | None = None


def trials_to_measure(client: MlflowClient, parent_run) -> list[TrialToMeasure]:
    """Every finished trial of a sweep with its logged weights, the baseline first.

    Args:
        client: the tracking client.
        parent_run: the sweep's parent run.

    Returns:
        The trials (stopped, diverged and failed ones are left out: they ship nothing).

    Example:
        >>> [trial.trial_id for trial in trials_to_measure(client, parent)][:1]  # doctest: +SKIP
        ['3a975_00000']
    """
    from orchestrator.tracking.store import trial_choices
    from trainers.checkpoints import TRAINED_FILE
    from trainers.runtimes.onnxruntime import FILE as ONNX_FILE

    runs = client.search_runs(
        [parent_run.info.experiment_id],
        filter_string=f"tags.{PARENT_TAG} = {quoted(parent_run.info.run_id)} and tags.`{STATUS_TAG}` = 'finished'",
        max_results=10_000,
    )
    trials = []
    with tempfile.TemporaryDirectory() as directory:
        for run in runs:
            try:
                path = client.download_artifacts(run.info.run_id, f"model/{TRAINED_FILE}", directory)
            except (MlflowException, OSError) as error:
                logger.warning("trial run %s holds no model/%s (%s): not measured", run.info.run_id, TRAINED_FILE, error)
                continue
            with open(path, "rb") as file:
                trained = file.read()
            onnx_artifact = None
            with contextlib.suppress(MlflowException, OSError):  # none logged (another primary runtime): exported again
                with open(client.download_artifacts(run.info.run_id, f"model/{ONNX_FILE}", directory), "rb") as file:
                    onnx_artifact = file.read()
            trials.append(
                TrialToMeasure(
                    trial_id=run.data.tags.get(TRIAL_ID_TAG, run.info.run_id),
                    run_id=run.info.run_id,
                    choices=trial_choices(run.data.params),
                    trained=trained,
                    baseline=run.data.tags.get(BASELINE_TAG) == "true",
                    onnx_artifact=onnx_artifact,
                )
            )
    return sorted(trials, key=lambda trial: (not trial.baseline, trial.trial_id))


def measure_trials(spec: Spec, data, trials: list[TrialToMeasure], runtimes: list[str], device: str = "cpu") -> dict:
    """Rebuild, export (or open the logged ONNX artifact) and time every trial in every runtime,
    paired with the baseline, in this process.

    Args:
        spec: the sweep's spec (recipes, `deploy` settings).
        data: the full data set (a trainers.data.Dataset).
        trials: from `trials_to_measure`; one of them must be the baseline.
        runtimes: the runtimes to measure, the primary first.
        device: where to run ("cpu" or "cuda").

    Returns:
        {"host": host_info(...), "runtimes": runtimes, "rounds": int, "trials": {trial_id:
        {runtime: {batch size: figures} or {"unavailable": why}}}, "control": {runtime: the A/A
        control's figures}, "training": {trial_id: `time_training_steps` figures}} (see
        `paired_latencies`: a second copy of the baseline is timed as a control, and every
        interval is widened by its error).

    Raises:
        ValueError: no baseline among `trials`.

    Example:
        >>> measure_trials(spec, data, trials_to_measure(client, parent), ["onnxruntime", "eager"])  # doctest: +SKIP
    """
    import torch

    baseline = next((trial.trial_id for trial in trials if trial.baseline), None)
    if baseline is None:
        raise ValueError("no finished baseline trial to pair the measurements with")
    control = f"{baseline} (A/A copy)"
    deployables, samples, figures = _deploy_all(spec, data, trials, runtimes, torch.device(device), baseline, control)
    control_figures = {}
    for runtime in runtimes:
        candidates = deployables[runtime]
        if baseline not in candidates:
            for trial_id in set(candidates) - {control}:
                figures[trial_id][runtime] = {"unavailable": f"{runtime} cannot run the baseline: nothing to pair with"}
            continue
        paired = _time_paired(spec, runtime, candidates, samples, baseline, control)
        control_figures[runtime] = paired.pop(control)
        for trial_id, by_batch in paired.items():
            figures[trial_id][runtime] = by_batch
    return {
        "host": host_info(device),
        "runtimes": list(runtimes),
        "rounds": spec.deploy.rounds,
        "trials": figures,
        "control": control_figures,
        "training": time_training_steps(spec, data, trials, device),
    }


def time_training_steps(spec: Spec, data, trials: list[TrialToMeasure], device: str = "cpu") -> dict:
    """Time every one-worker trial's training step round-robin with the baseline's, in this process.

    Args:
        spec: the sweep's spec.
        data: the full data set.
        trials: from `trials_to_measure`; one of them must be the baseline.
        device: where to train ("cpu" or "cuda").

    Returns:
        {trial_id: {"step_ms": median seconds of one step x 1000, "epoch_s": one epoch of such
        steps, "speedup", "speedup_low", "speedup_high": the baseline's cost per training sample
        over the trial's, per round, median and 95% interval (widened by an A/A control's)} or
        {"unavailable": why}} (multi-worker trials train data-parallel: one process cannot time them).

    Example:
        >>> time_training_steps(spec, data, trials_to_measure(client, parent))["3a975_00001"]["speedup"]  # doctest: +SKIP
        1.41
    """
    from orchestrator.config.recipe import recipe_for, workers_of
    from trainers.loop import training_steps
    import torch

    from trainers.measure import paired_latencies

    recipes = {trial.trial_id: recipe_for(spec, trial.choices, device) for trial in trials}
    baseline = next(trial.trial_id for trial in trials if trial.baseline)
    control = f"{baseline} (A/A copy)"
    steps, figures = {}, {}
    with tempfile.TemporaryDirectory() as directory:
        for trial in trials:
            if workers_of(spec, trial.choices) > 1:
                figures[trial.trial_id] = {"unavailable": "a multi-worker trial: its in-sweep figure stays"}
                continue
            path = os.path.join(directory, f"{trial.trial_id}.pt")
            with open(path, "wb") as file:
                file.write(trial.trained)
            try:
                for name in [trial.trial_id, control] if trial.trial_id == baseline else [trial.trial_id]:
                    steps[name] = training_steps(recipes[trial.trial_id], data, path, TRAIN_STEPS_PER_CALL)
            except (RuntimeError, ValueError) as error:  # e.g. a technique that cannot rebuild here
                figures[trial.trial_id] = {"unavailable": f"its training step could not be rebuilt: {error}"[:500]}
    if baseline not in steps:
        return {trial.trial_id: {"unavailable": "the baseline's training step was not timed"} for trial in trials}
    logger.info("timing %d trials' training steps, %d a call, paired with the baseline", len(steps) - 1, TRAIN_STEPS_PER_CALL)
    paired = paired_latencies(
        {name: (lambda _, run=run: run()) for name, run in steps.items()},
        baseline,
        dict.fromkeys(steps, torch.zeros(1)),
        batch_sizes=(1,),
        rounds=spec.deploy.rounds,
        threads=recipes[baseline].threads,
        min_time_s=0.0,
        control=control,
    )
    paired.pop(control)
    for trial_id, by_batch in paired.items():
        figures[trial_id] = _training_figures(by_batch[1], recipes[trial_id], recipes[baseline], len(data.x_train))
    return figures


def _training_figures(paired, recipe, baseline_recipe, train_rows):
    per_sample = recipe.batch_size / baseline_recipe.batch_size  # steps of other batch sizes: per sample
    step_ms = paired["median_ms"] / TRAIN_STEPS_PER_CALL
    return {
        "step_ms": step_ms,
        "epoch_s": math.ceil(train_rows / recipe.batch_size) * step_ms / 1000.0,
        **{key: paired[key] * per_sample for key in ("speedup", "speedup_low", "speedup_high")},
    }


def _deploy_all(spec, data, trials, runtimes, torch_device, baseline, control):
    from orchestrator.config.recipe import recipe_for
    from trainers.loop import deploy_to, rebuild_deployable
    from trainers.runtimes import RuntimeUnavailable
    from trainers.runtimes.onnxruntime import open_onnxruntime

    deployables = {runtime: {} for runtime in runtimes}
    samples = {}
    figures = {trial.trial_id: {} for trial in trials}
    with tempfile.TemporaryDirectory() as directory:
        for trial in trials:
            path = os.path.join(directory, f"{trial.trial_id}.pt")
            with open(path, "wb") as file:
                file.write(trial.trained)
            exported, model_data = rebuild_deployable(recipe_for(spec, trial.choices, torch_device.type), data, path)
            samples[trial.trial_id] = model_data.x_test[: max(spec.deploy.batch_sizes)].to(torch_device)
            copies = [trial.trial_id, control] if trial.trial_id == baseline else [trial.trial_id]
            for runtime in runtimes:
                try:
                    for name in copies:
                        if runtime == "onnxruntime" and trial.onnx_artifact is not None:
                            deployable = [
                                open_onnxruntime(trial.onnx_artifact, exported.fmt.weight_bits, torch_device, spec.deploy.threads)
                                for _ in range(SESSIONS_PER_ARTIFACT)
                            ]
                        else:
                            deployable = deploy_to(runtime, exported, model_data, torch_device, spec.deploy.threads)
                        deployables[runtime][name] = deployable
                except RuntimeUnavailable as error:
                    figures[trial.trial_id][runtime] = {"unavailable": str(error)}
    samples[control] = samples[baseline]
    return deployables, samples, figures


def _time_paired(spec, runtime, candidates, samples, baseline, control):
    from trainers.measure import paired_latencies

    logger.info(
        "timing %d trials in %s: %d interleaved rounds, batch sizes %s, %d thread(s)",
        len(candidates), runtime, spec.deploy.rounds, spec.deploy.batch_sizes, spec.deploy.threads,
    )  # fmt: skip
    return paired_latencies(
        candidates,
        baseline,
        {name: samples[name] for name in candidates},
        batch_sizes=tuple(spec.deploy.batch_sizes),
        rounds=spec.deploy.rounds,
        threads=spec.deploy.threads,
        control=control,
    )


def host_info(device: str = "cpu") -> dict[str, str]:
    """The machine the figures come from: host name, processor (and GPU), runtime versions.

    Example:
        >>> host_info()["host"]  # doctest: +SKIP
        'laptop'
    """
    from orchestrator.config.schema import runtime_names
    from trainers.runtimes import runtime_versions

    hardware = _cpu_model()
    if device.startswith("cuda"):
        import torch

        hardware += f"; {torch.cuda.get_device_name(torch.device(device))}"
    versions = runtime_versions(runtime_names())
    return {"host": socket.gethostname(), "hardware": hardware, "versions": json.dumps(versions, sort_keys=True)}


def log_measurements(client: MlflowClient, parent_id: str, trials: list[TrialToMeasure], measured: dict) -> None:
    """Write a measurement phase's figures into the trials' runs and the sweep's parent run.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run.
        trials: the trials measured.
        measured: `measure_trials`'s result.

    Example:
        >>> log_measurements(client, parent_id, trials, measure_trials(spec, data, trials, ["eager"]))  # doctest: +SKIP
    """
    host = measured["host"]
    primary = measured["runtimes"][0]
    host_tags = {BENCH_HOST_TAG: host["host"], BENCH_HARDWARE_TAG: host["hardware"], BENCH_VERSIONS_TAG: host["versions"]}
    for trial in trials:
        figures = measured["trials"][trial.trial_id]
        metrics = primary_metrics(figures.get(primary, {})) | training_metrics(measured.get("training", {}).get(trial.trial_id, {}))
        measured_in_primary = "unavailable" not in figures.get(primary, {"unavailable": ""})
        tags = host_tags | {RUNTIME_TAG: primary if measured_in_primary else f"none ({primary} unavailable)"}
        for runtime, by_batch in figures.items():
            if "unavailable" in by_batch:
                tags[f"{RUNTIME_STATUS_TAG_PREFIX}{runtime}"] = f"unavailable: {by_batch['unavailable']}"[:5000]
                continue
            tags[f"{RUNTIME_STATUS_TAG_PREFIX}{runtime}"] = "measured"
            metrics |= {runtime_latency_name(runtime, batch): figure["median_ms"] for batch, figure in by_batch.items()}
        now = int(time.time() * 1000)
        client.log_batch(
            trial.run_id,
            metrics=[Metric(key, float(value), now, 0) for key, value in metrics.items()],
            tags=[RunTag(key, value) for key, value in tags.items()],
        )
        stored = {"host": host, "primary": primary, "figures": figures, "training": measured.get("training", {}).get(trial.trial_id)}
        client.log_text(trial.run_id, json.dumps(stored, indent=1), artifact_path(host["host"]))
    client.log_batch(parent_id, tags=[RunTag(key, value) for key, value in host_tags.items()])
    client.log_text(parent_id, json.dumps(measured, indent=1, default=str), artifact_path(host["host"]))


def training_metrics(training: dict) -> dict[str, float]:
    """One trial's quiet training figures (`time_training_steps`) as its run's metrics.

    Example:
        >>> training_metrics({"step_ms": 2.0, "epoch_s": 0.05, "speedup": 1.5, "speedup_low": 1.4, "speedup_high": 1.6})["train_step_speedup"]
        1.5
        >>> training_metrics({"unavailable": "a multi-worker trial"})
        {}
    """
    if not training or "unavailable" in training:
        return {}
    return {"train_step_ms": training["step_ms"], "train_epoch_s": training["epoch_s"]} | {
        f"train_step_{key}": training[key] for key in ("speedup", "speedup_low", "speedup_high")
    }


def _cpu_model():
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
