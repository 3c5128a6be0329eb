"""Settings and fixtures for the whole suite."""

import atexit
import os
import shutil
import signal
import tempfile
from pathlib import Path

import pytest

# A shell starting pytest in the background (`pytest &`, nohup, a CI step without a terminal) hands
# it SIGINT ignored, and every command the tests start would inherit that: the Ctrl-C tests would
# send a signal nobody hears. Tests stand where a user's terminal stands, so Ctrl-C is heard again.
signal.signal(signal.SIGINT, signal.default_int_handler)


def copy_of_new_mlflow_store(path: Path) -> str:
    """Make an empty MLflow sqlite store at a path; returns its tracking URI.

    MLflow builds a new sqlite store's tables by running all its schema migrations, seconds on a
    loaded machine; here that happens once per session and each store is a copy of that empty,
    migrated file: the same store MLflow would make, without the wait. For a test of how a store
    comes to be (or of none being made), point MLflow at a path of its own instead.

    Args:
        path: where the store goes (a file that does not exist yet).

    Example:
        >>> client = MlflowClient(copy_of_new_mlflow_store(tmp_path / "mlflow.db"))  # doctest: +SKIP
    """
    if not _EMPTY_STORE.exists():
        from mlflow.tracking import MlflowClient  # only for the tests that use a store

        _EMPTY_STORE.parent.mkdir(exist_ok=True)
        MlflowClient(f"sqlite:///{_EMPTY_STORE}").search_experiments()
    shutil.copyfile(_EMPTY_STORE, path)
    return f"sqlite:///{path}"


_EMPTY_STORE = Path(tempfile.gettempdir()) / f"accelsweep-tests-{os.getpid()}" / "mlflow.db"
atexit.register(shutil.rmtree, _EMPTY_STORE.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def new_mlflow_store():
    """`copy_of_new_mlflow_store`, as a fixture.

    Example:
        >>> client = MlflowClient(new_mlflow_store(tmp_path / "mlflow.db"))
    """
    return copy_of_new_mlflow_store
