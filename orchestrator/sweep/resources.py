"""What a trial reserves on the cluster, how many run at once, and whether one can ever fit."""

from ray import tune

from orchestrator.config.recipe import workers_of
from orchestrator.config.schema import Spec
from orchestrator.config.space_rules import domain_of

DRIVER_MEMORY_BYTES = 64 * 1024**2
"""A worker-group trial's driver asks only for memory: a CPU would starve its own workers."""
PLACEMENT_GROUP_CLEANER_SWITCH = "ACCELSWEEP_PLACEMENT_GROUP_CLEANER"
"""accelsweep's switch: "0" starts no Ray Train placement-group cleaner beside a worker-group trial.
The cleaner asks Ray's state API whether the trial is still alive, to free its workers' placement
group if it died; a Ray without a dashboard (the local one `accelsweep run` starts) has no state
API, so there the cleaner could never answer and is only one more process per trial."""


def trial_resources(spec: Spec, choices: dict) -> tune.PlacementGroupFactory:
    """What one trial reserves: its worker's CPUs/GPUs when it trains in-process, else only a
    little memory for its driver (its Ray Train workers reserve their own CPUs/GPUs when they
    start; reserving them here too would leave them waiting for resources forever).

    Args:
        spec: the sweep spec.
        choices: the trial's sampled values (its `workers` choice, if swept).

    Returns:
        The trial's placement group factory.

    Example:
        >>> trial_resources(spec, {"workers": 2})  # doctest: +SKIP
    """
    if workers_of(spec, choices) == 1:
        return tune.PlacementGroupFactory([worker_resources(spec)])
    return tune.PlacementGroupFactory([{"memory": DRIVER_MEMORY_BYTES}])


def max_concurrent_trials(spec: Spec, cluster: dict) -> int:
    """How many trials run at once: the spec's value, else as many as the cluster's CPUs and GPUs fit.

    Args:
        spec: the sweep spec.
        cluster: `ray.cluster_resources()`.

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> max_concurrent_trials(spec, {"CPU": 8.0})  # the spec says 2
        2
    """
    if spec.resources.max_concurrent_trials:
        return spec.resources.max_concurrent_trials
    workers = _most_workers(spec)
    fits = cluster.get("CPU", 0) // (spec.resources.cpus_per_worker * workers)
    if spec.resources.gpus_per_worker > 0:
        fits = min(fits, cluster.get("GPU", 0) // (spec.resources.gpus_per_worker * workers))
    return max(1, int(fits))


def unsatisfiable_resources(spec: Spec, nodes: list[dict]) -> str | None:
    """Why no trial could ever be scheduled on this cluster, or None if the biggest one fits.

    Args:
        spec: the sweep spec.
        nodes: `ray.nodes()`.

    Example:
        >>> unsatisfiable_resources(spec, ray.nodes())  # doctest: +SKIP
    """
    alive = [node["Resources"] for node in nodes if node.get("Alive")]
    workers = _most_workers(spec)
    need = {"CPU": spec.resources.cpus_per_worker, "GPU": spec.resources.gpus_per_worker}
    for name, amount in need.items():
        if amount == 0:
            continue
        largest = max((node.get(name, 0) for node in alive), default=0)
        total = sum(node.get(name, 0) for node in alive)
        if largest < amount or total < amount * workers:
            return (
                f"resources: a trial needs {workers} worker(s) x {amount:g} {name}, but the cluster has "
                f"{total:g} {name} in all and at most {largest:g} on one node"
            )
    return None


def _most_workers(spec):
    if "workers" not in spec.space:
        return spec.resources.workers_per_trial
    return max(domain_of(spec.space["workers"])[1])


def worker_resources(spec: Spec) -> dict[str, float]:
    """One worker's reservation: {"CPU": cpus_per_worker} plus {"GPU": gpus_per_worker} if any.

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> worker_resources(spec)
        {'CPU': 1.0}
    """
    resources = {"CPU": spec.resources.cpus_per_worker}
    if spec.resources.gpus_per_worker > 0:
        resources["GPU"] = spec.resources.gpus_per_worker
    return resources
