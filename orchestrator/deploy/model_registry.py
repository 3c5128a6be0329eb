"""Put a sweep's chosen trial in the MLflow Model Registry, one click from deployment.

What is registered is the trial's primary artifact, the one its accuracy and latency were measured
on: for an ONNX Runtime trial, the `model/model.onnx` its run holds, logged with MLflow's ONNX
flavour (no pickle). It is checked against the trial's model rebuilt from the spec the user
vouches for, the trial's choices (child run params) and its trained weights (`model/trained.pt`):
the registered version, loaded back from the registry, must give the rebuilt model's outputs.
Any other trial registers its eager PyTorch module, rebuilt, as a pickle (`mlflow.pytorch`).
"""

import logging
import os
import tempfile
from importlib.metadata import version as installed_version

import mlflow
import onnx
import torch
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient

import trainers
from orchestrator.config.preflight import load_in_memory
from orchestrator.config.recipe import recipe_for
from orchestrator.config.schema import Spec
from orchestrator.errors import UserError
from orchestrator.tracking.store import trial_choices
from orchestrator.tracking.tags import MODE_TAG, NOTE_TAG_PREFIX, REGISTERED_TAG, RUNTIME_TAG, SWEEP_TAG, TRIAL_ID_TAG
from trainers.checkpoints import TRAINED_FILE, CheckpointError
from trainers.data import Dataset
from trainers.deployable import Deployable
from trainers.loop import deploy_to, rebuild_deployable, runtime_difference
from trainers.measure import evaluate
from trainers.runtimes import RuntimeUnavailable
from trainers.runtimes.onnxruntime import FILE as ONNX_FILE

logger = logging.getLogger(__name__)
MODEL_NAME_IN_RUN = "deployable_model"
"""The name of the logged model inside the trial's run."""
EXAMPLE_ROWS = 5
"""Test inputs stored as the model's input example."""
CHECK_ROWS = 256
"""Test inputs the registered version is checked on, as many as the trial checked its runtime on."""
ONNX_PACKAGES = ("onnx", "onnxruntime", "numpy")
"""What a logged ONNX model needs besides MLflow: the ONNX flavour loads the graph with onnx and
runs it in an onnxruntime session on numpy arrays."""
PYTORCH_PACKAGES = ("torch", "numpy", "scikit-learn", "cloudpickle")
"""What a logged PyTorch model needs besides MLflow and the `trainers` code it carries: torch for
its layers, numpy and scikit-learn because `trainers` imports them, cloudpickle to unpickle it.
Named here, not inferred: inference would list the local `accelsweep` package, which pip cannot
install."""
VERSION_METRICS = ("test_accuracy", "accuracy_drop", "latency_ms", "size_bytes", "speedup", "compression")
"""The trial's measurements copied onto the model version as tags (accelsweep.KEY)."""


class RegistryError(UserError):
    """The trial cannot be rebuilt from MLflow, or cannot be registered."""


def rebuild_trial_deployable(client: MlflowClient, spec: Spec, run_id: str, runtime: str = "eager") -> tuple[Deployable, Dataset]:
    """Rebuild a finished trial's deployable model (on the CPU) in one runtime, from its weights in MLflow.

    Takes the trial's own steps (`trainers.loop.rebuild_deployable`, then `deploy_to`) with the
    trial's choices read back from its run's params and its `model/trained.pt`, read with the
    checked reader.

    Args:
        client: the tracking client.
        spec: the sweep's spec, as the user vouches for it (`deploy.trust.vouched_spec`).
        run_id: the trial's child run (it holds the params and model/trained.pt).
        runtime: where the rebuilt model runs: "eager", or the trial's primary runtime, e.g.
            "onnxruntime".

    Returns:
        (the deployable in `runtime`, which takes raw rows; the trial's data set, its rows raw).

    Raises:
        RegistryError: the trial run holds no trained weights, they cannot be read, or the
            runtime cannot run the model here.
        SpecError: the spec's data set cannot be loaded here.

    Example:
        >>> deployable, data = rebuild_trial_deployable(client, spec, row["run_id"], "onnxruntime")  # doctest: +SKIP
        >>> deployable(data.x_test[:1]).shape  # doctest: +SKIP
        torch.Size([1, 10])
    """
    data = load_in_memory(spec, f"the spec of sweep {spec.name!r}", "report --register")
    recipe = recipe_for(spec, trial_choices(client.get_run(run_id).data.params))
    with tempfile.TemporaryDirectory() as directory:
        path = _download(client, run_id, TRAINED_FILE, directory)
        try:
            exported, model_data = rebuild_deployable(recipe, data, path)
        except CheckpointError as error:
            raise RegistryError(f"trial run {run_id}: {error}") from None
    try:
        deployable = deploy_to(runtime, exported, model_data, torch.device("cpu"), spec.deploy.threads)
    except RuntimeUnavailable as error:
        raise RegistryError(f"trial run {run_id} cannot be rebuilt in {runtime} here: {error}") from None
    return deployable, model_data


def register_trial(client: MlflowClient, parent_run, spec: Spec, row: dict, model_name: str) -> ModelVersion:
    """Register a trial's primary artifact as a new version of `model_name`, checked against its weights.

    What the trial shipped is the runtime its own run's note says (`accelsweep.note.runtime`): the
    report's runtime column names the sweep's primary runtime even for a trial that could not run
    there and shipped its eager model instead.

    An ONNX Runtime trial registers the `model/model.onnx`
    its run holds, byte for byte, with MLflow's ONNX flavour (`mlflow.onnx.log_model`: no pickle,
    no code), ONNX Runtime session options as the trial was measured (`spec.deploy.threads`
    intra-op threads, sequential), a signature and an input example of EXAMPLE_ROWS test rows as
    the artifact takes them. The registered version is loaded back with `mlflow.pyfunc.load_model`
    and its logits on CHECK_ROWS test rows must be those of the trial's model rebuilt from
    `trained.pt` and exported to ONNX Runtime again, within `spec.deploy.max_abs_diff` of the
    largest logit (the rule the trial checked its runtime with): the artifact that ships is the
    model that was trained.

    Any other trial (eager primary, or ONNX Runtime could not run it and it fell back to eager)
    registers its eager PyTorch module, rebuilt, with `mlflow.pytorch.log_model` and the
    `trainers` package as code. That is a pickle, so loading it runs code: the eager export holds
    int8 dynamic-quantised, packed low-bit and sparse layers that torch.export cannot trace, and
    the pickled module is the one measured. Its loaded-back outputs must equal the rebuilt
    module's exactly. (A compile or AOTInductor trial also registers that eager module: what those
    runtimes build from it is machine code for the machine it was compiled on.)

    A version that does not load back with those outputs is deleted before the error is raised.
    The version is tagged with the trial's mode, shipped runtime and measurements, and the trial's run
    with the version. It reopens the trial's run to log into it (MLflow's fluent API, pointed at
    the client's store), so the run's end time becomes the registration time.

    Args:
        client: the tracking client (its store must support the Model Registry: sqlite, a
            database or an MLflow server).
        parent_run: the sweep's parent run.
        spec: the sweep's spec, as the user vouches for it (`deploy.trust.vouched_spec`).
        row: the trial's report row, as `selection.select_trial` returns it.
        model_name: the registered model's name; a new version is added if it exists.

    Returns:
        The new model version.

    Raises:
        RegistryError: the model cannot be rebuilt, logged, registered or loaded back with its outputs.

    Example:
        >>> spec, _ = vouched_spec(client, parent, None, trust=False)  # doctest: +SKIP
        >>> version = register_trial(client, parent, spec, select_trial(rows, 0.01), "digits-fast")  # doctest: +SKIP
        >>> mlflow.pyfunc.load_model(f"models:/digits-fast/{version.version}").predict(x)  # doctest: +SKIP
    """
    shipped = client.get_run(row["run_id"]).data.tags.get(f"{NOTE_TAG_PREFIX}runtime", "eager")
    onnx_primary = shipped == "onnxruntime"
    rebuilt, data = rebuild_trial_deployable(client, spec, row["run_id"], "onnxruntime" if onnx_primary else "eager")
    _warn_if_accuracy_differs(rebuilt, data, row)
    example = data.x_test[:EXAMPLE_ROWS]
    version = _log_version(client, spec, row, rebuilt, example, model_name, onnx_primary)
    mismatch = (
        _onnx_mismatch(model_name, version, rebuilt, data.x_test[:CHECK_ROWS], spec.deploy.max_abs_diff)
        if onnx_primary
        else _pytorch_mismatch(model_name, version, rebuilt, example)
    )
    if mismatch:
        client.delete_model_version(model_name, version)
        raise RegistryError(
            f"model {model_name!r} version {version} loads back with other outputs than the trial's model rebuilt "
            f"from its {TRAINED_FILE} ({mismatch}): the version was deleted"
        )
    tags = {
        SWEEP_TAG: parent_run.data.tags.get(SWEEP_TAG, ""),
        MODE_TAG: row["mode"],
        TRIAL_ID_TAG: row["trial_id"],
        RUNTIME_TAG: shipped,
    }
    tags |= {f"accelsweep.{key}": f"{row[key]:.6g}" for key in VERSION_METRICS if key in row}
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version, key, value)
    client.set_tag(row["run_id"], REGISTERED_TAG, f"{model_name}/{version}")
    return client.get_model_version(model_name, version)


def _warn_if_accuracy_differs(rebuilt, data, row):
    rebuilt_accuracy = evaluate(rebuilt, data.x_test, data.y_test)["accuracy"]
    if abs(rebuilt_accuracy - row["test_accuracy"]) > 1e-6:
        logger.warning(
            "the rebuilt model's test accuracy %.4f differs from the trial's measured %.4f "
            "(the trial ran on another device or kernel)",
            rebuilt_accuracy,
            row["test_accuracy"],
        )


def _log_version(client, spec, row, rebuilt, example, model_name, onnx_primary):
    if onnx_primary:
        with tempfile.TemporaryDirectory() as directory:
            artifact = onnx.load(_download(client, row["run_id"], ONNX_FILE, directory))
    mlflow.set_tracking_uri(client.tracking_uri)
    try:
        with mlflow.start_run(run_id=row["run_id"]):
            if onnx_primary:
                info = _log_onnx(artifact, example, rebuilt(example), spec.deploy.threads, model_name)
            else:
                info = _log_pytorch(rebuilt.module, example, rebuilt(example), model_name)
    except MlflowException as error:
        raise RegistryError(f"cannot register run {row['run_id']} as {model_name!r}: {error.message}") from None
    return str(info.registered_model_version)


def runtime_requirements(packages: tuple[str, ...]) -> list[str]:
    """Pinned pip requirements of a logged model: `packages` at their installed versions, without
    local labels such as "+cpu" (PyPI has none).

    Args:
        packages: distribution names, e.g. ONNX_PACKAGES or PYTORCH_PACKAGES.

    Example:
        >>> runtime_requirements(ONNX_PACKAGES)  # doctest: +SKIP
        ['onnx==1.23.2', 'onnxruntime==1.32.0', 'numpy==2.3.5']
    """
    return [f"{name}=={installed_version(name).split('+')[0]}" for name in packages]


def _download(client, run_id, name, directory):
    try:
        return client.download_artifacts(run_id, f"model/{name}", directory)
    except (MlflowException, OSError) as error:
        raise RegistryError(f"trial run {run_id} holds no model/{name}: {error}") from None


def _log_onnx(artifact, example, logits, threads, model_name):
    output_name = artifact.graph.output[0].name  # the pyfunc's predictions are {output name: logits}
    return mlflow.onnx.log_model(
        artifact,
        name=MODEL_NAME_IN_RUN,
        signature=infer_signature(example.numpy(), {output_name: logits.numpy()}),
        input_example=example.numpy(),
        onnx_session_options={"intra_op_num_threads": threads, "inter_op_num_threads": 1, "execution_mode": "sequential"},
        save_as_external_data=False,  # one file: the trial's model.onnx as it was logged
        pip_requirements=runtime_requirements(ONNX_PACKAGES),
        registered_model_name=model_name,
    )


def _log_pytorch(module, example, logits, model_name):
    return mlflow.pytorch.log_model(
        module,
        name=MODEL_NAME_IN_RUN,
        signature=infer_signature(example.numpy(), logits.numpy()),
        input_example=example.numpy(),
        code_paths=[os.path.dirname(trainers.__file__)],
        serialization_format="pickle",
        pip_requirements=runtime_requirements(PYTORCH_PACKAGES),
        registered_model_name=model_name,
    )


def _onnx_mismatch(model_name, version, rebuilt, rows, tolerance):
    loaded = mlflow.pyfunc.load_model(f"models:/{model_name}/{version}")

    def registered(inputs):
        (logits,) = loaded.predict(inputs.numpy()).values()
        return torch.from_numpy(logits)

    difference = runtime_difference(registered, rebuilt, rows)
    if difference > tolerance:
        return f"largest difference {difference:.3g} of the largest logit, tolerance {tolerance:g}"
    return None


def _pytorch_mismatch(model_name, version, rebuilt, example):
    loaded = mlflow.pytorch.load_model(f"models:/{model_name}/{version}", map_location="cpu")
    with torch.inference_mode():
        outputs = loaded(example)
    expected = rebuilt(example)
    if not torch.equal(outputs, expected):
        return f"largest difference {(outputs - expected).abs().max():.3g}, expected none"
    return None
