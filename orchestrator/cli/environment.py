"""The process the `accelsweep` command runs in: its logging, and the environment variables Ray,
Tune and MLflow read (each set only when the user has not set it)."""

import logging
import os

RAY_SDK_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")
"""Ray's job SDK sets these to INFO itself, so naming "ray" alone does not quiet them."""


def configure(verbose: bool) -> None:
    """Set up logging and the environment variables Ray, Tune and MLflow read, before they load.

    Args:
        verbose: show Ray's, MLflow's and the trainers' own logs (`accelsweep -v`).

    Example:
        >>> configure(verbose=False)  # changes this process's logging and environment  # doctest: +SKIP
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not verbose:  # libraries that log through the root logger itself (ONNX Runtime's quantizer)
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: record.name != "root" or record.levelno >= logging.ERROR)
    quiet = logging.INFO if verbose else logging.ERROR
    for noisy in ("ray", "mlflow", "alembic", "optuna", "torch", "urllib3", "onnxscript", *RAY_SDK_LOGGERS):
        logging.getLogger(noisy).setLevel(quiet)
    logging.getLogger("trainers").setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", str(verbose).lower())
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ctrl-C raises KeyboardInterrupt here (Tune's own handler would stop the running trials and
    # report them ended); the experiment state saved every 2 s is what `accelsweep resume` uses
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Ray Train's controller polls its workers every 2 s by default, and a worker's report waits
    # for the next poll (its result queue holds one): every epoch and each trial's end waited for it
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.1")
    # per-epoch results carry val_* only; test_accuracy, latency_ms, size_bytes come at the end
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")
