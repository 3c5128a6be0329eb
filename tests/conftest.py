"""Settings and fixtures for the whole suite."""

import shutil
import signal
from pathlib import Path

import pytest

# A shell starting pytest in the background (`pytest &`, nohup, a CI step without a terminal) hands
# it SIGINT ignored, and every command the tests start would inherit that: the Ctrl-C tests would
# send a signal nobody hears. Tests stand where a user's terminal stands, so Ctrl-C is heard again.
signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def new_mlflow_store(tmp_path_factory):
    """Make an empty MLflow sqlite store at a path; returns its tracking URI.

    MLflow builds a new sqlite store's tables by running all its schema migrations, seconds on a
    loaded machine; here that happens once per session and each store is a copy of that empty,
    migrated file: the same store MLflow would make, without the wait. For a test of how a store
    comes to be (or of none being made), point MLflow at a path of its own instead.

    Example:
        >>> client = MlflowClient(new_mlflow_store(tmp_path / "mlflow.db"))
    """
    template = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"

    def make(path: Path) -> str:
        if not template.exists():
            from mlflow.tracking import MlflowClient  # only for the tests that use a store

            MlflowClient(f"sqlite:///{template}").search_experiments()
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    return make
