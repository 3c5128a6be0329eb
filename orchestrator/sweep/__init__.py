"""The Ray Tune sweep: search space and algorithm, resources, the tuner, progress lines, the trial
driver and the Tune callback that logs every trial to MLflow."""

