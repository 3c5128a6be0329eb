"""The quiet phase as one Ray task holding every CPU (and a GPU, for a GPU sweep) of one node."""

import logging
import time

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.config.schema import Spec
from orchestrator.quiet.measurement import log_measurements, trials_to_measure
from trainers.data import Dataset

logger = logging.getLogger("accelsweep")


def measure_quietly(spec: Spec, data: Dataset, trials: list) -> dict:
    """The measurement phase, as one Ray task that holds every CPU (and a GPU, for a GPU sweep) of one
    node, so that nothing else runs there while it times.

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
    nodes = [node for node in ray.nodes() if node.get("Alive") and node["Resources"].get(needs, 0) >= 1]
    node = max(nodes, key=lambda node: node["Resources"].get("CPU", 0))
    task = ray.remote(_measure_task).options(
        num_cpus=node["Resources"].get("CPU", 0),
        num_gpus=1 if device == "cuda" else 0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False),
    )
    return ray.get(task.remote(spec.model_dump_json(), data, trials, list(spec.deploy.runtimes), device))


def _measure_task(spec_json, data, trials, runtimes, device):
    from orchestrator.quiet.measurement import measure_trials

    return measure_trials(Spec.model_validate_json(spec_json), data, trials, runtimes, device)


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
