"""orchestrator.sweep.trial_driver: the Ray Train trainer of a worker-group trial (its fits run in the
sweep tests: the shared finished sweep's 2-worker trials, the streamed 2-worker sweep)."""

import ray.data
from ray.train import ScalingConfig
from ray.train.v2._internal.callbacks import DatasetsCallback

from orchestrator.sweep.trial_driver import _TorchTrainer


def _callback_types(**datasets):
    trainer = _TorchTrainer(lambda config: None, scaling_config=ScalingConfig(num_workers=2), **datasets)
    return {type(callback) for callback in trainer._create_default_callbacks()}


def test_a_worker_group_without_ray_datasets_starts_no_dataset_manager_and_one_with_them_does():
    assert DatasetsCallback not in _callback_types()  # the callback that starts the DatasetManager actor
    assert DatasetsCallback in _callback_types(datasets={"train": ray.data.range(4)})
