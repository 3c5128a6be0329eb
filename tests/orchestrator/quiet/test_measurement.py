"""orchestrator.quiet.measurement: the quiet, paired measurement phase, on a real sqlite store holding trials that
really trained (stored as `TrialLogger` stores them), without Ray; and `accelsweep bench` for real."""

import json
import logging
import os
import subprocess
import sys

import pytest

from orchestrator.quiet import measurement
from orchestrator.results.rows import ReportError, sweep_rows
from orchestrator.tracking import measured_figures
from orchestrator.tracking.tags import RUNTIME_TAG


@pytest.fixture(scope="module")
def measured_sweep(stored_trials):
    """`stored_trials`' sweep measured once: (client, parent run, trials, figures, spec, data, the
    runtime of every export the measurement made, in order)."""
    client, parent_id, trials, spec, data = stored_trials
    exports, runtimes_logger = _ExportLog(), logging.getLogger("trainers.runtimes")
    level = runtimes_logger.level
    runtimes_logger.setLevel(logging.INFO)
    runtimes_logger.addHandler(exports)
    try:
        figures = measurement.measure_trials(spec, data, trials, spec.deploy.runtimes)
    finally:
        runtimes_logger.removeHandler(exports)
        runtimes_logger.setLevel(level)
    measurement.log_measurements(client, parent_id, trials, figures)
    return client, client.get_run(parent_id), trials, figures, spec, data, exports.runtimes


class _ExportLog(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.runtimes = []

    def emit(self, record):
        if record.msg.startswith("exported to"):
            self.runtimes.append(record.args[0])


@pytest.mark.slow
def test_every_finished_trial_is_measured_with_the_baseline_first(measured_sweep):
    _, _, trials, figures, _, _, _ = measured_sweep
    assert [trial.trial_id for trial in trials] == ["t0", "t1", "t2"] and trials[0].baseline
    for trial_id in ("t0", "t1", "t2"):
        for runtime in ("onnxruntime", "eager"):
            by_batch = figures["trials"][trial_id][runtime]
            assert set(by_batch) == {1, 16}
            assert len(by_batch[1]["round_speedups"]) == 3
            assert by_batch[16]["p95_ms"] >= by_batch[16]["median_ms"] > 0


@pytest.mark.slow
def test_onnx_runtime_times_each_trials_logged_artifact_and_exports_only_the_other_runtimes(measured_sweep, tmp_path):
    client, _, trials, _, _, _, exported_runtimes = measured_sweep
    for trial in trials:
        with open(client.download_artifacts(trial.run_id, "model/model.onnx", str(tmp_path)), "rb") as file:
            assert trial.onnx_artifact == file.read()  # what ships is what is timed
    assert exported_runtimes == ["eager"] * 4  # the three trials and the baseline's A/A copy


@pytest.mark.slow
def test_the_baseline_is_paired_with_itself_and_an_a_a_copy_sets_the_error(measured_sweep):
    _, _, _, figures, _, _, _ = measured_sweep
    for runtime in ("onnxruntime", "eager"):
        own = figures["trials"]["t0"][runtime][1]
        assert own["round_speedups"] == [1.0, 1.0, 1.0] and own["speedup"] == 1.0
        # its interval is the A/A control's error around 1.0 (two copies of one model timed apart)
        assert own["speedup_low"] <= 1.0 <= own["speedup_high"]
        copy = figures["control"][runtime][1]
        assert len(copy["round_speedups"]) == 3 and copy["speedup_low"] <= 1.0 <= copy["speedup_high"]


@pytest.mark.slow
def test_figures_land_in_each_trial_run_and_the_report(measured_sweep):
    client, parent, trials, figures, _, _, _ = measured_sweep
    host = figures["host"]["host"]
    for trial in trials:
        run = client.get_run(trial.run_id)
        metrics, tags = run.data.metrics, run.data.tags
        assert metrics["latency_ms"] == figures["trials"][trial.trial_id]["onnxruntime"][1]["median_ms"]
        assert metrics["latency_onnxruntime_ms"] == metrics["latency_ms"]
        assert metrics["latency_eager_b16_ms"] == figures["trials"][trial.trial_id]["eager"][16]["median_ms"]
        assert metrics["latency_b16_ms"] > 0 and metrics["inference_samples_per_s"] == pytest.approx(16 / (metrics["latency_b16_ms"] / 1000))
        assert tags[RUNTIME_TAG] == "onnxruntime" and tags["accelsweep.bench.host"] == host
        assert "cores" in tags["accelsweep.bench.hardware"]
        assert "onnxruntime" in json.loads(tags["accelsweep.bench.versions"])
        assert measured_figures.host_figures(client, trial.run_id, host)["speedup"] == metrics["speedup"]
    rows = {row["trial_id"]: row for row in sweep_rows(client, parent)}
    # the report reads the quiet figures (whether the baseline is on the front is up to the timings:
    # t2, dropout only, has the baseline's graph and size)
    assert rows["t0"]["speedup"] == 1.0 and rows["t0"]["latency_ms"] == figures["trials"]["t0"]["onnxruntime"][1]["median_ms"]
    assert rows["t1"]["runtime"] == "onnxruntime" and rows["t1"]["speedup_low"] <= rows["t1"]["speedup"] <= rows["t1"]["speedup_high"]


@pytest.mark.slow
def test_report_for_a_host_that_never_measured_says_so(measured_sweep):
    client, parent, _, _, _, _, _ = measured_sweep
    assert measured_figures.host_figures(client, parent.info.run_id, "elsewhere") is None
    with pytest.raises(ReportError, match="host 'elsewhere' measured no trial of this sweep"):
        sweep_rows(client, parent, host="elsewhere")


@pytest.mark.slow
def test_a_sweep_without_a_finished_baseline_cannot_be_paired(measured_sweep):
    _, _, trials, _, spec, data, _ = measured_sweep
    with pytest.raises(ValueError, match="no finished baseline trial"):
        measurement.measure_trials(spec, data, trials[1:], ["eager"])


@pytest.mark.slow
def test_accelsweep_bench_times_again_on_this_machine(measured_sweep, tmp_path):
    client, parent, trials, _, _, _, _ = measured_sweep
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "bench", "benchdemo", "--uri", client.tracking_uri,
         "--runtimes", "eager", "--rounds", "3"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert "t1" in completed.stdout and "eager" in completed.stdout
    run = client.get_run(trials[1].run_id)
    assert run.data.tags[RUNTIME_TAG] == "eager" and run.data.metrics["latency_ms"] == run.data.metrics["latency_eager_ms"]
    bad = subprocess.run(
        [sys.executable, "-m", "orchestrator", "bench", "benchdemo", "--uri", client.tracking_uri, "--runtimes", "eagr"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == (
        "error: accelsweep bench: argument --runtimes: unknown runtime 'eagr' (did you mean 'eager'?); "
        "valid: aotinductor, compile, eager, onnxruntime, got 'eagr' (see accelsweep bench --help)"
    )


@pytest.mark.slow
def test_training_steps_are_timed_paired_with_the_baseline_and_drive_the_report(measured_sweep):
    client, parent, trials, figures, _, _, _ = measured_sweep
    training = figures["training"]
    assert set(training) == {"t0", "t1", "t2"} and training["t0"]["speedup"] == 1.0
    assert training["t0"]["speedup_low"] <= 1.0 <= training["t0"]["speedup_high"]  # widened by the A/A copy's error
    for trial in trials:
        figure = training[trial.trial_id]
        assert figure["speedup_low"] <= figure["speedup"] <= figure["speedup_high"] and figure["step_ms"] > 0
        first = {key: client.get_metric_history(trial.run_id, key)[0].value for key in ("train_step_speedup", "train_epoch_s")}
        assert first == {"train_step_speedup": figure["speedup"], "train_epoch_s": figure["epoch_s"]}  # `bench` logs later ones
    rows = {row["trial_id"]: row for row in sweep_rows(client, parent)}
    latest = client.get_run(trials[1].run_id).data.metrics["train_step_speedup"]
    assert rows["t1"]["train_speedup"] == latest and "train_speedup_provisional" in rows["t1"]
