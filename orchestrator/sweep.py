"""Build and run the Ray Tune sweep for a spec: search space, search algorithm, scheduler,
per-trial resources, concurrency, the dense fp32 baseline trial, and progress lines."""

import functools
import json
import logging
import math
import os
import time
from collections.abc import Callable

import ray
from ray import cloudpickle, tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from orchestrator.spec import Spec, domain_of
from orchestrator.training_figures import search_figures
from orchestrator.trial_logger import TrialLogger
from orchestrator.trial import trial_driver, trial_mode, worker_resources, workers_of
from trainers.data import Dataset
from trainers.metrics import online_name
from trainers.techniques import TECHNIQUES, off_value

logger = logging.getLogger(__name__)

DRIVER_MEMORY_BYTES = 64 * 1024**2
"""A worker-group trial's driver asks only for memory: a CPU would starve its own workers."""


def param_space(spec: Spec) -> dict:
    """The spec's `space` as Ray Tune search domains.

    Args:
        spec: the validated spec.

    Returns:
        A Tune param_space: fixed values stay as they are; choice, grid, uniform, loguniform
        and randint (inclusive bounds) become Tune domains.

    Example:
        >>> param_space(spec)["rank"]
        <ray.tune.search.sample.Categorical ...>
    """
    space = {}
    for key, value in spec.space.items():
        form, values = domain_of(value)
        if form == "fixed":
            space[key] = values[0]
        elif form == "grid" or (form == "choice" and spec.search.algorithm == "grid"):
            space[key] = tune.grid_search(values)
        elif form == "choice":
            space[key] = tune.choice(values)
        elif form == "uniform":
            space[key] = tune.uniform(*values)
        elif form == "loguniform":
            space[key] = tune.loguniform(*values)
        else:
            space[key] = tune.randint(values[0], values[1] + 1)
    return space


def baseline_choices(spec: Spec) -> dict:
    """The dense fp32 baseline trial's values: every swept technique off.

    Example:
        >>> baseline_choices(spec)
        {'rank': None, 'quant_bits': 32, ...}
    """
    choices = {key: off_value(key) for key in spec.space if key in TECHNIQUES}
    if "workers" in spec.space:
        choices["workers"] = spec.resources.workers_per_trial
    return choices


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
        >>> trial_resources(spec, {"workers": 2})
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
        >>> max_concurrent_trials(spec, {"CPU": 8.0})
        8
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
        >>> unsatisfiable_resources(spec, ray.nodes())
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


def run_sweep(spec: Spec, data: Dataset, callbacks: list, results_path: str, search_alg) -> tune.ResultGrid:
    """Run every trial of the sweep on the connected Ray cluster.

    Args:
        spec: the validated spec.
        data: the data set, loaded once and shared with every trial through the object store.
        callbacks: Tune callbacks (the MLflow trial logger, progress).
        results_path: the directory for this sweep's Tune state and checkpoints.
        search_alg: the search algorithm, from `search_algorithm(spec)` (keep it to read its
            state afterwards: `optuna_front`).

    Returns:
        Tune's result grid.

    Example:
        >>> grid = run_sweep(spec, data, [TrialLogger(...)], "/tmp/sweep", search_algorithm(spec))
    """
    tuner = tune.Tuner(
        _trainable(spec, data),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=_scheduler(spec),
            num_samples=_samples(spec) + 1,  # the baseline comes first, then the samples
            # Tune applies this to Searchers only; BasicVariantGenerator gets its own (search_algorithm)
            max_concurrent_trials=max_concurrent_trials(spec, ray.cluster_resources()) if isinstance(search_alg, Searcher) else None,
            time_budget_s=spec.search.time_budget_s,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=os.path.basename(results_path),
            storage_path=os.path.dirname(results_path),
            callbacks=callbacks,
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    return tuner.fit()


def resume_sweep(spec: Spec, data: Dataset, results_path: str):
    """Continue an interrupted sweep from its Tune state: finished trials stay finished, unfinished
    and errored ones restart from their last checkpoints.

    Args:
        spec: the sweep's spec (as stored with its MLflow parent run).
        data: the data set, loaded again.
        results_path: the sweep's Tune state directory.

    Returns:
        The sweep's restored `TrialLogger` (its outbox and the trials it already logged came back
        with the Tune state), after the sweep has run to its end.

    Example:
        >>> trial_logger = resume_sweep(spec, data, "/tmp/accelsweep_results/quickstart-20261128-015123")
    """
    tuner = tune.Tuner.restore(results_path, _trainable(spec, data), resume_unfinished=True, resume_errored=True)
    # Tune restores the run config (and so our callbacks, with their state) from its own pickle;
    # it offers no public way to read it back.
    callbacks = tuner._local_tuner.get_run_config().callbacks
    tuner.fit()
    return next(callback for callback in callbacks if isinstance(callback, TrialLogger))


def measure_quietly(spec: Spec, data: Dataset, trials: list) -> dict:
    """The measurement phase, as one Ray task that holds every CPU (and a GPU, for a GPU sweep) of one
    node, so that nothing else runs there while it times.

    Args:
        spec: the sweep's spec.
        data: the data set.
        trials: `bench.trials_to_measure`'s list.

    Returns:
        `bench.measure_trials`'s figures.

    Example:
        >>> figures = measure_quietly(spec, data, bench.trials_to_measure(client, parent))
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
    from orchestrator.bench import measure_trials

    return measure_trials(Spec.model_validate_json(spec_json), data, trials, runtimes, device)


def _trainable(spec, data):
    return tune.with_resources(
        tune.with_parameters(trial_driver, spec_json=spec.model_dump_json(), data_ref=[ray.put(data)]),
        lambda choices: trial_resources(spec, choices),
    )


class ProgressLog(tune.Callback):
    """Logs one line as each trial starts and ends, with the count done and the best so far.

    Args:
        spec: the sweep spec (for the metric, mode and trial count).
        total: how many trials the sweep will run.

    Example:
        >>> tune.RunConfig(callbacks=[ProgressLog(spec, total=9)])
    """

    def __init__(self, spec: Spec, total: int):
        self.spec = spec
        self.total = total
        self.best: tuple[float, str] | None = None
        self.started = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        logger.info("trial %s started: %s", trial.trial_id, trial_mode(self.spec, trial.config))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trials, trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trials, trial, "FAILED")

    def _finish(self, trials, trial, outcome):
        others = [other for other in trials if other is not trial]
        done = 1 + sum(other.status in ("TERMINATED", "ERROR") for other in others)
        running = sum(other.status == "RUNNING" for other in others)
        result = trial.last_result or {}
        metric, mode = online_name(self.spec.search.metrics[0]), self.spec.search.modes[0]
        value = result.get(metric)
        name = trial_mode(self.spec, trial.config)
        if result.get("diverged"):
            outcome = f"diverged at epoch {int(result['diverged_epoch'])}"
        elif isinstance(value, (int, float)) and math.isfinite(value):
            better = self.best is None or (value > self.best[0] if mode == "max" else value < self.best[0])
            if better:
                self.best = (value, name)
        shown = f"{metric}={value:.4g}" if isinstance(value, (int, float)) else ""
        best = f"best {metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else ""
        logger.info(
            "[%d/%d done, %d running, %.0fs] %s %s %s | %s",
            done, self.total, running, time.monotonic() - self.started, name, outcome, shown, best,
        )


def planned_trials(spec: Spec) -> int:
    """How many trials the sweep runs: the samples (times grid points) plus the baseline
    (only the baseline when nothing is swept).

    Example:
        >>> planned_trials(spec)
        9
    """
    grid_points = 1
    for value in spec.space.values():
        form, values = domain_of(value)
        if form == "grid" or (form == "choice" and spec.search.algorithm == "grid"):
            grid_points *= len(values)
    return _samples(spec) * grid_points + 1


def _samples(spec):
    return spec.search.num_samples if spec.space else 0


def search_algorithm(spec: Spec):
    """The spec's search algorithm, with the dense fp32 baseline as its first point.

    Needs a Ray connection (concurrency follows the cluster's resources).

    Args:
        spec: the validated spec.

    Returns:
        An OptunaSearch (TPE; multi-objective when `search.metric` is a list) wrapped in
        DistinctConfigs, or a BasicVariantGenerator (random and grid).

    Example:
        >>> search_algorithm(spec)
        <ray.tune.search.basic_variant.BasicVariantGenerator ...>
    """
    metrics, modes = [online_name(metric) for metric in spec.search.metrics], spec.search.modes
    baseline = [baseline_choices(spec)]
    if spec.search.algorithm == "optuna":
        if len(metrics) == 1:
            optuna = OptunaSearch(metric=metrics[0], mode=modes[0], points_to_evaluate=baseline, seed=spec.train.seed)
        else:
            optuna = OptunaSearch(metric=metrics, mode=modes, points_to_evaluate=baseline, seed=spec.train.seed)
        add_figures = functools.partial(
            search_figures,
            cpus_per_worker=spec.resources.cpus_per_worker,
            gpus_per_worker=spec.resources.gpus_per_worker,
            target_accuracy=spec.train.target_accuracy,
        )
        return DistinctConfigs(optuna, add_figures=add_figures)
    return BasicVariantGenerator(
        points_to_evaluate=baseline,
        random_state=spec.train.seed,
        max_concurrent=max_concurrent_trials(spec, ray.cluster_resources()),
    )


def optuna_front(search_alg) -> list[str] | None:
    """The Tune trial ids on the Optuna study's own Pareto front (multi-objective Optuna only).

    Args:
        search_alg: the search algorithm the sweep ran with.

    Returns:
        The trial ids, sorted; None when the search was not multi-objective Optuna.

    Example:
        >>> optuna_front(search)
        ['3a97578d', 'dcc85855']
    """
    if not isinstance(search_alg, DistinctConfigs) or not isinstance(search_alg.inner.metric, list):
        return None
    optuna = search_alg.inner
    numbers = {trial.number for trial in optuna._ot_study.best_trials}
    inner_ids = {inner_id for inner_id, ot_trial in optuna._ot_trials.items() if ot_trial.number in numbers}
    return sorted({search_alg.tune_trial_of(inner_id) for inner_id in inner_ids})


class DistinctConfigs(Searcher):
    """Never trains the same configuration twice: when the wrapped searcher suggests one it has
    already seen finish, it is told that earlier result again (so its model stays right) and asked
    for another. (Optuna's TPE re-suggested a quarter of a 49-trial Fashion-MNIST sweep otherwise.)

    It also hands the searcher each finished trial's result with the training figures it may
    steer by added (`add_figures`), and a trial that lacks one of the searched metrics (it never
    reached the target, or diverged) as pruned rather than as a result with a hole in it.

    Args:
        inner: the searcher to wrap (OptunaSearch).
        max_repeats: how many repeats in a row to skip before accepting one.
        add_figures: result -> the figures to add to it (`training_figures.search_figures`), or None.

    Example:
        >>> search = DistinctConfigs(OptunaSearch(metric="val_accuracy", mode="max"))
    """

    def __init__(self, inner: Searcher, max_repeats: int = 50, add_figures: Callable[[dict], dict] | None = None):
        super().__init__(metric=inner.metric, mode=inner.mode)
        self.inner = inner
        self.max_repeats = max_repeats
        self.add_figures = add_figures
        self.finished: dict[str, tuple[str, dict]] = {}  # config key -> (tune trial id, its result)
        self.inner_ids: dict[str, str] = {}  # tune trial id -> the id the inner searcher knows it by
        self.repeat_of: dict[str, str] = {}  # inner id of a skipped repeat -> the tune trial it repeats

    def set_search_properties(self, metric, mode, config, **spec):
        return self.inner.set_search_properties(metric, mode, config, **spec)

    def suggest(self, trial_id):
        for attempt in range(self.max_repeats + 1):
            inner_id = f"{trial_id}_{attempt}"
            config = self.inner.suggest(inner_id)
            key = json.dumps(config, sort_keys=True, default=str) if isinstance(config, dict) else None
            if key not in self.finished or attempt == self.max_repeats:
                self.inner_ids[trial_id] = inner_id
                return config
            original, result = self.finished[key]
            self.repeat_of[inner_id] = original
            self._tell(inner_id, result, error=False)
            logger.info("skipped a repeat of trial %s's configuration", original)
        return None

    def on_trial_result(self, trial_id, result):
        self.inner.on_trial_result(self.inner_ids[trial_id], result)

    def on_trial_complete(self, trial_id, result=None, error=False):
        self._tell(self.inner_ids[trial_id], result, error)
        if result and not error and isinstance(result.get("config"), dict):
            self.finished[json.dumps(result["config"], sort_keys=True, default=str)] = (trial_id, result)

    def _tell(self, inner_id, result, error):
        if result and self.add_figures:
            result = result | self.add_figures(result)
        searched = self.inner.metric if isinstance(self.inner.metric, list) else [self.inner.metric]
        if result and any(result.get(metric) is None for metric in searched):
            result = None  # no result and no error: Optuna records the trial as pruned
        self.inner.on_trial_complete(inner_id, result=result, error=error)

    def tune_trial_of(self, inner_id: str) -> str:
        """The Tune trial an inner searcher's trial id stands for (a skipped repeat: the original)."""
        if inner_id in self.repeat_of:
            return self.repeat_of[inner_id]
        return next(trial_id for trial_id, known in self.inner_ids.items() if known == inner_id)

    def save(self, checkpoint_path):
        with open(checkpoint_path, "wb") as file:
            cloudpickle.dump(self.__dict__, file)

    def restore(self, checkpoint_path):
        with open(checkpoint_path, "rb") as file:
            self.__dict__.update(cloudpickle.load(file))


def _scheduler(spec):
    if spec.search.scheduler == "asha":
        return ASHAScheduler(
            metric=spec.search.metrics[0],
            mode=spec.search.modes[0],
            time_attr="epoch",
            grace_period=spec.search.grace_period,
            max_t=spec.search.max_t or spec.train.epochs,
        )
    return FIFOScheduler()


def _most_workers(spec):
    if "workers" not in spec.space:
        return spec.resources.workers_per_trial
    return max(domain_of(spec.space["workers"])[1])
