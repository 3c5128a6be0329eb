"""orchestrator.deploy.trust, through the CLI: `resume` and `report --register` rebuild a sweep only
from a spec the user vouches for, and `resume` restores Tune state only from the user's own results
folder. The MLflow store is a real sqlite store holding one sweep's parent run, written here the way
an attacker with write access to a shared store could. The first refusal runs the real `accelsweep`
in a subprocess; the others, which end before Ray starts, run its `main` in this process."""

import os

import pytest
import yaml
from mlflow.tracking import MlflowClient

from orchestrator.config.loading import parse_spec
from orchestrator.deploy.trust import TrustError, stored_spec_risks, vouched_spec
from orchestrator.tracking.tags import KIND_TAG, RESULTS_PATH_TAG, SWEEP_TAG


def store_sweep(uri, spec, results_path):
    """A sweep's parent run as `accelsweep run` leaves it: tags and the spec.yaml artifact."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(spec["name"])
    run = client.create_run(
        experiment_id, run_name=spec["name"], tags={SWEEP_TAG: spec["name"], KIND_TAG: "sweep", RESULTS_PATH_TAG: results_path}
    )
    client.log_text(run.info.run_id, yaml.safe_dump(spec, sort_keys=False), "spec.yaml")
    client.set_terminated(run.info.run_id, "KILLED")
    return client, run.info.run_id


@pytest.fixture
def tampered(in_tmp_path, quickstart, new_mlflow_store):
    """A store whose sweep's stored spec names a factory that leaves a marker file when imported."""
    (in_tmp_path / "planted.py").write_text(
        "import pathlib\npathlib.Path('PLANTED_CODE_RAN').touch()\n"
        "def make(input_shape, num_classes):\n    raise SystemExit\n"
    )
    quickstart["model"] = {"kind": "planted:make"}
    uri = new_mlflow_store(in_tmp_path / "store.db")
    store_sweep(uri, quickstart, str(in_tmp_path / "accelsweep_results" / "quickstart-1"))
    return uri


def assert_refused_untouched(result, cwd, *expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= 500, result.stderr
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert not (cwd / "PLANTED_CODE_RAN").exists(), "the stored spec's code ran"
    assert not (cwd / "accelsweep_results").exists()


@pytest.mark.slow  # the real CLI in a subprocess: torch, MLflow and a store, 15 s or more
def test_resume_refuses_a_stored_spec_that_imports_code(accelsweep, in_tmp_path, tampered):
    result = accelsweep("resume", "quickstart", "--uri", tampered)
    assert_refused_untouched(
        result, in_tmp_path, "model.kind: 'planted:make' would import and run planted.make", "--spec PATH", "--trust-stored-spec"
    )


def test_register_refuses_a_stored_spec_that_imports_code(accelsweep_in_process, in_tmp_path, tampered):
    result = accelsweep_in_process("report", "quickstart", "--uri", tampered, "--max-accuracy-drop", "0.01", "--register", "m")
    assert_refused_untouched(result, in_tmp_path, "would import and run planted.make", "--trust-stored-spec")


def test_your_own_spec_must_match_the_stored_one(accelsweep_in_process, in_tmp_path, tampered, quickstart, write_spec):
    write_spec({**quickstart, "model": {"kind": "mlp"}}, "mine.yaml")  # not the planted factory
    result = accelsweep_in_process("resume", "quickstart", "--uri", tampered, "--spec", "mine.yaml")
    assert_refused_untouched(result, in_tmp_path, "mine.yaml is not the spec sweep run", "model.kind is 'mlp' in it but 'planted:make'")


def test_resume_refuses_state_outside_your_results_folder(accelsweep_in_process, in_tmp_path, quickstart, tmp_path_factory, new_mlflow_store):
    elsewhere = tmp_path_factory.mktemp("someone-elses") / "quickstart-1"
    uri = new_mlflow_store(in_tmp_path / "store.db")
    store_sweep(uri, quickstart, str(elsewhere))
    result = accelsweep_in_process("resume", "quickstart", "--uri", uri)
    assert_refused_untouched(result, in_tmp_path, f"saved state is at '{elsewhere}', outside the results folder")


@pytest.mark.parametrize(
    ("changes", "resuming", "risky_keys"),
    [
        ({}, True, []),
        ({"model": {"kind": "m:f"}}, False, ["model.kind"]),
        ({"ray": {"address": "ray://10.0.0.9:10001", "storage_path": "/shared"}}, True, ["ray.address", "ray.storage_path"]),
        ({"ray": {"address": "ray://10.0.0.9:10001"}}, False, []),  # --register connects to no Ray
    ],
)
def test_risks_of_a_stored_spec(quickstart, changes, resuming, risky_keys):
    spec = parse_spec({**quickstart, **changes})
    assert [risk.split(":")[0] for risk in stored_spec_risks(spec, resuming)] == risky_keys


def test_trusting_the_stored_spec_returns_it_and_your_matching_copy_is_used(in_tmp_path, quickstart, write_spec, new_mlflow_store):
    quickstart["tracking"] = {"uri": "https://alice:s3cret@mlflow.example.com"}
    stored = {**quickstart, "tracking": {"uri": "https://***@mlflow.example.com"}}  # as `run` stores it
    stored["model"] = {"kind": "planted:make"}
    client, run_id = store_sweep(new_mlflow_store(in_tmp_path / "store.db"), stored, "/x")
    parent = client.get_run(run_id)
    with pytest.raises(TrustError):
        vouched_spec(client, parent, None, trust=False)
    spec, source = vouched_spec(client, parent, None, trust=True)
    assert spec.model.kind == "planted:make" and source == f"spec.yaml of sweep run {run_id}"
    quickstart["model"] = {"kind": "planted:make"}
    mine = write_spec(quickstart, "mine.yaml")
    spec, source = vouched_spec(client, parent, str(mine), trust=False)  # credentials aside, the same spec
    assert source == str(mine) and spec.tracking.uri == "https://alice:s3cret@mlflow.example.com"
    assert not os.path.exists(in_tmp_path / "PLANTED_CODE_RAN")
