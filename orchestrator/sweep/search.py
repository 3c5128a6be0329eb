"""The search: the spec's space as Tune domains, the dense fp32 baseline trial, the search algorithm
and scheduler, and how many trials a sweep plans.
"""

import functools
import json
import logging
from collections.abc import Callable

import ray
from ray import cloudpickle, tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search import BasicVariantGenerator, Searcher
from ray.tune.search.optuna import OptunaSearch

from orchestrator.config.schema import Spec
from orchestrator.config.space_rules import domain_of
from orchestrator.results.training_figures import search_figures
from orchestrator.sweep.resources import max_concurrent_trials
from trainers.metrics import online_name
from trainers.techniques import TECHNIQUES, off_value

logger = logging.getLogger(__name__)


def param_space(spec: Spec) -> dict:
    """The spec's `space` as Ray Tune search domains.

    Args:
        spec: the validated spec.

    Returns:
        A Tune param_space: fixed values stay as they are; choice, grid, uniform, loguniform
        and randint (inclusive bounds) become Tune domains.

    Example:
        >>> param_space(spec)["rank"]  # doctest: +SKIP
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
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> baseline_choices(spec)
        {'rank': None, 'weight_decay': 0.0, 'l1': 0.0, 'dropout': 0.0, 'quant_bits': 32}
    """
    choices = {key: off_value(key) for key in spec.space if key in TECHNIQUES}
    if "workers" in spec.space:
        choices["workers"] = spec.resources.workers_per_trial
    return choices


def planned_trials(spec: Spec) -> int:
    """How many trials the sweep runs: the samples (times grid points) plus the baseline
    (only the baseline when nothing is swept).

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> planned_trials(spec)
        9
    """
    grid_points = 1
    for value in spec.space.values():
        form, values = domain_of(value)
        if form == "grid" or (form == "choice" and spec.search.algorithm == "grid"):
            grid_points *= len(values)
    return sampled_trials(spec) * grid_points + 1


def sampled_trials(spec: Spec) -> int:
    """How many trials the search samples, besides the baseline (none when nothing is swept).

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> sampled_trials(spec)
        8
    """
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
        >>> search_algorithm(spec)  # doctest: +SKIP
        <ray.tune.search.basic_variant.BasicVariantGenerator ...>
    """
    metrics, directions = [online_name(metric) for metric in spec.search.metrics], spec.search.modes
    baseline = [baseline_choices(spec)]
    if spec.search.algorithm == "optuna":
        if len(metrics) == 1:
            optuna = OptunaSearch(metric=metrics[0], mode=directions[0], points_to_evaluate=baseline, seed=spec.train.seed)
        else:
            optuna = OptunaSearch(metric=metrics, mode=directions, points_to_evaluate=baseline, seed=spec.train.seed)
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
        >>> optuna_front(search)  # doctest: +SKIP
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


def scheduler(spec: Spec):
    """The trial scheduler: ASHA, stopping trials early on the search's per-epoch metric, or FIFO.

    Example:
        >>> scheduler(spec)  # doctest: +SKIP
        <ray.tune.schedulers.trial_scheduler.FIFOScheduler ...>
    """
    if spec.search.scheduler == "asha":
        return ASHAScheduler(
            metric=spec.search.metrics[0],
            mode=spec.search.modes[0],
            time_attr="epoch",
            grace_period=spec.search.grace_period,
            max_t=spec.search.max_t or spec.train.epochs,
        )
    return FIFOScheduler()
