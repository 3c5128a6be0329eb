"""orchestrator.deploy.model_registry: a trial's shipped artifact registered from MLflow, checked against the
trial's model rebuilt from its trained weights, loaded back and served, on a real sqlite store
holding a sweep whose trials really trained.

The sweep is stored exactly as `accelsweep run` stores one, without Ray: the parent run comes from
`store.start_sweep_run`, each child run is written by `trial_runs.TrialRuns` from the entries
`TrialLogger` sends it, and its `model/` artifacts are the files the trial driver saves from the
last checkpoint that `train_trial` reports (the primary runtime's artifact saved by its `save`).
"""

import json
import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow.entities import Param

from orchestrator.cli import main
from orchestrator.config.loading import parse_spec
from orchestrator.deploy.model_registry import (
    ONNX_PACKAGES,
    PYTORCH_PACKAGES,
    RegistryError,
    rebuild_trial_deployable,
    register_trial,
    runtime_requirements,
)
from orchestrator.quiet import measurement
from orchestrator.results.rows import sweep_rows
from orchestrator.results.selection import select_trial
from orchestrator.sweep.search import baseline_choices
from orchestrator.tracking import store, trial_runs
from orchestrator.tracking.store import sweep_spec, trial_choices
from orchestrator.tracking.tags import MODE_TAG, NOTE_TAG_PREFIX, PARENT_TAG, REGISTERED_TAG, RUNTIME_TAG
from tests.orchestrator.stored_sweep import trained_trial
from trainers.checkpoints import DEPLOYABLE_FILE, TRAINED_FILE
from trainers.data import load_dataset
from trainers.measure import evaluate
from trainers.runtimes.onnxruntime import FILE as ONNX_FILE

SPEC = {
    "name": "regdemo",
    "data": {"source": "digits"},
    "model": {"kind": "mlp", "hidden": [32]},
    "train": {"epochs": 2, "batch_size": 64, "seed": 0},
    "space": {
        "rank": {"choice": [None, 8]},
        "quant_bits": {"choice": [32, 16, 8, 4]},
        "weight_decay": {"loguniform": [1.0e-5, 1.0e-3]},
        "sparsity": {"choice": [0.0, 0.5]},
        "dropout": {"choice": [0.0, 0.1]},
    },
    "deploy": {"batch_sizes": [1], "rounds": 3},
    "tracking": {"experiment": "regdemo"},
}
# The non-baseline trials: (trial id, choices). 1.5e-05 is stored as the param "1.5e-05", which
# YAML alone would read back as a string. t1 and t2 ship ONNX Runtime artifacts (the default
# primary runtime); t3's 16-bit weights have no ONNX Runtime CPU kernels, so it ships eager.
TRIALS = [
    ("t1", {"rank": 8, "quant_bits": 8, "weight_decay": 1.5e-05, "sparsity": 0.0, "dropout": 0.0}),
    ("t2", {"rank": None, "quant_bits": 4, "weight_decay": 0.0, "sparsity": 0.5, "dropout": 0.1}),
    ("t3", {"rank": None, "quant_bits": 16, "weight_decay": 0.0, "sparsity": 0.0, "dropout": 0.0}),
]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, new_mlflow_store):
    """A real sqlite store holding the sweep "regdemo": the baseline and TRIALS, trained for real
    and timed by the measurement phase. Returns (client, parent run, spec, {trial id: run id})."""
    root = tmp_path_factory.mktemp("registry")
    client = store.connect(new_mlflow_store(root / "mlflow.db"))
    client.create_experiment("regdemo", artifact_location=(root / "artifacts").as_uri())
    spec = parse_spec(SPEC)
    parent_id = store.start_sweep_run(client, spec, yaml.safe_dump(SPEC), str(root / "results"))
    data = load_dataset("digits", seed=spec.train.seed)
    runs = trial_runs.TrialRuns(client, parent_id, spec.name)
    run_ids = {
        trial_id: trained_trial(runs, spec, data, trial_id, choices, root / trial_id)
        for trial_id, choices in [("t0", baseline_choices(spec)), *TRIALS]
    }
    trials = measurement.trials_to_measure(client, client.get_run(parent_id))
    measurement.log_measurements(client, parent_id, trials, measurement.measure_trials(spec, data, trials, spec.deploy.runtimes))
    store.finish_sweep_run(client, parent_id)
    return client, client.get_run(parent_id), spec, run_ids


def rows_by_trial(client, parent):
    return {row["trial_id"]: row for row in sweep_rows(client, parent)}


def registered_file(uri, name, directory):
    """A file of a registered version, downloaded into `directory`."""
    return Path(mlflow.artifacts.download_artifacts(f"{uri}/{name}", dst_path=str(directory)))


def registered_logits(loaded, rows):
    """A loaded ONNX pyfunc model's logits: its predictions are {the graph's output name: logits}."""
    (logits,) = loaded.predict(rows.numpy()).values()
    return torch.from_numpy(logits)


def test_trial_choices_parse_every_param_form():
    params = {"rank": "8", "dropout": "0.1", "l1": "1e-05", "feature_keep": "null", "workers": "2"}
    assert trial_choices(params) == {"rank": 8, "dropout": 0.1, "l1": 1e-05, "feature_keep": None, "workers": 2}
    assert isinstance(trial_choices({"l1": "1e-05"})["l1"], float)


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_trial_choices_read_back_what_the_trial_ran(sweep):
    client, _, _, run_ids = sweep
    for trial_id, choices in TRIALS:
        assert trial_choices(client.get_run(run_ids[trial_id]).data.params) == choices


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_sweep_spec_is_the_spec_that_ran(sweep):
    client, parent, spec, _ = sweep
    assert sweep_spec(client, parent) == spec == parse_spec(SPEC)


def shipped_runtime(client, run_id):
    """The runtime a trial exported its artifact in, as its run's note says."""
    return client.get_run(run_id).data.tags[f"{NOTE_TAG_PREFIX}runtime"]


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_each_trial_ships_its_primary_runtime_artifact(sweep):
    client, _, _, run_ids = sweep
    assert {trial_id: shipped_runtime(client, run_id) for trial_id, run_id in run_ids.items()} == {
        "t0": "onnxruntime", "t1": "onnxruntime", "t2": "onnxruntime", "t3": "eager"
    }
    for trial_id, shipped in [("t0", ONNX_FILE), ("t2", ONNX_FILE), ("t3", DEPLOYABLE_FILE)]:
        files = {Path(info.path).name for info in client.list_artifacts(run_ids[trial_id], "model")}
        assert files == {TRAINED_FILE, shipped}


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_rebuilt_model_is_the_measured_deployable(sweep):
    client, parent, spec, run_ids = sweep
    rows = rows_by_trial(client, parent)
    for trial_id in ("t0", "t1", "t2", "t3"):
        runtime = shipped_runtime(client, run_ids[trial_id])
        deployable, model_data = rebuild_trial_deployable(client, spec, run_ids[trial_id], runtime)
        assert deployable.runtime == runtime
        assert evaluate(deployable, model_data.x_test, model_data.y_test)["accuracy"] == rows[trial_id]["test_accuracy"]
    t2, _ = rebuild_trial_deployable(client, spec, run_ids["t2"], "onnxruntime")
    assert "MatMulNBits" in t2.notes["onnx_weights"]  # 4-bit weights as ONNX Runtime's kernel stores them


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_rebuild_refuses_a_trial_without_weights(sweep):
    client, parent, spec, _ = sweep
    bare = client.create_run(parent.info.experiment_id, tags={PARENT_TAG: parent.info.run_id})
    client.log_batch(bare.info.run_id, params=[Param("rank", "8")])
    with pytest.raises(RegistryError, match=f"holds no model/{TRAINED_FILE}"):
        rebuild_trial_deployable(client, spec, bare.info.run_id)
    client.delete_run(bare.info.run_id)


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_rebuild_reads_weights_only_through_the_checked_reader(sweep, tmp_path):
    client, parent, spec, _ = sweep
    run = client.create_run(parent.info.experiment_id, tags={PARENT_TAG: parent.info.run_id})
    client.log_batch(run.info.run_id, params=[Param("rank", "8")])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / TRAINED_FILE).write_bytes(b"not a checkpoint at all")
    client.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
    with pytest.raises(RegistryError, match=f"{TRAINED_FILE} cannot be read"):
        rebuild_trial_deployable(client, spec, run.info.run_id)
    client.delete_run(run.info.run_id)


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_register_onnx_trial_registers_its_logged_model_onnx(sweep, tmp_path):
    client, parent, spec, run_ids = sweep
    row = rows_by_trial(client, parent)["t2"]
    version = register_trial(client, parent, spec, row, "regdemo-small")

    assert (version.name, str(version.version), version.run_id) == ("regdemo-small", "1", run_ids["t2"])
    assert version.tags[MODE_TAG] == row["mode"] == "q4-sp50-d0.1"
    assert version.tags[RUNTIME_TAG] == "onnxruntime"
    assert float(version.tags["accelsweep.compression"]) == pytest.approx(row["compression"], rel=1e-5)
    assert client.get_run(run_ids["t2"]).data.tags[REGISTERED_TAG] == "regdemo-small/1"

    uri = "models:/regdemo-small/1"
    info = mlflow.models.get_model_info(uri)
    assert set(info.flavors) == {"onnx", "python_function"}
    assert info.flavors["python_function"]["loader_module"] == "mlflow.onnx"
    files = {Path(item.path).name for item in mlflow.artifacts.list_artifacts(artifact_uri=uri)}
    assert not {name for name in files if name.endswith((".pkl", ".pt", ".pth"))}, files  # no pickle anywhere
    logged = Path(client.download_artifacts(run_ids["t2"], f"model/{ONNX_FILE}", str(tmp_path)))
    assert registered_file(uri, "model.onnx", tmp_path / "registered").read_bytes() == logged.read_bytes()

    rebuilt, model_data = rebuild_trial_deployable(client, spec, run_ids["t2"], "onnxruntime")
    loaded = mlflow.pyfunc.load_model(uri)
    torch.testing.assert_close(registered_logits(loaded, model_data.x_test), rebuilt(model_data.x_test))
    assert info.signature.inputs.inputs[0].shape == (-1, *model_data.input_shape)
    (output,) = info.signature.outputs.inputs
    assert output.shape == (-1, model_data.num_classes)
    assert info.saved_input_example_info is not None
    requirements = registered_file(uri, "requirements.txt", tmp_path / "requirements").read_text().split()
    assert set(runtime_requirements(ONNX_PACKAGES)) <= set(requirements)
    assert not any(line.startswith(("torch", "cloudpickle")) for line in requirements)


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_register_eager_trial_logs_its_module_as_a_pickle(sweep, tmp_path):
    client, parent, spec, run_ids = sweep
    row = rows_by_trial(client, parent)["t3"]
    assert row["runtime"] == "none (onnxruntime unavailable)" and "latency_ms" not in row  # said, not hidden
    version = register_trial(client, parent, spec, row, "regdemo-eager")
    assert version.tags[RUNTIME_TAG] == "eager" and version.tags[MODE_TAG] == "q16"

    uri = "models:/regdemo-eager/1"
    assert mlflow.models.get_model_info(uri).flavors["python_function"]["loader_module"] == "mlflow.pytorch"
    loaded = mlflow.pytorch.load_model(uri)
    rebuilt, model_data = rebuild_trial_deployable(client, spec, run_ids["t3"])
    with torch.inference_mode():
        assert torch.equal(loaded(model_data.x_test), rebuilt(model_data.x_test))
    requirements = registered_file(uri, "requirements.txt", tmp_path).read_text().split()
    assert set(runtime_requirements(PYTORCH_PACKAGES)) <= set(requirements)


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_register_refuses_an_artifact_that_is_not_the_trained_model(sweep, tmp_path):
    """A run whose model.onnx is another trial's: registered, found out on loading back, deleted."""
    client, parent, spec, run_ids = sweep
    t1 = client.get_run(run_ids["t1"])
    swapped = client.create_run(
        parent.info.experiment_id, tags={PARENT_TAG: parent.info.run_id, f"{NOTE_TAG_PREFIX}runtime": "onnxruntime"}
    ).info.run_id
    try:
        client.log_batch(swapped, params=[Param(key, value) for key, value in t1.data.params.items()])
        trained = client.download_artifacts(run_ids["t1"], f"model/{TRAINED_FILE}", str(tmp_path / "t1"))
        baseline_graph = client.download_artifacts(run_ids["t0"], f"model/{ONNX_FILE}", str(tmp_path / "t0"))
        client.log_artifact(swapped, trained, "model")
        client.log_artifact(swapped, baseline_graph, "model")
        row = rows_by_trial(client, parent)["t1"] | {"run_id": swapped}

        with pytest.raises(RegistryError, match="loads back with other outputs than the trial's model rebuilt"):
            register_trial(client, parent, spec, row, "regdemo-swapped")
        assert client.search_model_versions("name = 'regdemo-swapped'") == []
        assert REGISTERED_TAG not in client.get_run(swapped).data.tags
    finally:
        client.delete_run(swapped)


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_register_adds_versions_and_refuses_bad_names(sweep):
    client, parent, spec, _ = sweep
    rows = sweep_rows(client, parent)
    chosen = select_trial(rows, 1.0, "size")
    assert chosen["mode"] != "baseline"
    first = register_trial(client, parent, spec, chosen, "regdemo-versions")
    second = register_trial(client, parent, spec, chosen, "regdemo-versions")
    assert (str(first.version), str(second.version)) == ("1", "2")
    with pytest.raises(RegistryError, match="cannot register"):
        register_trial(client, parent, spec, chosen, "bad/name")


def test_runtime_requirements_are_pinned_and_installable():
    for packages in (ONNX_PACKAGES, PYTORCH_PACKAGES):
        requirements = runtime_requirements(packages)
        assert [r.split("==")[0] for r in requirements] == list(packages)
        assert all("==" in r and "+" not in r for r in requirements)


def free_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def get(url):
    with urllib.request.urlopen(url, timeout=5) as response:
        return response.status


def wait_until_serving(server, port, log):
    """Poll /ping until the server answers 200; fail with its log if it exits first."""
    deadline = time.monotonic() + 300  # a bound on waiting, not a speed requirement
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow models serve exited with {server.returncode}:\n{log.read_text()[-3000:]}"
        try:
            if get(f"http://127.0.0.1:{port}/ping") == 200:
                return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.5)
    pytest.fail(f"mlflow models serve did not answer /ping:\n{log.read_text()[-3000:]}")


def live_members(group):
    """PIDs in process group `group` that are running (zombies awaiting their reaper excluded)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # exited while we looked
            continue
        state, process_group = fields[0], int(fields[2])
        if process_group == group and state != "Z":
            members.append(int(stat.parent.name))
    return members


def stop_process_group(server):
    """SIGTERM the server's process group and wait until every process in it has exited.

    The server's workers shut down gracefully after their parent, so waiting for the parent alone
    leaves them answering for a moment; a worker still alive after the bound fails the test.
    """
    os.killpg(server.pid, signal.SIGTERM)
    server.wait(timeout=120)
    deadline = time.monotonic() + 120  # a bound on waiting, not a speed requirement
    while time.monotonic() < deadline:
        if not live_members(server.pid):
            return
        time.sleep(0.2)
    os.killpg(server.pid, signal.SIGKILL)
    pytest.fail("mlflow models serve left workers running 120 s after SIGTERM")


@pytest.mark.slow
def test_registered_onnx_model_serves_the_trials_logits_over_http(sweep, tmp_path):
    client, parent, spec, run_ids = sweep
    register_trial(client, parent, spec, rows_by_trial(client, parent)["t1"], "regdemo-served")
    rebuilt, model_data = rebuild_trial_deployable(client, spec, run_ids["t1"], "onnxruntime")
    rows = model_data.x_test[:16]
    port = free_port()
    log = tmp_path / "serve.log"
    with open(log, "w") as output:
        server = subprocess.Popen(
            ["mlflow", "models", "serve", "-m", "models:/regdemo-served/1", "--env-manager", "local",
             "--host", "127.0.0.1", "-p", str(port)],
            env=os.environ | {"MLFLOW_TRACKING_URI": client.tracking_uri},
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: the server's workers stop with it
        )
    try:
        wait_until_serving(server, port, log)
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": rows.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            body = json.load(response)
    finally:
        stop_process_group(server)

    (output_name,) = mlflow.models.get_model_info("models:/regdemo-served/1").signature.outputs.input_names()
    assert list(body) == ["predictions"] and list(body["predictions"]) == [output_name]
    served = torch.tensor(body["predictions"][output_name])
    assert served.shape == (len(rows), model_data.num_classes)
    torch.testing.assert_close(served, rebuilt(rows))
    assert served.argmax(dim=1).tolist() == rebuilt(rows).argmax(dim=1).tolist()
    with pytest.raises(urllib.error.URLError):  # the server and its workers are gone
        get(f"http://127.0.0.1:{port}/ping")


@pytest.fixture
def cli(monkeypatch):
    """Run `accelsweep ARGS...` in this process (the console script calls the same `main`);
    returns its exit code. The environment defaults `main` sets are undone afterwards."""
    saved = dict(os.environ)
    yield main
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_report_command_registers_the_chosen_trial(sweep, cli, capsys, tmp_path):
    client, parent, _, _ = sweep
    plot = tmp_path / "plot.png"
    mine = tmp_path / "regdemo.yaml"  # the user's own copy of the spec, vouched for with --spec
    mine.write_text(yaml.safe_dump(SPEC))
    code = cli([
        "report", "regdemo", "--uri", client.tracking_uri, "--max-accuracy-drop", "1", "--optimize", "size",
        "--register", "regdemo-cli", "--plot", str(plot), "--spec", str(mine),
    ])
    out = capsys.readouterr().out
    assert code == 0
    chosen = select_trial(sweep_rows(client, parent), 1.0, "size")
    assert f"chosen: {chosen['mode']} (smallest trial within 1 of the baseline's test accuracy)" in out
    assert f"MLflow run {chosen['run_id']}" in out
    assert out.index("* = on the Pareto front") < out.index("chosen:")  # after the table
    assert "registered as model 'regdemo-cli' version 1: models:/regdemo-cli/1" in out
    version = client.get_model_version("regdemo-cli", "1")
    assert version.run_id == chosen["run_id"] and version.tags[RUNTIME_TAG] == chosen["runtime"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow  # the module fixture trains and measures four trials
def test_report_command_keeps_json_parseable(sweep, cli, capsys):
    client, _, _, _ = sweep
    assert cli(["report", "regdemo", "--uri", client.tracking_uri, "--format", "json", "--max-accuracy-drop", "0"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 1 + len(TRIALS)
    assert "chosen: baseline (fastest trial" in captured.err


@pytest.mark.slow  # the module fixture trains and measures four trials
@pytest.mark.parametrize(
    "args, message",
    [
        (["--max-accuracy-drop", "-0.5"], "no trial is within -0.5 of the baseline's test accuracy"),
        (["--register", "m"], "--register and --optimize choose a trial: give --max-accuracy-drop too"),
        (["--optimize", "size"], "--register and --optimize choose a trial: give --max-accuracy-drop too"),
    ],
    ids=["none qualifies", "register without a budget", "optimize without a budget"],
)
def test_report_command_exits_2_when_no_trial_can_be_chosen(sweep, cli, capsys, args, message):
    client, _, _, _ = sweep
    assert cli(["report", "regdemo", "--uri", client.tracking_uri, *args]) == 2
    assert message in capsys.readouterr().err
    assert client.search_registered_models(filter_string="name = 'm'") == []
