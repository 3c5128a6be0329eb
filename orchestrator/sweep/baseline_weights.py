"""The sweep's own baseline weights: the dense baseline trained in the same sweep is the teacher of
its distilling trials, and with `train.start_from: baseline` the start of every trial with an
active technique.

The baseline is the search's first point, so it starts first. A `BaselineWeightsStore` actor (no
CPU) holds its trained weights once it finishes; a trial that needs them (`baseline_weights_fields`)
waits for them there, writes them to one file and trains with it as its teacher
(`trainers.techniques.distill`), its start weights (`trainers.loop.TrialRecipe.start_weights_path`)
or both. `BaselineWeightsPublisher`, a Tune callback in the driver, puts the baseline's `trained.pt`
into the store when the baseline ends (or, on `accelsweep resume`, when it finds the baseline
already finished), or the reason there are none when it failed, so that no trial waits for ever.
With `train.teacher_path` the user's checkpoint is the teacher: the store is made only when trials
also start from the baseline. The store lives in Ray, so trials on any node of a cluster reach it.
"""

import logging
import os
import threading

import ray
from ray import tune

from orchestrator.config.recipe import recipe_for, trial_label
from orchestrator.config.schema import Spec
from trainers.checkpoints import TRAINED_FILE
from trainers.loop import starts_from_trained
from trainers.techniques import TECHNIQUES, techniques_from_choices

logger = logging.getLogger(__name__)

BASELINE_WEIGHTS_FILE = "baseline_trained.pt"
WAITING_TRIALS = 256
"""How many trials may wait on the store at once (each waits in one of its threads)."""
USES = {"teacher_path": "distill from", "start_weights_path": "start from"}
"""The `TrialRecipe` fields the baseline's weights can fill, and what a trial does with them."""


class NoBaselineWeights(Exception):
    """The sweep's baseline ended without trained weights; the message says why, and what for."""


@ray.remote(num_cpus=0, max_concurrency=WAITING_TRIALS)
class BaselineWeightsStore:
    """The baseline's trained weights (a `trained.pt`'s bytes), or why there are none, once known."""

    def __init__(self):
        self.known = threading.Event()
        self.weights: bytes | None = None
        self.problem: str | None = None

    def put(self, weights: bytes) -> None:
        self.weights, self.problem = weights, None
        self.known.set()

    def fail(self, problem: str) -> None:
        if not self.known.is_set():
            self.problem = problem
            self.known.set()

    def get(self) -> tuple[bytes | None, str | None]:
        self.known.wait()
        return self.weights, self.problem


def store_name(results_path: str) -> str:
    """The baseline weights store's Ray actor name for the sweep whose Tune state is at `results_path`.

    Example:
        >>> store_name("/tmp/accelsweep_results/quickstart-20261202-031500")
        'accelsweep-baseline-weights-quickstart-20261202-031500'
    """
    return f"accelsweep-baseline-weights-{os.path.basename(results_path)}"


def sweep_needs_baseline_weights(spec: Spec) -> bool:
    """Whether some trial of the sweep may need its own baseline's weights: its trials start from
    them (`train.start_from: baseline`), or a swept technique takes a teacher (a config with a
    `teacher_path` field, as `distill`) and the spec names no `train.teacher_path` of its own.

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> sweep_needs_baseline_weights(load_spec("search_spaces/quickstart.yaml"))
        False
    """
    takes_teacher = any(hasattr(TECHNIQUES[key](), "teacher_path") for key in spec.space if key in TECHNIQUES)
    return spec.train.start_from == "baseline" or (takes_teacher and spec.train.teacher_path is None)


def baseline_weights_fields(spec: Spec, choices: dict) -> tuple[str, ...]:
    """The `TrialRecipe` fields this trial fills with its sweep's baseline weights (keys of `USES`):
    "teacher_path" when an active technique takes a teacher and the spec names none, and
    "start_weights_path" when the trial starts from the baseline (`trainers.loop.starts_from_trained`).
    Empty when it needs none, as for the baseline itself.

    Args:
        spec: the sweep spec.
        choices: the trial's sampled values by space key.

    Example:
        >>> from orchestrator.config.loading import parse_spec
        >>> spec = parse_spec({"name": "t", "data": {"source": "digits"}, "train": {"start_from": "baseline"}})
        >>> baseline_weights_fields(spec, {"distill": 0.5}), baseline_weights_fields(spec, {})
        (('teacher_path', 'start_weights_path'), ())
    """
    configs = techniques_from_choices({key: value for key, value in choices.items() if key in TECHNIQUES})
    distills = spec.train.teacher_path is None and any(cfg.active and hasattr(cfg, "teacher_path") for cfg in configs.values())
    starts = starts_from_trained(recipe_for(spec, choices))
    return tuple(field for field, needed in (("teacher_path", distills), ("start_weights_path", starts)) if needed)


def start_store(results_path: str):
    """Start the sweep's baseline weights store (in the driver, before the trials).

    Example:
        >>> store = start_store("/tmp/accelsweep_results/distill-20261202-031500")  # doctest: +SKIP
    """
    return BaselineWeightsStore.options(name=store_name(results_path)).remote()


def wait_for_baseline_weights(results_path: str, fields: tuple[str, ...]) -> bytes:
    """The baseline's `trained.pt` bytes, once the baseline has finished (blocks until then).

    Args:
        results_path: the sweep's Tune state directory (names the store).
        fields: what the trial needs them for (`baseline_weights_fields`), named in the message.

    Raises:
        NoBaselineWeights: the baseline ended without weights (failed, diverged); the reason says
            which, and what the trial needed them for.

    Example:
        >>> weights = wait_for_baseline_weights(results_path, ("start_weights_path",))  # doctest: +SKIP
    """
    weights, problem = ray.get(ray.get_actor(store_name(results_path)).get.remote())
    if problem:
        raise NoBaselineWeights(f"{problem}, so there are no weights to {' or '.join(USES[field] for field in fields)}")
    return weights


class BaselineWeightsPublisher(tune.Callback):
    """Puts the baseline's trained weights into the sweep's store when it ends.

    Args:
        spec: the sweep's spec (to tell the baseline trial by its label).
        results_path: the sweep's Tune state directory (names the store).
        checkpoint_dir_of: `trial_driver.checkpoint_dir_of` (a trial's last checkpoint as a directory).

    Example:
        >>> tune.RunConfig(callbacks=[BaselineWeightsPublisher(spec, results_path, checkpoint_dir_of)])  # doctest: +SKIP
    """

    def __init__(self, spec: Spec, results_path: str, checkpoint_dir_of):
        self.spec = spec
        self.results_path = results_path
        self.checkpoint_dir_of = checkpoint_dir_of
        self.published = False

    def __getstate__(self):  # a restored sweep publishes again to its new store
        return self.__dict__ | {"published": False}

    def on_step_begin(self, iteration, trials, **info):
        if self.published:
            return
        for trial in trials:
            if trial.status in ("TERMINATED", "ERROR") and trial_label(self.spec, trial.config) == "baseline":
                self._publish(trial)
                return

    def _publish(self, trial):
        store = ray.get_actor(store_name(self.results_path))
        result = trial.last_result or {}
        problem = _why_no_weights(trial.status, result)
        weights = None
        if problem is None:
            with self.checkpoint_dir_of(result, trial.checkpoint) as directory:
                path = os.path.join(directory, TRAINED_FILE) if directory else None
                if path and os.path.exists(path):
                    with open(path, "rb") as file:
                        weights = file.read()
            problem = None if weights else "the baseline trial saved no trained weights"
        if problem:
            logger.warning("no baseline weights for the trials waiting for them: %s", problem)
            store.fail.remote(problem)
        else:
            store.put.remote(weights)
        self.published = True


def _why_no_weights(status, result):
    if status == "ERROR":
        return "the baseline trial failed"
    if result.get("failure"):
        return f"the baseline trial failed: {result['failure']}"
    if result.get("diverged"):
        return "the baseline trial diverged"
    return None
