"""Progress lines while a sweep runs."""

import logging
import math
import time

from ray import tune

from orchestrator.config.recipe import trial_label
from orchestrator.config.schema import Spec
from trainers.metrics import online_name

logger = logging.getLogger(__name__)


class ProgressLog(tune.Callback):
    """Logs one line as each trial starts and ends, with the count done and the best so far.

    Args:
        spec: the sweep spec (for the metric, its direction and the trial count).
        total: how many trials the sweep will run.

    Example:
        >>> tune.RunConfig(callbacks=[ProgressLog(spec, total=9)])  # doctest: +SKIP
    """

    def __init__(self, spec: Spec, total: int):
        self.spec = spec
        self.total = total
        self.best: tuple[float, str] | None = None
        self.started = time.monotonic()

    def on_trial_start(self, iteration, trials, trial, **info):
        logger.info("trial %s started: %s", trial.trial_id, trial_label(self.spec, trial.config))

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._finish(trials, trial, "done")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._finish(trials, trial, "FAILED")

    def _finish(self, trials, trial, outcome):
        others = [other for other in trials if other is not trial]
        done = 1 + sum(other.status in ("TERMINATED", "ERROR") for other in others)
        running = sum(other.status == "RUNNING" for other in others)
        result = trial.last_result or {}
        metric, direction = online_name(self.spec.search.metrics[0]), self.spec.search.modes[0]
        value = result.get(metric)
        name = trial_label(self.spec, trial.config)
        if result.get("failure"):
            outcome = f"failed: {result['failure']} (tagged in MLflow)"
        elif result.get("diverged"):
            outcome = f"diverged at epoch {int(result['diverged_epoch'])}"
        elif isinstance(value, (int, float)) and math.isfinite(value):
            better = self.best is None or (value > self.best[0] if direction == "max" else value < self.best[0])
            if better:
                self.best = (value, name)
        shown = f"{metric}={value:.4g}" if isinstance(value, (int, float)) else ""
        best = f"best {metric}={self.best[0]:.4g} ({self.best[1]})" if self.best else ""
        logger.info(
            "[%d/%d done, %d running, %.0fs] %s %s %s | %s",
            done, self.total, running, time.monotonic() - self.started, name, outcome, shown, best,
        )
