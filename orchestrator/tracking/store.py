"""The MLflow store: connect, one parent run per sweep, finding a sweep again, and the spec it ran."""

import json
import os
import tempfile

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
    RESULTS_PATH_TAG,
    SWEEP_TAG,
)
from orchestrator.tracking.trial_runs import flatten, param_text


class TrackingError(UserError):
    """The tracking store cannot be reached or written."""


def connect(uri: str, create: bool = True) -> MlflowClient:
    """A client for the tracking store at `uri`, checked by a real read.

    Args:
        uri: an MLflow tracking URI (sqlite:///file.db, http://host:5000, a directory).
        create: whether a missing local sqlite file may be created (False: reading only).

    Returns:
        The client.

    Raises:
        TrackingError: the store cannot be reached.

    Example:
        >>> client = connect("sqlite:///mlflow.db")
    """
    if not create and uri.startswith("sqlite:///") and not os.path.exists(uri.removeprefix("sqlite:///")):
        raise TrackingError(f"no MLflow store at {uri!r} (set --uri or MLFLOW_TRACKING_URI)")
    # a server that is down should be noticed in seconds (the sweep buffers writes), not minutes
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    try:
        client = MlflowClient(tracking_uri=uri)
        client.search_experiments(max_results=1)
    except Exception as error:  # MLflow raises many kinds: connection, SQL, permissions
        raise TrackingError(f"cannot reach the MLflow tracking store {uri!r}: {error}") from None
    return client


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


def finish_sweep_run(client: MlflowClient, parent_id: str, status: str = "FINISHED") -> None:
    """Mark the sweep's parent run as ended.

    Args:
        client: the tracking client.
        parent_id: the parent run's id.
        status: "FINISHED", "FAILED" or "KILLED".

    Example:
        >>> finish_sweep_run(client, parent_id)  # doctest: +SKIP
    """
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
