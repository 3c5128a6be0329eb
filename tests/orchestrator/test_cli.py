"""The `accelsweep` command, run for real in a subprocess: help, validate, and the promise that a
bad spec, data set, model or store exits 2 with one readable message, no traceback, and nothing
written. Also a property test: parse_spec on any mutation of the quickstart spec returns a Spec
or raises SpecError, never anything else."""

import copy
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from orchestrator.spec import Spec, SpecError, parse_spec

QUICKSTART = Path(__file__).resolve().parents[2] / "search_spaces" / "quickstart.yaml"
LEFTOVERS = ("mlflow.db", "mlruns", "accelsweep_results")


def assert_clean_user_error(result, cwd, *expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert [name for name in LEFTOVERS if (cwd / name).exists()] == []


def test_help_lists_every_command(accelsweep):
    result = accelsweep("--help")
    assert result.returncode == 0, result.stderr
    for command in ("run", "validate", "report", "ui"):
        assert command in result.stdout
    assert "accelsweep run search_spaces/quickstart.yaml" in result.stdout


@pytest.mark.parametrize(
    "command, explanation",
    [
        ("run", "Pareto front"),
        ("validate", "load its data and build its model"),
        ("report", "from MLflow alone"),
        ("ui", "127.0.0.1"),
    ],
)
def test_command_help_explains_itself(accelsweep, command, explanation):
    result = accelsweep(command, "--help")
    assert result.returncode == 0, result.stderr
    assert explanation in " ".join(result.stdout.split())


def test_validate_quickstart(accelsweep, in_tmp_path):
    result = accelsweep("validate", str(QUICKSTART))
    assert result.returncode == 0, result.stderr
    assert "valid; 9 trials of mlp" in result.stdout
    assert [name for name in LEFTOVERS if (in_tmp_path / name).exists()] == []


def _unknown_key(spec, tmp_path):
    spec["data"]["sorce"] = "digits"
    return ("bad.yaml: data.sorce:", "'sorce'", "'source'")


def _bad_value(spec, tmp_path):
    spec["space"]["quant_bits"] = {"choice": [32, 5]}
    return ("bad.yaml: space.quant_bits.choice[1]:", "got 5")


def _missing_data(spec, tmp_path):
    missing = tmp_path / "no-such-dir"
    spec["data"] = {"source": "idx", "path": str(missing)}
    return ("data.path", str(missing), "does not exist")


def _unimportable_model(spec, tmp_path):
    spec["model"] = {"kind": "nosuchpkg.mod:make"}
    return ("model", "'nosuchpkg.mod:make'", "nosuchpkg")


BAD_SPECS = [_unknown_key, _bad_value, _missing_data, _unimportable_model]


@pytest.mark.parametrize("breaks", BAD_SPECS, ids=lambda f: f.__name__.strip("_"))
def test_validate_refuses_a_bad_spec(accelsweep, in_tmp_path, quickstart, write_spec, breaks):
    expected = breaks(quickstart, in_tmp_path)
    write_spec(quickstart, "bad.yaml")
    result = accelsweep("validate", "bad.yaml")
    assert_clean_user_error(result, in_tmp_path, *expected)


@pytest.mark.slow
@pytest.mark.parametrize("breaks", BAD_SPECS, ids=lambda f: f.__name__.strip("_"))
def test_run_refuses_a_bad_spec_before_anything_runs(accelsweep, in_tmp_path, quickstart, write_spec, breaks):
    expected = breaks(quickstart, in_tmp_path)
    write_spec(quickstart, "bad.yaml")
    result = accelsweep("run", "bad.yaml")
    assert_clean_user_error(result, in_tmp_path, *expected)


@pytest.mark.slow
def test_run_refuses_an_unwritable_tracking_store(accelsweep, in_tmp_path, quickstart, write_spec):
    not_a_dir = in_tmp_path / "a-file"
    not_a_dir.write_text("")
    uri = f"sqlite:///{not_a_dir}/x.db"  # its parent is a file: no one, not even root, can create it
    quickstart["tracking"] = {"uri": uri}
    write_spec(quickstart, "spec.yaml")
    result = accelsweep("run", "spec.yaml")
    assert_clean_user_error(result, in_tmp_path, uri)


@pytest.mark.slow
def test_report_of_an_unknown_sweep(accelsweep, in_tmp_path):
    uri = f"sqlite:///{in_tmp_path / 'store' / 'mlflow.db'}"
    result = accelsweep("report", "nosuch", "--uri", uri)  # no store there at all: say so, create nothing
    assert_clean_user_error(result, in_tmp_path, "no MLflow store at", uri)
    (in_tmp_path / "store").mkdir()
    MlflowClient(uri).search_experiments()  # an empty store
    result = accelsweep("report", "nosuch", "--uri", uri)
    assert result.returncode == 2 and "no sweep named or with run id 'nosuch'" in result.stderr


KEYS = st.text(max_size=12) | st.integers() | st.none() | st.booleans()  # YAML keys need not be strings
JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(KEYS, inner, max_size=3),
    max_leaves=6,
)


@st.composite
def mutated_quickstart(draw, base):
    spec = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 4))):
        node = draw(st.sampled_from(list(_containers(spec))))
        action = draw(st.sampled_from(["drop", "insert", "replace"]))
        keys = [key for key, _ in _items(node)]
        if action == "insert" and isinstance(node, dict):
            node[draw(KEYS)] = draw(JSONISH)
        elif action == "insert":
            node.append(draw(JSONISH))
        elif keys and action == "drop":
            node.pop(draw(st.sampled_from(keys)))
        elif keys:
            node[draw(st.sampled_from(keys))] = draw(JSONISH)
    return spec


def _items(node):
    return node.items() if isinstance(node, dict) else enumerate(node)


def _containers(node):
    yield node
    for _, value in _items(node):
        if isinstance(value, (dict, list)):
            yield from _containers(value)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_quickstart(yaml.safe_load(QUICKSTART.read_text())))
def test_parse_spec_never_crashes_on_a_mutated_quickstart(raw):
    try:
        spec = parse_spec(raw, source="mutant.yaml")
    except SpecError as error:
        assert str(error).startswith("mutant.yaml: "), str(error)
    else:
        assert isinstance(spec, Spec)
