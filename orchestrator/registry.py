"""Put a sweep's chosen trial in the MLflow Model Registry, one click from deployment.

The deployable model is rebuilt from what MLflow holds, nothing else: the sweep's `spec.yaml`
(parent run artifact), the trial's choices (child run params) and its trained weights (child run
artifact `model/trained.pt`). It is then exported exactly as the trial exported it for measuring,
logged into the trial's own run with a signature and an input example, registered, and loaded
back from the registry to check that it gives the same outputs.
"""

import logging
import os
import tempfile
from importlib.metadata import version as installed_version

import mlflow
import torch
import yaml
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import trainers
from orchestrator.errors import UserError
from orchestrator.spec import Spec, load_data, parse_spec
from orchestrator.tags import MODE_TAG, REGISTERED_TAG, SWEEP_TAG, TRIAL_ID_TAG
from orchestrator.trial import recipe_for
from trainers.checkpoints import TRAINED_FILE, CheckpointError
from trainers.data import Dataset
from trainers.deployable import EagerDeployable
from trainers.loop import rebuild_deployable
from trainers.measure import evaluate

logger = logging.getLogger(__name__)

MODEL_NAME_IN_RUN = "deployable_model"
"""The name of the logged model inside the trial's run."""
EXAMPLE_ROWS = 5
"""Test inputs stored as the model's input example."""
RUNTIME_PACKAGES = ("torch", "numpy", "scikit-learn", "cloudpickle")
"""What the logged model needs besides MLflow and the `trainers` code it carries: torch for its
layers, numpy and scikit-learn because `trainers` imports them, cloudpickle to unpickle it. Named
here, not inferred: inference would list the local `accelsweep` package, which pip cannot install."""
VERSION_METRICS = ("test_accuracy", "accuracy_drop", "latency_ms", "size_bytes", "speedup", "compression")
"""The trial's measurements copied onto the model version as tags (accelsweep.KEY)."""


class RegistryError(UserError):
    """The trial cannot be rebuilt from MLflow, or cannot be registered."""


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
        RegistryError: the run holds no spec.yaml.
        SpecError: the stored spec no longer validates (the code changed since the sweep ran).

    Example:
        >>> sweep_spec(client, find_sweep_run(client, "quickstart")).name
        'quickstart'
    """
    run_id = parent_run.info.run_id
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = client.download_artifacts(run_id, "spec.yaml", directory)
        except (MlflowException, OSError) as error:
            raise RegistryError(f"sweep run {run_id} holds no spec.yaml artifact: {error}") from None
        with open(path) as file:
            raw = yaml.safe_load(file)
    return parse_spec(raw, source=f"spec.yaml of sweep run {run_id}")


def rebuild_trial_deployable(client: MlflowClient, parent_run, run_id: str) -> tuple[EagerDeployable, Dataset]:
    """Rebuild a finished trial's deployable model (on the CPU) from what MLflow holds.

    Downloads the sweep's spec and the trial's `model/trained.pt`, then takes the trial's own steps
    (`trainers.loop.rebuild_deployable`), reading the checkpoint with the checked reader.

    Args:
        client: the tracking client.
        parent_run: the sweep's parent run (it holds spec.yaml).
        run_id: the trial's child run (it holds the params and model/trained.pt).

    Returns:
        (the eager deployable, the data set as the model reads it: after feature selection, if
        the trial used it).

    Raises:
        RegistryError: the trial run holds no trained weights, or they cannot be read.
        SpecError: the spec's data set cannot be loaded here.

    Example:
        >>> deployable, data = rebuild_trial_deployable(client, parent, row["run_id"])
        >>> deployable(data.x_test[:1]).shape
        torch.Size([1, 10])
    """
    spec = sweep_spec(client, parent_run)
    data = load_data(spec, f"spec.yaml of sweep run {parent_run.info.run_id}")
    recipe = recipe_for(spec, trial_choices(client.get_run(run_id).data.params))
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = client.download_artifacts(run_id, f"model/{TRAINED_FILE}", directory)
        except (MlflowException, OSError) as error:
            raise RegistryError(f"trial run {run_id} holds no model/{TRAINED_FILE}: {error}") from None
        try:
            return rebuild_deployable(recipe, data, path)
        except CheckpointError as error:
            raise RegistryError(f"trial run {run_id}: {error}") from None


def register_trial(client: MlflowClient, parent_run, row: dict, model_name: str) -> ModelVersion:
    """Log a trial's deployable model into its run and register it as a new version of `model_name`.

    The model is logged with `mlflow.pytorch.log_model` (with a signature, an input example of
    EXAMPLE_ROWS test inputs, and the `trainers` package as code, so that its layers load
    anywhere). It is pickled, not exported as a traced "pt2" graph: torch.export cannot trace
    int8 dynamic-quantised or sparse layers, and the pickled module is the very one measured. The
    version is tagged with the trial's mode and measurements, and the registered
    version is loaded back and checked to give the same outputs as the rebuilt model.

    It reopens the trial's run to log into it (MLflow's fluent API, pointed at the client's
    store), so the run's end time becomes the registration time.

    Args:
        client: the tracking client (its store must support the Model Registry: sqlite, a
            database or an MLflow server).
        parent_run: the sweep's parent run.
        row: the trial's report row, as `report.select_trial` returns it.
        model_name: the registered model's name; a new version is added if it exists.

    Returns:
        The new model version.

    Raises:
        RegistryError: the model cannot be rebuilt, logged, registered or loaded back identically.

    Example:
        >>> version = register_trial(client, parent, select_trial(rows, 0.01), "digits-fast")
        >>> mlflow.pytorch.load_model(f"models:/digits-fast/{version.version}")
    """
    deployable, data = rebuild_trial_deployable(client, parent_run, row["run_id"])
    rebuilt_accuracy = evaluate(deployable, data.x_test, data.y_test)["accuracy"]
    if abs(rebuilt_accuracy - row["test_accuracy"]) > 1e-6:
        logger.warning(
            "the rebuilt model's test accuracy %.4f differs from the trial's measured %.4f "
            "(the trial ran on another device or kernel)",
            rebuilt_accuracy,
            row["test_accuracy"],
        )
    example = data.x_test[:EXAMPLE_ROWS]
    expected = deployable(example)
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with mlflow.start_run(run_id=row["run_id"]):
            info = mlflow.pytorch.log_model(
                deployable.module,
                name=MODEL_NAME_IN_RUN,
                signature=infer_signature(example.numpy(), expected.numpy()),
                input_example=example.numpy(),
                code_paths=[os.path.dirname(trainers.__file__)],
                serialization_format="pickle",
                pip_requirements=runtime_requirements(),
                registered_model_name=model_name,
            )
    except MlflowException as error:
        raise RegistryError(f"cannot register run {row['run_id']} as {model_name!r}: {error.message}") from None
    version = client.get_model_version(model_name, str(info.registered_model_version))
    _check_loads_back(model_name, version.version, example, expected)
    tags = {SWEEP_TAG: parent_run.data.tags.get(SWEEP_TAG, ""), MODE_TAG: row["mode"], TRIAL_ID_TAG: row["trial_id"]}
    tags |= {f"accelsweep.{key}": f"{row[key]:.6g}" for key in VERSION_METRICS if key in row}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    client.set_tag(row["run_id"], REGISTERED_TAG, f"{model_name}/{version.version}")
    return client.get_model_version(model_name, version.version)


def runtime_requirements() -> list[str]:
    """Pinned pip requirements of a logged deployable model: RUNTIME_PACKAGES at their installed
    versions, without local labels such as "+cpu" (PyPI has none).

    Example:
        >>> runtime_requirements()[0]
        'torch==2.13.0'
    """
    return [f"{name}=={installed_version(name).split('+')[0]}" for name in RUNTIME_PACKAGES]


def _param_value(text):
    value = yaml.safe_load(text)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def _check_loads_back(model_name, version, example, expected):
    loaded = mlflow.pytorch.load_model(f"models:/{model_name}/{version}", map_location="cpu")
    with torch.inference_mode():
        outputs = loaded(example)
    if not torch.equal(outputs, expected):
        raise RegistryError(
            f"model {model_name!r} version {version} loads back but gives other outputs than the rebuilt "
            f"model (largest difference {(outputs - expected).abs().max():.3g})"
        )
