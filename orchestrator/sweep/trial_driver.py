"""The trial driver: one per Ray Tune trial.

A 1-worker trial trains inside its Tune trial (no worker group to pay for). A trial with more
workers launches a Ray Train `TorchTrainer` (DDP: gloo on CPU, nccl on GPU) from here, the Train
V2 way, and forwards its rank-0 epoch reports to Tune with `TuneReportCallback`; the fit's Ray
Train controller runs in the trial driver's process rather than as an actor of its own. On CPU its
workers only train (`train_for_export`) and the trial driver exports and measures the trained
model (`export_trained`) after the worker group has gone: the driver is a Tune actor that later
trials reuse, where a worker is a new process that would pay its first export's costs (2.6 s in
one trace here) and then exit. On GPU rank 0 exports where it trained. A streamed data set
(`orchestrator.sweep.streaming`) goes to the `TorchTrainer` as its `datasets`: each worker reads
its own shard of the training split; a 1-worker trial iterates the Ray Datasets itself.
"""

import asyncio
import contextlib
import dataclasses
import os
import tempfile

import ray
import ray.train
import torch
from ray import tune
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback
from ray.train.v2._internal.execution.controller import TrainController
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from orchestrator.config.recipe import recipe_for, workers_of
from orchestrator.config.schema import Spec
from orchestrator.sweep import baseline_weights, streaming
from orchestrator.sweep.epoch_reports import EpochReportsToTune
from orchestrator.sweep.resources import PLACEMENT_GROUP_CLEANER_SWITCH, worker_resources
from trainers.checkpoints import TRAINED_FILE, load_trained, save_atomically
from trainers.deployable import Deployable
from trainers.loop import TrialFailed, TrialRecipe, export_trained, train_for_export, train_trial
from trainers.metrics import TRAINED_FOR_EXPORT
from trainers.streamed import StreamedDataset


def trial_driver(config: dict, spec_json: str, data_ref: list, streamed: bool, results_path: str) -> None:
    """The Ray Tune function trainable: train one trial, in-process or with a worker group.

    A trial that distills from the sweep's baseline, or starts from it (`train.start_from:
    baseline`), first waits for the baseline's weights (`baseline_weights.wait_for_baseline_weights`);
    if the baseline ended without any, the trial ends failed, with the reason, before it trains.

    Args:
        config: the trial's sampled values by space key.
        spec_json: the sweep spec as JSON (a plain string travels cheaply to every trial).
        data_ref: a one-element list holding the data set's object-store reference.
        streamed: whether it is a `StreamedDataset` (whose Ray Datasets a worker group reads).
        results_path: the sweep's Tune state directory (names its baseline weights store).

    Example:
        >>> tune.with_parameters(trial_driver, spec_json=spec.model_dump_json(), data_ref=[ref], streamed=False, results_path=path)  # doctest: +SKIP
    """
    spec = Spec.model_validate_json(spec_json)
    workers = workers_of(spec, config)
    fields = baseline_weights.baseline_weights_fields(spec, config)
    try:
        weights = baseline_weights.wait_for_baseline_weights(results_path, fields) if fields else None
    except baseline_weights.NoBaselineWeights as no_weights:
        _report_failure(_report_to_tune, TrialFailed(str(no_weights)))
        return
    if workers == 1:
        device = "cuda" if spec.resources.gpus_per_worker > 0 and torch.cuda.is_available() else "cpu"
        resume = _load_trained(tune.get_checkpoint())
        with (
            _baseline_weights_file(recipe_for(spec, config, device), weights, fields) as recipe,
            _trial_data(ray.get(data_ref[0]), recipe, _epochs_left(recipe, resume), in_worker_group=False) as data,
            failures_end_the_trial(_report_to_tune),
        ):
            train_trial(recipe, data, _report_to_tune, resume)
        return
    trial_id = tune.get_context().get_trial_id()
    # a streamed data set is a small plan: its Ray Datasets go to the workers as their `datasets`
    datasets = streaming.train_datasets(ray.get(data_ref[0])) if streamed else {}
    use_gpu = spec.resources.gpus_per_worker > 0
    recipe = recipe_for(spec, config)
    trainer = _TorchTrainer(
        _train_worker,
        **datasets,
        train_loop_config={
            "recipe": dataclasses.asdict(recipe),
            "data_ref": data_ref,
            "baseline_weights_ref": [ray.put(weights)] if weights else None,
            "baseline_weights_fields": fields,
            "driver_exports": not use_gpu,  # a GPU trial is measured on its GPU, which the driver lacks
        },
        scaling_config=ScalingConfig(
            num_workers=workers, use_gpu=use_gpu, resources_per_worker=worker_resources(spec)
        ),
        run_config=RunConfig(
            name=f"train-{trial_id}",
            storage_path=os.path.join(spec.results_dir, "train_runs"),
            callbacks=[EpochReportsToTune()],
            checkpoint_config=CheckpointConfig(num_to_keep=2),
            failure_config=FailureConfig(max_failures=spec.resources.max_failures),
        ),
    )
    result = trainer.fit()
    if not result.metrics.get(TRAINED_FOR_EXPORT):  # exported by rank 0, or ended diverged or failed
        return
    with (
        _baseline_weights_file(recipe, weights, fields) as recipe,
        _trial_data(ray.get(data_ref[0]), recipe, range(0), in_worker_group=False) as data,  # its test split
        result.checkpoint.as_directory() as directory,
        failures_end_the_trial(_report_to_tune),
    ):
        export_trained(recipe, data, os.path.join(directory, TRAINED_FILE), result.metrics, _report_to_tune)


class _TorchTrainer(TorchTrainer):
    # Ray Train starts a DatasetManager actor for every worker group, with Ray Datasets or without
    # (one more process, which imports Ray Data: 1.3 s of boot on 2 cores); without `datasets` it
    # has nothing to manage, so such a trial does not start it. Nor does it start the
    # placement-group cleaner (2.6 s of boot) where PLACEMENT_GROUP_CLEANER_SWITCH says it could
    # never work.
    def _create_default_callbacks(self):
        left_out = () if self.datasets else (DatasetsCallback,)
        if os.environ.get(PLACEMENT_GROUP_CLEANER_SWITCH) == "0":
            left_out += (PlacementGroupCleanerCallback,)
        return [callback for callback in super()._create_default_callbacks() if not isinstance(callback, left_out)]

    # Ray Train runs each fit's controller as a new actor: one more process that boots Ray before
    # the worker group is even asked for (2.3 s on 2 cores). The trial driver is a Tune actor that
    # later trials reuse, so the controller runs here, in the trial's thread. What a controller
    # actor's death would free still is: its workers are this actor's, and Ray Train's
    # placement-group cleaner watches this actor.
    def _initialize_and_run_controller(self, **controller_init_kwargs):
        controller = TrainController(**controller_init_kwargs)
        asyncio.run(controller.run())
        return controller.get_result()


def _train_worker(config):
    recipe = TrialRecipe(**(config["recipe"] | {"device": str(ray.train.torch.get_device())}))
    weights = ray.get(config["baseline_weights_ref"][0]) if config["baseline_weights_ref"] else None
    resume = _load_trained(ray.train.get_checkpoint())
    train = train_for_export if config["driver_exports"] else train_trial
    with (
        _baseline_weights_file(recipe, weights, config["baseline_weights_fields"]) as recipe,
        _trial_data(ray.get(config["data_ref"][0]), recipe, _epochs_left(recipe, resume), in_worker_group=True) as data,  # its own shard
        failures_end_the_trial(_report_to_train),
    ):
        train(recipe, data, _report_to_train, resume)


def _epochs_left(recipe, resume):
    return range(resume["epoch"] if resume else 0, recipe.epochs)


@contextlib.contextmanager
def _trial_data(data, recipe, epochs, in_worker_group):
    if not isinstance(data, StreamedDataset):
        yield data
        return
    with streaming.trial_dataset(data, recipe.seed, epochs, in_worker_group) as view:
        yield view


@contextlib.contextmanager
def _baseline_weights_file(recipe, weights, fields):
    if weights is None:
        yield recipe
        return
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, baseline_weights.BASELINE_WEIGHTS_FILE)
        with open(path, "wb") as file:
            file.write(weights)
        yield dataclasses.replace(recipe, **{field: path for field in fields})


@contextlib.contextmanager
def failures_end_the_trial(report):
    """Around `train_trial` (or `train_for_export`, `export_trained`): a failure a retry would only
    repeat (`TrialFailed`: a refused technique, an export or agreement error) ends the trial with
    its reason, and its trained weights when it had trained, as the last report: the trial
    returns, so neither Tune nor Ray Train retries it. Errors a retry can fix (a lost worker) are
    raised as they are.

    Args:
        report: the trial's report callable (to Tune, or to Ray Train in a worker).

    Example:
        >>> with failures_end_the_trial(_report_to_tune):  # doctest: +SKIP
        ...     train_trial(recipe, data, _report_to_tune, None)
    """
    try:
        yield
    except TrialFailed as failure:
        _report_failure(report, failure)


def _report_failure(report, failure):
    epoch = failure.trained["epoch"] if failure.trained else 0
    report({"epoch": epoch, "failure": failure.reason}, {"trained": failure.trained} if failure.trained else None)


def _report_to_tune(metrics, checkpoint):
    with tempfile.TemporaryDirectory() as directory:
        saved = _as_checkpoint(checkpoint, directory, tune.Checkpoint)
        tune.report(metrics | _node_id(), checkpoint=saved)


def _report_to_train(metrics, checkpoint):
    rank_zero = ray.train.get_context().get_world_rank() == 0
    with tempfile.TemporaryDirectory() as directory:
        saved = _as_checkpoint(checkpoint, directory, ray.train.Checkpoint) if rank_zero else None
        ray.train.report(metrics | _node_id(), checkpoint=saved)


def _node_id():
    # nodes on one machine can share an IP: the Ray node id tells them apart
    return {"node_id": ray.get_runtime_context().get_node_id()}


def _as_checkpoint(checkpoint, directory, checkpoint_class):
    if checkpoint is None:
        return None
    write_checkpoint(checkpoint, directory)
    return checkpoint_class.from_directory(directory)


def write_checkpoint(checkpoint: dict, directory: str) -> None:
    """Write what a trial reports as its checkpoint into `directory`: each state as `STEM.pt`
    (atomically), a `Deployable` as its runtime's own artifact.

    Args:
        checkpoint: {stem: state or Deployable}, as `trainers.loop.train_trial` reports it.
        directory: an existing directory.

    Example:
        >>> write_checkpoint({"trained": model.state_dict()}, "/tmp/ckpt")  # doctest: +SKIP
    """
    for stem, state in checkpoint.items():
        if isinstance(state, Deployable):
            state.save(directory)  # the shipped artifact, in its runtime's own format
        else:
            save_atomically(state, os.path.join(directory, f"{stem}.pt"))


def _load_trained(checkpoint):
    if checkpoint is None:
        return None
    with checkpoint.as_directory() as directory:
        return load_trained(os.path.join(directory, TRAINED_FILE))


@contextlib.contextmanager
def checkpoint_dir_of(result: dict, trial_checkpoint):
    """A local directory holding a finished trial's last checkpoint, for 1-worker and worker-group
    trials alike, and for local or remote (s3://, gs://) storage (downloaded while in use).

    Args:
        result: the trial's last result (worker-group trials carry the checkpoint's path in it).
        trial_checkpoint: the Tune trial's checkpoint (1-worker trials), or None.

    Yields:
        The directory, or None when the trial saved no checkpoint.

    Example:
        >>> with checkpoint_dir_of(trial.last_result, trial.checkpoint) as directory:  # doctest: +SKIP
        ...     client.log_artifacts(run_id, directory, "model")
    """
    if result.get(CHECKPOINT_PATH_KEY):
        trial_checkpoint = ray.train.Checkpoint(result[CHECKPOINT_PATH_KEY])
    if trial_checkpoint is None:
        yield None
        return
    with trial_checkpoint.as_directory() as directory:
        yield directory
