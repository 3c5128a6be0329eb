"""What a worker group's reports tell Tune: its epochs, not the hand-over of its trained state.

A module of its own that imports Ray alone: Ray Train's controller unpickles its callbacks as it
starts, and a callback class in `trial_driver` would make every controller import torch and the
trainers first (seconds per worker-group trial on 2 cores).
"""

from ray.tune.integration.ray_train import TuneReportCallback

from trainers.metrics import TRAINED_FOR_EXPORT


class EpochReportsToTune(TuneReportCallback):
    """`TuneReportCallback`, except for the workers' last report when it holds the trained state
    the trial driver exports (`TRAINED_FOR_EXPORT`): the trial's final result comes from the
    driver, after the export, so Tune (and a scheduler that stops a trial at its last epoch)
    never takes the unexported model for the trial's end.

    Example:
        >>> RunConfig(callbacks=[EpochReportsToTune()])  # doctest: +SKIP
    """

    def after_report(self, run_context, metrics, checkpoint):
        if not metrics[0].get(TRAINED_FOR_EXPORT):
            super().after_report(run_context, metrics, checkpoint)
