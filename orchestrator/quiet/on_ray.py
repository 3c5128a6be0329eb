"""The quiet phase on one node of the sweep's Ray, holding every CPU (and a GPU, for a GPU sweep)
of it: in this process, under a placement group of those resources, where the Ray is this
machine's single node; as one Ray task of them on the biggest node of a cluster."""

import contextlib
import logging
import time

import ray
from ray.util.placement_group import placement_group, remove_placement_group
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.config.schema import Spec
from orchestrator.quiet.measurement import log_measurements, measure_trials, trials_to_measure
from trainers.data import Dataset

logger = logging.getLogger("accelsweep")


def measure_quietly(spec: Spec, data: Dataset, trials: list) -> dict:
    """The measurement phase, holding every CPU (and a GPU, for a GPU sweep) of one node, so that
    nothing else runs there while it times. On a single-node Ray whose node runs this process (the
    local Ray `accelsweep run` starts), it times here once a placement group holds those resources:
    this process already holds the data and torch, where a Ray task's new worker would import torch
    and ONNX Runtime and receive the data first (1.3 s of the quickstart's quiet phase). On a
    cluster it is one Ray task of those resources on the node with the most CPUs.

    Args:
        spec: the sweep's spec.
        data: the data set.
        trials: `measurement.trials_to_measure`'s list.

    Returns:
        `measurement.measure_trials`'s figures.

    Example:
        >>> figures = measure_quietly(spec, data, bench.trials_to_measure(client, parent))  # doctest: +SKIP
    """
    device = "cuda" if spec.resources.gpus_per_worker > 0 else "cpu"
    needs = "GPU" if device == "cuda" else "CPU"
    alive = [node for node in ray.nodes() if node.get("Alive")]
    node = max((node for node in alive if node["Resources"].get(needs, 0) >= 1), key=lambda node: node["Resources"].get("CPU", 0))
    held = {"CPU": node["Resources"].get("CPU", 0), "GPU": 1 if device == "cuda" else 0}
    if len(alive) == 1 and node["NodeID"] == ray.get_runtime_context().get_node_id():
        with _holding(held):
            return measure_trials(spec, data, trials, list(spec.deploy.runtimes), device)
    task = ray.remote(_measure_task).options(
        num_cpus=held["CPU"], num_gpus=held["GPU"], scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)
    )
    return ray.get(task.remote(spec.model_dump_json(), data, trials, list(spec.deploy.runtimes), device))


def _measure_task(spec_json, data, trials, runtimes, device):
    return measure_trials(Spec.model_validate_json(spec_json), data, trials, runtimes, device)


@contextlib.contextmanager
def _holding(resources):
    reservation = placement_group([{name: amount for name, amount in resources.items() if amount}], strategy="STRICT_PACK")
    try:
        ray.get(reservation.ready())  # once the trials' actors have let go of every CPU
        yield
    finally:
        remove_placement_group(reservation)


def measure_sweep(spec: Spec, data: Dataset, client, parent_id: str) -> None:
    """The quiet phase of a sweep that just ran: every finished trial timed on one idle node, paired
    with the baseline, and the figures logged to MLflow. Without a finished baseline the latencies
    stay provisional.

    Args:
        spec: the sweep's spec.
        data: the data set.
        client: the tracking client.
        parent_id: the sweep's parent run id.

    Example:
        >>> measure_sweep(spec, data, client, parent_id)  # doctest: +SKIP
    """
    trials = trials_to_measure(client, client.get_run(parent_id))
    if not any(trial.baseline for trial in trials):
        logger.warning("no finished baseline trial: latencies stay provisional (no quiet measurement)")
        return
    logger.info(
        "measuring %d finished trials quietly in %s, paired with the baseline (%d rounds)",
        len(trials), ", ".join(spec.deploy.runtimes), spec.deploy.rounds,
    )  # fmt: skip
    started = time.monotonic()
    log_measurements(client, parent_id, trials, measure_quietly(spec, data, trials))
    logger.info("measured in %.0fs", time.monotonic() - started)
