"""Settings and fixtures for the whole suite."""

import atexit
import collections
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

# Torch's OpenMP threads spin at every barrier while they wait for each other (libgomp's default):
# with more runnable processes than cores (two pytest-xdist workers, a sweep's Ray processes, a
# colleague's run on the same machine) a thread that lost its core holds the others back at every
# operation; a 2-thread training epoch took 14-21 s there against 0.16 s on one thread, and 0.48 s
# with waiting threads asleep. Set before torch loads, here and in every process the tests start
# (they inherit it), so that trials and training steps run at the machine's speed, not the spin's.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


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


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups (`--dist loadgroup`, pyproject.toml)
def pytest_collection_modifyitems(items):
    """Group the tests that share a built fixture onto one pytest-xdist worker, slow tests first.

    The tests of a module that use one of its module-scoped fixtures (a trained model, a process
    group, a Ray) are one group, so the fixture is built once; so are the tests that read the
    session's one real sweep (`finished_sweep`). Every other test goes to whichever worker is
    free. The slow tests and groups start first; the many quick tests fill the end of the run.
    """
    for item in items:
        group = _shared_fixture_group(item)
        if group:
            item.add_marker(pytest.mark.xdist_group(group))
    slow_tests = collections.Counter(_unit_of(item) for item in items if item.get_closest_marker("slow"))
    items.sort(key=lambda item: -slow_tests[_unit_of(item)])  # stable: a group's own order is kept


SHARED_SWEEP_FIXTURE = "finished_sweep"
"""The session fixture of tests/orchestrator/conftest.py that runs a real sweep."""


def _shared_fixture_group(item):
    if SHARED_SWEEP_FIXTURE in item.fixturenames:
        return SHARED_SWEEP_FIXTURE
    fixtures = getattr(item, "_fixtureinfo", None)
    scopes = {fixture.scope for defs in (fixtures.name2fixturedefs.values() if fixtures else ()) for fixture in defs}
    return item.nodeid.split("::")[0] if "module" in scopes else None


def _unit_of(item):
    marker = item.get_closest_marker("xdist_group")
    return marker.args[0] if marker else item.nodeid


@pytest.fixture(scope="session")
def new_mlflow_store():
    """`copy_of_new_mlflow_store`, as a fixture.

    Example:
        >>> client = MlflowClient(new_mlflow_store(tmp_path / "mlflow.db"))
    """
    return copy_of_new_mlflow_store
