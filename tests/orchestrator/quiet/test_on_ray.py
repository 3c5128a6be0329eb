"""orchestrator.quiet.on_ray: the quiet phase on a real local Ray, over a stored sweep of trials that
really trained."""

import concurrent.futures
import logging
import time

import pytest
import ray

from orchestrator.quiet import on_ray
from tests.orchestrator.conftest import started_local_ray


def _hold_a_cpu_until(path):
    import os

    while not os.path.exists(path):
        time.sleep(0.05)


@pytest.fixture
def local_ray():
    with started_local_ray(2):
        yield


@pytest.mark.slow
def test_on_a_single_node_ray_it_times_in_this_process_once_every_cpu_is_free(stored_trials, local_ray, tmp_path, caplog):
    client, parent_id, trials, spec, data = stored_trials
    release = tmp_path / "release"
    trial_still_running = ray.remote(num_cpus=1)(_hold_a_cpu_until).remote(str(release))
    caplog.set_level(logging.INFO, logger="orchestrator.quiet.measurement")  # its "timing ..." lines
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        measuring = pool.submit(on_ray.measure_quietly, spec, data, trials)
        time.sleep(3)
        measured_yet = [record for record in caplog.records if record.name.startswith(("orchestrator.quiet", "trainers"))]
        assert not measuring.done() and not measured_yet, "it measured while a trial still held a CPU"
        release.touch()
        ray.get(trial_still_running)
        figures = measuring.result(timeout=600)
    assert set(figures["trials"]) == {trial.trial_id for trial in trials}
    assert all(figures["trials"][trial.trial_id]["onnxruntime"][1]["median_ms"] > 0 for trial in trials)
    timed_here = [record.getMessage() for record in caplog.records if record.getMessage().startswith("timing ")]
    assert len(timed_here) == 3, timed_here  # onnxruntime, eager and the training steps, logged by this process
    deadline = time.monotonic() + 60  # Ray removes a placement group asynchronously
    while ray.available_resources().get("CPU") != 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ray.available_resources().get("CPU") == 2, "the hold on the node's CPUs was not let go"
