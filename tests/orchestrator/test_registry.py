"""orchestrator.registry: a trial's deployable model rebuilt from MLflow alone, logged, registered,
and loaded back, on a real sqlite store holding a sweep whose trials really trained.

The sweep is stored exactly as `accelsweep run` stores one, without Ray: the parent run comes from
`tracking.start_sweep_run`, each child run is written by `tracking.TrialRuns` from the entries
`TrialLogger` sends it, and its `model/` artifacts are the files the trial driver saves from the
last checkpoint that `train_trial` reports.
"""

import json
import os
from pathlib import Path

import mlflow
import pytest
import torch
import yaml
from mlflow.entities import Param

from orchestrator import tracking
from orchestrator.cli import main
from orchestrator.registry import (
    RegistryError,
    rebuild_trial_deployable,
    register_trial,
    runtime_requirements,
    sweep_spec,
    trial_choices,
)
from orchestrator.report import select_trial, sweep_rows
from orchestrator.spec import parse_spec
from orchestrator.sweep import baseline_choices
from orchestrator.tags import MODE_TAG, PARENT_TAG, REGISTERED_TAG
from orchestrator.trial import recipe_for, trial_mode
from orchestrator.trial_logger import ended_tags
from trainers.checkpoints import TRAINED_FILE, save_atomically
from trainers.data import load_dataset
from trainers.loop import train_trial
from trainers.measure import evaluate
from trainers.metrics import FINAL_METRICS
from trainers.techniques.quantize import PackedLinear

SPEC = {
    "name": "regdemo",
    "data": {"source": "digits"},
    "model": {"kind": "mlp", "hidden": [32]},
    "train": {"epochs": 2, "batch_size": 64, "seed": 0},
    "space": {
        "rank": {"choice": [None, 8]},
        "quant_bits": {"choice": [32, 8, 4]},
        "weight_decay": {"loguniform": [1.0e-5, 1.0e-3]},
        "sparsity": {"choice": [0.0, 0.5]},
        "dropout": {"choice": [0.0, 0.1]},
    },
    "tracking": {"experiment": "regdemo"},
}
# The non-baseline trials: (trial id, choices). 1.5e-05 is stored as the param "1.5e-05", which
# YAML alone would read back as a string.
TRIALS = [
    ("t1", {"rank": 8, "quant_bits": 8, "weight_decay": 1.5e-05, "sparsity": 0.0, "dropout": 0.0}),
    ("t2", {"rank": None, "quant_bits": 4, "weight_decay": 0.0, "sparsity": 0.5, "dropout": 0.1}),
]


def store_trial(client, parent_id, spec, data, trial_id, choices, directory):
    """Train one trial for real and store it as TrialLogger does; returns its child run id."""
    saved = {}
    final_notes = {}

    def report(metrics, checkpoint):
        final_notes.update(metrics.get("notes", {}))
        if checkpoint is not None:
            saved.update(checkpoint)

    final = train_trial(recipe_for(spec, choices), data, report)
    directory.mkdir()
    for stem, state in saved.items():
        save_atomically(state, str(directory / f"{stem}.pt"))
    runs = tracking.TrialRuns(client, parent_id, spec.name)
    runs.apply((trial_id, "create", {"mode": trial_mode(spec, choices), "params": tracking.flatten(choices)}))
    runs.apply((trial_id, "metrics", tracking.metrics_at_step(final, FINAL_METRICS, spec.train.epochs)))
    runs.apply((trial_id, "tags", ended_tags(final | {"notes": final_notes})))
    runs.apply((trial_id, "artifacts", str(directory)))
    runs.apply((trial_id, "terminate", "FINISHED"))
    return runs.run_ids[trial_id]


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    """A real sqlite store holding the sweep "regdemo": the baseline and TRIALS, trained for real.
    Returns (client, parent run, {trial id: run id}, data)."""
    root = tmp_path_factory.mktemp("registry")
    client = tracking.connect(f"sqlite:///{root / 'mlflow.db'}")
    client.create_experiment("regdemo", artifact_location=(root / "artifacts").as_uri())
    spec = parse_spec(SPEC)
    parent_id = tracking.start_sweep_run(client, spec, yaml.safe_dump(SPEC), str(root / "results"))
    data = load_dataset("digits", seed=spec.train.seed)
    run_ids = {
        trial_id: store_trial(client, parent_id, spec, data, trial_id, choices, root / trial_id)
        for trial_id, choices in [("t0", baseline_choices(spec)), *TRIALS]
    }
    tracking.finish_sweep_run(client, parent_id)
    return client, client.get_run(parent_id), run_ids, data


def rows_by_trial(client, parent):
    return {row["trial_id"]: row for row in sweep_rows(client, parent)}


def test_trial_choices_parse_every_param_form():
    params = {"rank": "8", "dropout": "0.1", "l1": "1e-05", "feature_keep": "null", "workers": "2"}
    assert trial_choices(params) == {"rank": 8, "dropout": 0.1, "l1": 1e-05, "feature_keep": None, "workers": 2}
    assert isinstance(trial_choices({"l1": "1e-05"})["l1"], float)


def test_trial_choices_read_back_what_the_trial_ran(sweep):
    client, _, run_ids, _ = sweep
    for trial_id, choices in TRIALS:
        assert trial_choices(client.get_run(run_ids[trial_id]).data.params) == choices


def test_sweep_spec_is_the_spec_that_ran(sweep):
    client, parent, _, _ = sweep
    assert sweep_spec(client, parent) == parse_spec(SPEC)


def test_rebuilt_model_is_the_measured_deployable(sweep):
    client, parent, run_ids, data = sweep
    rows = rows_by_trial(client, parent)
    for trial_id in ("t0", "t1", "t2"):
        deployable, model_data = rebuild_trial_deployable(client, parent, run_ids[trial_id])
        assert evaluate(deployable, model_data.x_test, model_data.y_test)["accuracy"] == rows[trial_id]["test_accuracy"]
    assert any(isinstance(module, PackedLinear) for module in deployable.module.modules())  # t2: exported 4-bit layers


def test_rebuild_refuses_a_trial_without_weights(sweep):
    client, parent, run_ids, _ = sweep
    bare = client.create_run(parent.info.experiment_id, tags={PARENT_TAG: parent.info.run_id})
    client.log_batch(bare.info.run_id, params=[Param("rank", "8")])
    with pytest.raises(RegistryError, match=f"holds no model/{TRAINED_FILE}"):
        rebuild_trial_deployable(client, parent, bare.info.run_id)
    client.delete_run(bare.info.run_id)


def test_rebuild_reads_weights_only_through_the_checked_reader(sweep, tmp_path):
    client, parent, run_ids, _ = sweep
    run = client.create_run(parent.info.experiment_id, tags={PARENT_TAG: parent.info.run_id})
    client.log_batch(run.info.run_id, params=[Param("rank", "8")])
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / TRAINED_FILE).write_bytes(b"not a checkpoint at all")
    client.log_artifacts(run.info.run_id, str(tmp_path / "model"), "model")
    with pytest.raises(RegistryError, match=f"{TRAINED_FILE} cannot be read"):
        rebuild_trial_deployable(client, parent, run.info.run_id)
    client.delete_run(run.info.run_id)


def test_register_trial_loads_back_from_the_registry(sweep, tmp_path):
    client, parent, run_ids, data = sweep
    row = rows_by_trial(client, parent)["t2"]
    version = register_trial(client, parent, row, "regdemo-small")

    assert (version.name, str(version.version), version.run_id) == ("regdemo-small", "1", run_ids["t2"])
    assert version.tags[MODE_TAG] == row["mode"] == "q4-sp50-d0.1"
    assert float(version.tags["accelsweep.compression"]) == pytest.approx(row["compression"], rel=1e-5)
    assert client.get_run(run_ids["t2"]).data.tags[REGISTERED_TAG] == "regdemo-small/1"

    uri = "models:/regdemo-small/1"
    loaded = mlflow.pytorch.load_model(uri)
    rebuilt, model_data = rebuild_trial_deployable(client, parent, run_ids["t2"])
    with torch.inference_mode():
        assert torch.equal(loaded(model_data.x_test), rebuilt(model_data.x_test))
    info = mlflow.models.get_model_info(uri)
    assert info.signature.inputs.inputs[0].shape == (-1, *model_data.input_shape)
    assert info.signature.outputs.inputs[0].shape == (-1, data.num_classes)
    assert info.saved_input_example_info is not None
    requirements = Path(mlflow.artifacts.download_artifacts(f"{uri}/requirements.txt", dst_path=str(tmp_path)))
    assert set(runtime_requirements()) <= set(requirements.read_text().split())


def test_register_adds_versions_and_refuses_bad_names(sweep):
    client, parent, _, _ = sweep
    rows = sweep_rows(client, parent)
    chosen = select_trial(rows, 1.0, "size")
    assert chosen["mode"] != "baseline"
    first = register_trial(client, parent, chosen, "regdemo-versions")
    second = register_trial(client, parent, chosen, "regdemo-versions")
    assert (str(first.version), str(second.version)) == ("1", "2")
    with pytest.raises(RegistryError, match="cannot register"):
        register_trial(client, parent, chosen, "bad/name")


def test_runtime_requirements_are_pinned_and_installable():
    requirements = runtime_requirements()
    assert [r.split("==")[0] for r in requirements] == ["torch", "numpy", "scikit-learn", "cloudpickle"]
    assert all("==" in r and "+" not in r for r in requirements)


@pytest.fixture
def cli(monkeypatch):
    """Run `accelsweep ARGS...` in this process (the console script calls the same `main`);
    returns its exit code. The environment defaults `main` sets are undone afterwards."""
    saved = dict(os.environ)
    yield main
    os.environ.clear()
    os.environ.update(saved)


def test_report_command_registers_the_chosen_trial(sweep, cli, capsys, tmp_path):
    client, parent, _, _ = sweep
    plot = tmp_path / "plot.png"
    code = cli([
        "report", "regdemo", "--uri", client.tracking_uri, "--max-accuracy-drop", "1", "--optimize", "size",
        "--register", "regdemo-cli", "--plot", str(plot),
    ])
    out = capsys.readouterr().out
    assert code == 0
    chosen = select_trial(sweep_rows(client, parent), 1.0, "size")
    assert f"chosen: {chosen['mode']} (smallest trial within 1 of the baseline's test accuracy)" in out
    assert f"MLflow run {chosen['run_id']}" in out
    assert out.index("* = on the Pareto front") < out.index("chosen:")  # after the table
    assert "registered as model 'regdemo-cli' version 1: models:/regdemo-cli/1" in out
    assert client.get_model_version("regdemo-cli", "1").run_id == chosen["run_id"]
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_command_keeps_json_parseable(sweep, cli, capsys):
    client, _, _, _ = sweep
    assert cli(["report", "regdemo", "--uri", client.tracking_uri, "--format", "json", "--max-accuracy-drop", "0"]) == 0
    captured = capsys.readouterr()
    assert len(json.loads(captured.out)) == 1 + len(TRIALS)
    assert "chosen: baseline (fastest trial" in captured.err


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
