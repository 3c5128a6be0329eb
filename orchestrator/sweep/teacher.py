"""The sweep's own teacher: distilling trials learn from the dense baseline trained in the same sweep.

The baseline is the search's first point, so it starts first. A `TeacherStore` actor (no CPU) holds
its trained weights once it finishes; a distilling trial waits for them there, then trains against
them (`trainers.techniques.distill`). `TeacherPublisher`, a Tune callback in the driver, puts the
baseline's `trained.pt` into the store when the baseline ends (or, on `accelsweep resume`, when it
finds the baseline already finished), or the reason there is no teacher when it failed, so that no
trial waits for ever. With `train.teacher_path` the user's checkpoint is the teacher and no store
is made. The store lives in Ray, so trials on any node of a cluster reach it.
"""

import logging
import os
import threading

import ray
from ray import tune

from orchestrator.config.recipe import trial_label
from orchestrator.config.schema import Spec
from trainers.checkpoints import TRAINED_FILE
from trainers.techniques import TECHNIQUES, techniques_from_choices

logger = logging.getLogger(__name__)

TEACHER_FILE = "teacher.pt"
WAITING_TRIALS = 256
"""How many trials may wait on the store at once (each waits in one of its threads)."""


class NoTeacher(Exception):
    """The sweep's baseline ended without weights to teach with; the message says why."""


@ray.remote(num_cpus=0, max_concurrency=WAITING_TRIALS)
class TeacherStore:
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
    """The teacher store's Ray actor name for the sweep whose Tune state is at `results_path`.

    Example:
        >>> store_name("/tmp/accelsweep_results/quickstart-20261202-031500")
        'accelsweep-teacher-quickstart-20261202-031500'
    """
    return f"accelsweep-teacher-{os.path.basename(results_path)}"


def sweep_needs_teacher(spec: Spec) -> bool:
    """Whether the sweep's trials may distill from its own baseline: a swept technique takes a
    teacher (a config with a `teacher_path` field, as `distill`) and the spec names no
    `train.teacher_path` of its own.

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> sweep_needs_teacher(load_spec("search_spaces/quickstart.yaml"))
        False
    """
    takes_teacher = any(hasattr(TECHNIQUES[key](), "teacher_path") for key in spec.space if key in TECHNIQUES)
    return takes_teacher and spec.train.teacher_path is None


def trial_needs_teacher(spec: Spec, choices: dict) -> bool:
    """Whether this trial distills from the sweep's baseline (an active technique takes a teacher).

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> trial_needs_teacher(load_spec("search_spaces/quickstart.yaml"), {"rank": 8})
        False
    """
    if spec.train.teacher_path is not None:
        return False
    configs = techniques_from_choices({key: value for key, value in choices.items() if key in TECHNIQUES})
    return any(cfg.active and hasattr(cfg, "teacher_path") for cfg in configs.values())


def start_store(results_path: str):
    """Start the sweep's teacher store (in the driver, before the trials).

    Example:
        >>> store = start_store("/tmp/accelsweep_results/distill-20261202-031500")  # doctest: +SKIP
    """
    return TeacherStore.options(name=store_name(results_path)).remote()


def wait_for_teacher(results_path: str) -> bytes:
    """The baseline's `trained.pt` bytes, once the baseline has finished (blocks until then).

    Raises:
        NoTeacher: the baseline ended without weights (failed, diverged); the reason says which.

    Example:
        >>> weights = wait_for_teacher(results_path)  # doctest: +SKIP
    """
    weights, problem = ray.get(ray.get_actor(store_name(results_path)).get.remote())
    if problem:
        raise NoTeacher(problem)
    return weights


class TeacherPublisher(tune.Callback):
    """Puts the baseline's trained weights into the sweep's teacher store when it ends.

    Args:
        spec: the sweep's spec (to tell the baseline trial by its label).
        results_path: the sweep's Tune state directory (names the store).
        checkpoint_dir_of: `trial_driver.checkpoint_dir_of` (a trial's last checkpoint as a directory).

    Example:
        >>> tune.RunConfig(callbacks=[TeacherPublisher(spec, results_path, checkpoint_dir_of)])  # doctest: +SKIP
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
        problem = _why_no_teacher(trial.status, result)
        weights = None
        if problem is None:
            with self.checkpoint_dir_of(result, trial.checkpoint) as directory:
                path = os.path.join(directory, TRAINED_FILE) if directory else None
                if path and os.path.exists(path):
                    with open(path, "rb") as file:
                        weights = file.read()
            problem = None if weights else "the baseline trial saved no trained weights"
        if problem:
            logger.warning("no teacher for the distilling trials: %s", problem)
            store.fail.remote(problem)
        else:
            store.put.remote(weights)
        self.published = True


def _why_no_teacher(status, result):
    if status == "ERROR":
        return "the baseline trial (the teacher) failed"
    if result.get("failure"):
        return f"the baseline trial (the teacher) failed: {result['failure']}"
    if result.get("diverged"):
        return "the baseline trial (the teacher) diverged"
    return None
