"""Run and resume the Ray Tune sweep of a spec."""

import os

import ray
from ray import tune
from ray.tune.search import Searcher

from orchestrator.config.schema import Spec
from orchestrator.sweep.resources import max_concurrent_trials, trial_resources
from orchestrator.sweep.search import param_space, sampled_trials, scheduler
from orchestrator.sweep import baseline_weights, faults
from orchestrator.sweep.trial_driver import checkpoint_dir_of, trial_driver
from orchestrator.sweep.trial_logger import TrialLogger
from trainers.data import Dataset
from trainers.streamed import StreamedDataset


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

    Raises:
        SweepFault: the results folder was deleted or its disk filled up (`orchestrator.sweep.faults`).

    A sweep whose trials distill from its baseline or start from it gets its baseline weights
    store and publisher here (`orchestrator.sweep.baseline_weights`).

    Example:
        >>> grid = run_sweep(spec, data, [TrialLogger(...)], "/tmp/sweep", search_algorithm(spec))  # doctest: +SKIP
    """
    weights_store = baseline_weights.start_store(results_path) if baseline_weights.sweep_needs_baseline_weights(spec) else None
    if weights_store is not None:
        callbacks = [*callbacks, baseline_weights.BaselineWeightsPublisher(spec, results_path, checkpoint_dir_of)]
    watch = faults.FaultWatch(results_path)
    tuner = tune.Tuner(
        _trainable(spec, data, results_path),
        param_space=param_space(spec),
        tune_config=tune.TuneConfig(
            search_alg=search_alg,
            scheduler=scheduler(spec),
            num_samples=sampled_trials(spec) + 1,  # the baseline comes first, then the samples
            # Tune applies this to Searchers only; BasicVariantGenerator gets its own (search_algorithm)
            max_concurrent_trials=max_concurrent_trials(spec, ray.cluster_resources()) if isinstance(search_alg, Searcher) else None,
            time_budget_s=spec.search.time_budget_s,
            reuse_actors=True,
            trial_dirname_creator=lambda trial: trial.trial_id,
        ),
        run_config=tune.RunConfig(
            name=os.path.basename(results_path),
            storage_path=os.path.dirname(results_path),
            callbacks=[watch, *callbacks],  # first: it stops before the others write
            verbose=0,
            failure_config=tune.FailureConfig(max_failures=spec.resources.max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
        ),
    )
    with faults.watched(watch):
        grid = tuner.fit()
    del weights_store  # held until the trials are done: Ray ends an actor once no handle is left
    return grid


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
        >>> trial_logger = resume_sweep(spec, data, "/tmp/accelsweep_results/quickstart-20261128-015123")  # doctest: +SKIP
    """
    # its publisher came back with the callbacks, and publishes again
    weights_store = baseline_weights.start_store(results_path) if baseline_weights.sweep_needs_baseline_weights(spec) else None
    tuner = tune.Tuner.restore(
        results_path, _trainable(spec, data, results_path), resume_unfinished=True, resume_errored=True
    )
    # Tune restores the run config (and so our callbacks, with their state) from its own pickle;
    # it offers no public way to read it back.
    callbacks = tuner._local_tuner.get_run_config().callbacks
    watch = next((callback for callback in callbacks if isinstance(callback, faults.FaultWatch)), faults.FaultWatch(results_path))
    with faults.watched(watch):
        tuner.fit()
    del weights_store  # held until the trials are done: Ray ends an actor once no handle is left
    return next(callback for callback in callbacks if isinstance(callback, TrialLogger))


def _trainable(spec, data, results_path):
    return tune.with_resources(
        tune.with_parameters(
            trial_driver,
            spec_json=spec.model_dump_json(),
            data_ref=[ray.put(data)],
            streamed=isinstance(data, StreamedDataset),
            results_path=results_path,
        ),
        lambda choices: trial_resources(spec, choices),
    )
