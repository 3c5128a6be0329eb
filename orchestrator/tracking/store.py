"""The MLflow store: connect, one parent run per sweep, finding a sweep again, and the spec it ran."""

import contextlib
import errno
import fcntl
import json
import os
import sqlite3
import stat
import tempfile
import urllib.parse

import yaml
from mlflow.entities import Param
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from orchestrator.config.loading import parse_spec
from orchestrator.config.schema import Spec
from orchestrator.errors import UserError
from orchestrator.tracking.filters import quoted
from orchestrator.tracking.tags import (
    EXPERIMENT_KIND_TAG,
    KIND_TAG,
    MODEL_TRAINING,
    PARENT_TAG,
    RESULTS_PATH_TAG,
    SWEEP_TAG,
)
from orchestrator.tracking.trial_runs import flatten, param_text


SQLITE_PREFIX = "sqlite:///"
SQLITE_HEADER = b"SQLite format 3\x00"
"""The first 16 bytes of every sqlite database file."""
MLFLOW_TABLES = {"alembic_version", "experiments", "runs"}
"""Tables every MLflow store has; a database with tables but not these is another program's."""
LOCK_WAIT_S = 5.0
"""How long a look at a local store waits for another process's write lock."""


class TrackingError(UserError):
    """The tracking store cannot be reached or written."""


def connect(uri: str, create: bool = True) -> MlflowClient:
    """A client for the tracking store at `uri`, checked by a real read.

    A local sqlite file is looked at first, read-only: MLflow creates and migrates its tables in
    whatever sqlite file it is given, so a file that is not an MLflow store (another program's
    database, not sqlite at all, a FIFO, a device) is refused untouched. A new store is created
    by one process at a time (two sweeps starting together would both create its tables).

    Args:
        uri: an MLflow tracking URI (sqlite:///file.db, http://host:5000, a directory).
        create: whether a missing or empty local sqlite store may be created (False: reading only).

    Returns:
        The client.

    Raises:
        TrackingError: the store cannot be reached, or is not an MLflow store.

    Example:
        >>> client = connect("sqlite:///mlflow.db")
    """
    # a server that is down should be noticed in seconds (the sweep buffers writes), not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    path = sqlite_path(uri)
    if path is None:
        return _open_client(uri)
    with _folder_locked(path, exclusive=create):
        existed = _check_sqlite_store(uri, path, create)
        try:
            return _open_client(uri)
        except TrackingError:
            if not existed:  # nothing half-made left behind (a full disk, say)
                for leftover in (path, f"{path}-journal"):
                    with contextlib.suppress(OSError):
                        os.remove(leftover)
            raise


def sqlite_path(uri: str) -> str | None:
    """The file of a local sqlite tracking URI, or None for any other kind of store.

    Example:
        >>> sqlite_path("sqlite:///runs/mlflow.db?timeout=20"), sqlite_path("http://127.0.0.1:5000")
        ('runs/mlflow.db', None)
    """
    if not uri.startswith(SQLITE_PREFIX):
        return None
    return uri.removeprefix(SQLITE_PREFIX).split("?", 1)[0] or None


def _open_client(uri):
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many kinds: connection, SQL, permissions
        text = str(error).strip()
        if "disk is full" in text or getattr(error, "errno", None) == errno.ENOSPC:
            raise TrackingError(f"disk full at {sqlite_path(uri) or uri}: cannot write the MLflow store {uri!r}") from None
        first_line = text.splitlines()[0] if text else type(error).__name__  # SQLAlchemy appends the SQL and a link
        raise TrackingError(f"cannot reach the MLflow tracking store {uri!r}: {first_line}") from None
    return client


def _check_sqlite_store(uri, path, create):
    # True when the file holds something already (an MLflow store, or an empty sqlite database)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        if not create:
            raise TrackingError(f"no MLflow store at {uri!r} (set --uri or MLFLOW_TRACKING_URI)") from None
        return False
    except OSError as error:
        raise TrackingError(f"cannot read the MLflow store {uri!r}: {error.strerror}") from None
    if not stat.S_ISREG(mode):
        raise TrackingError(f"{path} is {_file_kind(mode)}, not an MLflow store (an sqlite file): set --uri or MLFLOW_TRACKING_URI")
    with open(path, "rb") as file:
        head = file.read(len(SQLITE_HEADER))
    if head and head != SQLITE_HEADER:
        raise TrackingError(f"{path} is not an sqlite database (it starts with {head[:8]!r}), so not an MLflow store; left untouched")
    tables = _sqlite_tables(path) if head else set()
    if tables and not MLFLOW_TABLES <= tables:
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise TrackingError(f"{path} is another program's sqlite database (tables: {shown}), not an MLflow store; left untouched")
    if not tables and not create:
        raise TrackingError(f"no MLflow store at {uri!r}: {path} is an empty file (set --uri or MLFLOW_TRACKING_URI)")
    return True


def _sqlite_tables(path):
    try:  # mode=ro: looking never writes, not even a journal
        with contextlib.closing(sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=LOCK_WAIT_S)) as db:
            return {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    except sqlite3.DatabaseError as error:
        if "locked" in str(error):
            raise TrackingError(f"{path} is locked by another process (waited {LOCK_WAIT_S:g} s); try again when it is done") from None
        raise TrackingError(f"{path} is not a readable sqlite database ({error}), so not an MLflow store; left untouched") from None


@contextlib.contextmanager
def _folder_locked(path, exclusive):
    # a lock on the store's folder (no lock file left behind), held while the store is checked and
    # MLflow opens it: exclusive where it may create its tables, shared for a reader (which then
    # never sees a store half-created); a folder that cannot be locked goes unlocked
    try:
        folder = os.open(os.path.dirname(path) or ".", os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(folder, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        yield
    finally:
        os.close(folder)  # closing releases the lock


def _file_kind(mode):
    kinds = {stat.S_ISDIR: "a directory", stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device",
             stat.S_ISBLK: "a block device", stat.S_ISSOCK: "a socket"}  # fmt: skip
    return next((kind for test, kind in kinds.items() if test(mode)), "not a regular file")


def start_sweep_run(client: MlflowClient, spec: Spec, spec_text: str, results_path: str) -> str:
    """Create the sweep's parent run, with the spec's settings as params and the spec as a file.

    Args:
        client: the tracking client.
        spec: the validated spec.
        spec_text: the spec file's text, stored as the artifact `spec.yaml`.
        results_path: where Ray Tune keeps this sweep's state (for `accelsweep resume`).

    Returns:
        The parent run's id.

    Example:
        >>> parent_id = start_sweep_run(client, spec, Path(path).read_text(), "/tmp/results")  # doctest: +SKIP
    """
    experiment = client.get_experiment_by_name(spec.experiment)
    experiment_id = experiment.experiment_id if experiment else client.create_experiment(spec.experiment)
    client.set_experiment_tag(experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    run = client.create_run(
        experiment_id,
        run_name=spec.name,
        tags={SWEEP_TAG: spec.name, KIND_TAG: "sweep", RESULTS_PATH_TAG: results_path},
    )
    params = flatten(spec.model_dump(exclude={"space", "tracking", "ray"}))
    params["space"] = json.dumps(spec.space)
    client.log_batch(run.info.run_id, params=[Param(k, param_text(v)) for k, v in params.items()])
    client.log_text(run.info.run_id, spec_text, "spec.yaml")
    return run.info.run_id


def find_sweep_by_results_path(client: MlflowClient, results_path: str):
    """The parent run of the sweep whose Tune state is in `results_path`.

    Raises:
        TrackingError: no sweep in this store has that results path.

    Example:
        >>> find_sweep_by_results_path(client, "/tmp/accelsweep_results/quickstart-20261128-015123")  # doctest: +SKIP
    """
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments, filter_string=f"tags.`{RESULTS_PATH_TAG}` = {quoted(results_path)}")
    if not runs:
        raise TrackingError(f"no sweep in {client.tracking_uri} has its results in {results_path}")
    return runs[0]


def finish_sweep_run(client: MlflowClient, parent_id: str, status: str = "FINISHED", running_trials: str | None = None) -> None:
    """Mark the sweep's parent run as ended.

    Args:
        client: the tracking client.
        parent_id: the parent run's id.
        status: "FINISHED", "FAILED" or "KILLED".
        running_trials: a status for its trials' runs still RUNNING (a sweep that cannot be
            resumed), or None to leave them for `accelsweep resume`.

    Example:
        >>> finish_sweep_run(client, parent_id)  # doctest: +SKIP
    """
    if running_trials:
        experiment_id = client.get_run(parent_id).info.experiment_id
        running = f"tags.{PARENT_TAG} = {quoted(parent_id)} and attributes.status = 'RUNNING'"
        for run in client.search_runs([experiment_id], filter_string=running):
            client.set_terminated(run.info.run_id, status=running_trials)
    client.set_terminated(parent_id, status=status)


def find_sweep_run(client: MlflowClient, name_or_id: str):
    """The parent run of a sweep, by run id or by sweep name (the newest sweep of that name).

    Args:
        client: the tracking client.
        name_or_id: a parent run id, or the spec's `name`.

    Returns:
        The MLflow parent run.

    Raises:
        TrackingError: no such sweep in the store.

    Example:
        >>> find_sweep_run(client, "quickstart").info.run_id  # doctest: +SKIP
    """
    try:
        run = client.get_run(name_or_id)
        if run.data.tags.get(KIND_TAG) == "sweep":
            return run
    except Exception:  # not a run id: look it up as a name
        pass
    try:
        name = quoted(name_or_id)
    except ValueError:
        raise TrackingError(f"no sweep named or with run id {name_or_id!r}: a sweep's name holds no quotes") from None
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(
        experiments,
        filter_string=f"tags.`{SWEEP_TAG}` = {name} and tags.`{KIND_TAG}` = 'sweep'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        raise TrackingError(f"no sweep named or with run id {name_or_id!r} in {client.tracking_uri}")
    return runs[0]


def trial_choices(params: dict[str, str]) -> dict:
    """A trial's choices parsed back from its MLflow params (all strings there).

    Each value is read as YAML ("null" -> None, "8" -> 8, "0.1" -> 0.1), and a string that is
    still a number in Python's notation ("1e-05", which YAML 1.1 leaves a string) becomes a float.

    Args:
        params: the child run's params, as `run.data.params`.

    Returns:
        The choices by space key.

    Example:
        >>> trial_choices({"rank": "8", "dropout": "0.1", "l1": "1e-05", "feature_keep": "null"})
        {'rank': 8, 'dropout': 0.1, 'l1': 1e-05, 'feature_keep': None}
    """
    return {key: _param_value(text) for key, text in params.items()}


def sweep_spec(client: MlflowClient, parent_run) -> Spec:
    """The validated spec a sweep ran, read from its parent run's `spec.yaml` artifact.

    Args:
        client: the tracking client.
        parent_run: the sweep's parent run.

    Raises:
        TrackingError: the run holds no spec.yaml.
        SpecError: the stored spec no longer validates (the code changed since the sweep ran).

    Example:
        >>> sweep_spec(client, find_sweep_run(client, "quickstart")).name  # doctest: +SKIP
        'quickstart'
    """
    run_id = parent_run.info.run_id
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = client.download_artifacts(run_id, "spec.yaml", directory)
        except (MlflowException, OSError) as error:
            raise TrackingError(f"sweep run {run_id} holds no spec.yaml artifact: {error}") from None
        with open(path) as file:
            raw = yaml.safe_load(file)
    return parse_spec(raw, source=f"spec.yaml of sweep run {run_id}")


def _param_value(text):
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
