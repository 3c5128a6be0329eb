"""orchestrator.sweep.trial_driver: the Ray Train trainer of a worker-group trial (its fits run in the
sweep tests: the shared finished sweep's 2-worker trials, the streamed 2-worker sweep)."""

import pytest
import ray
import ray.data
from ray._private.state import actors
from ray.train import RunConfig, ScalingConfig
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.callbacks.placement_group_callback import PlacementGroupCleanerCallback

from orchestrator.sweep.resources import PLACEMENT_GROUP_CLEANER_SWITCH
from orchestrator.sweep.trial_driver import _TorchTrainer
from tests.orchestrator.conftest import started_local_ray


@pytest.fixture(scope="module")
def local_ray():
    with started_local_ray(2):
        yield


def _callback_types(**datasets):
    trainer = _TorchTrainer(lambda config: None, scaling_config=ScalingConfig(num_workers=2), **datasets)
    return {type(callback) for callback in trainer._create_default_callbacks()}


def test_a_worker_group_without_ray_datasets_starts_no_dataset_manager_and_one_with_them_does(local_ray):
    assert DatasetsCallback not in _callback_types()  # the callback that starts the DatasetManager actor
    assert DatasetsCallback in _callback_types(datasets={"train": ray.data.range(4)})


def test_a_worker_group_starts_a_placement_group_cleaner_unless_the_switch_says_it_cannot_work(local_ray, monkeypatch):
    assert PlacementGroupCleanerCallback in _callback_types()  # a cluster's Ray, with a dashboard
    monkeypatch.setenv(PLACEMENT_GROUP_CLEANER_SWITCH, "0")  # what `accelsweep run` sets on its local Ray
    assert PlacementGroupCleanerCallback not in _callback_types()


def _touch_rank_file(config):
    rank = ray.train.get_context().get_world_rank()
    (config["directory"] / f"rank{rank}").touch()


@ray.remote(num_cpus=0, runtime_env={"env_vars": {PLACEMENT_GROUP_CLEANER_SWITCH: "0"}})
class _TrialActor:
    # what a Tune trial is: an actor, and the fit runs in it
    def fit(self, directory):
        trainer = _TorchTrainer(
            _touch_rank_file,
            train_loop_config={"directory": directory},
            scaling_config=ScalingConfig(num_workers=2),
            run_config=RunConfig(storage_path=str(directory), name="fit"),
        )
        return trainer.fit().error


def test_a_fit_runs_its_controller_in_the_trial_actor_and_its_workers_as_actors(tmp_path, local_ray):
    assert ray.get(_TrialActor.remote().fit.remote(tmp_path)) is None
    started = [actor["ActorClassName"] for actor in actors().values()]
    assert sorted(path.name for path in tmp_path.glob("rank*")) == ["rank0", "rank1"]
    assert started.count("RayTrainWorker") == 2
    assert "TrainController" not in started  # Ray Train's own fit starts its controller as one more actor
    assert "PlacementGroupCleaner" not in started
