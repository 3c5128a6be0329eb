"""The `accelsweep` command: help, validate, and the promise that a bad spec, data set, model or
store exits 2 with one readable message, no traceback, and nothing written. Each command runs for
real in a subprocess at least once; the many input errors, which end before Ray or MLflow start,
run through the same `main` in this process (`accelsweep_in_process`). Also a property test:
parse_spec on any mutation of the quickstart spec returns a Spec or raises SpecError, never
anything else."""

import contextlib
import copy
import io
import math
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from orchestrator.cli import main
from orchestrator.config.loading import parse_spec
from orchestrator.config.schema import Spec, SpecError

QUICKSTART = Path(__file__).resolve().parents[3] / "search_spaces" / "quickstart.yaml"
LEFTOVERS = ("mlflow.db", "mlruns", "accelsweep_results")


def assert_clean_user_error(result, cwd, *expected):
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    progress = re.compile(r"\d\d:\d\d:\d\d ")  # timestamped log lines such as "Ray local: 2 CPUs"
    lines = [line for line in result.stderr.strip().splitlines() if not progress.match(line)]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert len(lines[0]) <= 500, lines[0]
    for text in expected:
        assert text in lines[0], (text, lines[0])
    assert [name for name in LEFTOVERS if (cwd / name).exists()] == []


@pytest.mark.slow  # a real process: torch and MLflow load, seconds
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
def test_command_help_explains_itself(accelsweep_in_process, command, explanation):
    result = accelsweep_in_process(command, "--help")
    assert result.returncode == 0, result.stderr
    assert explanation in " ".join(result.stdout.split())


@pytest.mark.slow  # a real process: torch and MLflow load, seconds
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


def _infinite_lr(spec, tmp_path):
    spec["train"]["lr"] = math.inf
    return ("bad.yaml: train.lr:", "finite number", "inf")


def _misspelt_required_key(spec, tmp_path):
    spec["data"] = {"sorce": "digits"}  # the unknown key alone: "data.source: missing" would say it twice
    return ("bad.yaml: data.sorce:", "(did you mean 'source'?)")


def _factory_with_wrong_logits(spec, tmp_path):
    (tmp_path / "threelogits.py").write_text(
        "from torch import nn\n\ndef make(input_shape):\n    return nn.Sequential(nn.Flatten(), nn.Linear(64, 3))\n"
    )
    spec["model"] = {"kind": "threelogits:make"}
    return ("bad.yaml: model.kind: model 'threelogits:make' gives logits of shape (2, 3)", "the data has 10 classes")


def _warmup_past_training(spec, tmp_path):
    spec["train"] |= {"epochs": 2, "warmup_epochs": 2}
    return ("bad.yaml: train.warmup_epochs:", "must be less than train.epochs (2), got 2")


def _infinite_space_value(spec, tmp_path):
    spec["space"]["weight_decay"] = {"choice": [0.0, math.inf]}
    return ("bad.yaml: space.weight_decay.choice[1]:", "finite number", "inf")


def _name_too_long(spec, tmp_path):
    spec["name"] = "a" * 10_000
    return ("bad.yaml: name:", "at most 100 characters")


def _model_beyond_memory(spec, tmp_path):
    spec["model"]["hidden"] = [1_000_000_000]
    return ("bad.yaml: model.hidden: [1000000000]", "parameters: training needs ~1.2 TB; the limit is")


def _data_beyond_memory(spec, tmp_path):
    spec["data"] = {"source": "synthetic", "n_samples": 10**10}
    return ("bad.yaml: data:", "n_samples=10000000000", "needs ~2.6 TB")


def _fifo_data(spec, tmp_path):
    os.mkfifo(tmp_path / "data.csv")
    spec["data"] = {"source": "csv", "path": "data.csv"}
    return ("bad.yaml: data:", "'data.csv' is a FIFO, not a regular file")


def _device_data(spec, tmp_path):
    spec["data"] = {"source": "npz", "path": "/dev/zero"}
    return ("bad.yaml: data:", "'/dev/zero' is a character device")


def _factory_raising(spec, tmp_path):
    (tmp_path / "userfactory.py").write_text("def make(input_shape, num_classes):\n    raise ValueError('odd widths')\n")
    spec["model"] = {"kind": "userfactory:make"}
    return ("bad.yaml: model.kind: factory userfactory:make raised ValueError: odd widths",)


def _factory_exiting_on_import(spec, tmp_path):
    (tmp_path / "userexits.py").write_text("import sys\nsys.exit(0)\n")
    spec["model"] = {"kind": "userexits:make"}
    return ("bad.yaml: model.kind:", "cannot import 'userexits'", "SystemExit(0)")


BAD_SPECS = [
    _unknown_key,
    _misspelt_required_key,
    _factory_with_wrong_logits,
    _warmup_past_training,
    _bad_value,
    _missing_data,
    _unimportable_model,
    _infinite_lr,
    _infinite_space_value,
    _name_too_long,
    _model_beyond_memory,
    _data_beyond_memory,
    _fifo_data,
    _device_data,
    _factory_raising,
    _factory_exiting_on_import,
]

_ALIAS_BOMB = "\n".join(
    ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    + [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)]
)
BAD_YAML = {
    "syntax": ("name: demo\ndata: {source: digits\n", "line 3, column 1: expected ',' or '}'"),
    "duplicate_key": ("name: demo\ndata: {source: digits}\ntrain:\n  epochs: 1\n  epochs: 100000\n", "line 5, column 3: duplicate key 'epochs' (first on line 4)"),
    "alias_bomb": (f"name: demo\ndata: {{source: digits}}\n{_ALIAS_BOMB}\n", "aliases expand to more than 100,000 values"),
    "deep": ("name: demo\ndata: {source: digits}\nmodel: {options: {x: " + "[" * 3000 + "]" * 3000 + "}}\n", "nested more than 32 levels deep"),
    "huge_string": ("name: demo\ndata: {source: '" + "x" * 900_000 + "'}\n", "data.source: unknown source 'xxx"),
}


@pytest.mark.parametrize("breaks", BAD_SPECS, ids=lambda f: f.__name__.strip("_"))
def test_validate_refuses_a_bad_spec(accelsweep_in_process, in_tmp_path, quickstart, write_spec, breaks):
    expected = breaks(quickstart, in_tmp_path)
    write_spec(quickstart, "bad.yaml")
    result = accelsweep_in_process("validate", "bad.yaml")
    assert_clean_user_error(result, in_tmp_path, *expected)


@pytest.mark.parametrize("name", BAD_YAML)
def test_validate_refuses_bad_yaml_in_one_short_line(accelsweep_in_process, in_tmp_path, write_spec, name):
    text, expected = BAD_YAML[name]
    write_spec(text, "bad.yaml")
    result = accelsweep_in_process("validate", "bad.yaml")
    assert_clean_user_error(result, in_tmp_path, "bad.yaml: ", expected)


@pytest.mark.slow  # a real process: torch and MLflow load, seconds
def test_validate_refuses_a_spec_that_is_a_fifo(accelsweep, in_tmp_path):
    os.mkfifo(in_tmp_path / "spec.yaml")
    result = accelsweep("validate", "spec.yaml", timeout=60)  # a real process: a hang is the failure
    assert_clean_user_error(result, in_tmp_path, "spec.yaml: cannot read the spec:", "is not a regular file")


# `run` checks a spec with the same load_spec and load_data as `validate` (every case above), so here
# one case per stage that could leave something behind: the YAML's keys, its values, the data, the model.
RUN_BAD_SPECS = [_unknown_key, _infinite_space_value, _fifo_data, _data_beyond_memory, _factory_exiting_on_import]


@pytest.mark.parametrize("breaks", RUN_BAD_SPECS, ids=lambda f: f.__name__.strip("_"))
def test_run_refuses_a_bad_spec_before_anything_runs(accelsweep_in_process, in_tmp_path, quickstart, write_spec, breaks):
    expected = breaks(quickstart, in_tmp_path)
    write_spec(quickstart, "bad.yaml")
    result = accelsweep_in_process("run", "bad.yaml")
    assert_clean_user_error(result, in_tmp_path, *expected)


@pytest.mark.slow
def test_run_refuses_a_bad_spec_in_a_real_process(accelsweep, in_tmp_path, quickstart, write_spec):
    expected = _factory_exiting_on_import(quickstart, in_tmp_path)  # its sys.exit would end a careless process
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
    assert_clean_user_error(result, in_tmp_path, "spec.yaml: tracking.uri: ", uri)


def _unused_port():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_run_with_an_unreachable_ray_fails_fast_and_leaves_no_store_behind(accelsweep, in_tmp_path, quickstart, write_spec):
    quickstart["ray"] = {"address": f"127.0.0.1:{_unused_port()}"}
    write_spec(quickstart, "spec.yaml")
    result = accelsweep("run", "spec.yaml", timeout=60)  # a hang is the failure: ray.init retries forever
    assert_clean_user_error(result, in_tmp_path, "cannot connect to Ray at '127.0.0.1:")


@pytest.mark.slow  # a real process: torch and MLflow load, seconds
def test_credentials_in_a_tracking_uri_are_never_printed(accelsweep, in_tmp_path):
    uri = f"http://alice:s3cret@127.0.0.1:{_unused_port()}"
    result = accelsweep("report", "quickstart", "--uri", uri)
    assert_clean_user_error(result, in_tmp_path, "cannot reach the MLflow tracking store", "http://***@127.0.0.1:")
    assert "s3cret" not in result.stderr + result.stdout


@pytest.mark.slow
def test_report_of_an_unknown_sweep(accelsweep, in_tmp_path):
    uri = f"sqlite:///{in_tmp_path / 'store' / 'mlflow.db'}"
    result = accelsweep("report", "nosuch", "--uri", uri)  # no store there at all: say so, create nothing
    assert_clean_user_error(result, in_tmp_path, "no MLflow store at", uri)
    (in_tmp_path / "store").mkdir()
    MlflowClient(uri).search_experiments()  # an empty store
    result = accelsweep("report", "nosuch", "--uri", uri)
    assert result.returncode == 2 and "no sweep named or with run id 'nosuch'" in result.stderr
    for quoted_name in ("name'x", 'name"x', "both'\""):  # a quote cannot break MLflow's filter string
        stderr = io.StringIO()
        with redirect_stderr(stderr):  # in this process: the command's exit and output were checked above
            code = main(["report", quoted_name, "--uri", uri])
        assert code == 2 and stderr.getvalue().startswith("error: no sweep named or with run id"), stderr.getvalue()


@pytest.mark.slow  # the MLflow server takes half a minute to answer on a loaded machine
def test_ui_serves_without_an_mlflow_script_on_path(in_tmp_path, quickstart, new_mlflow_store):
    from orchestrator.config.loading import parse_spec
    from orchestrator.tracking import store

    client = store.connect(new_mlflow_store(in_tmp_path / "m.db"))  # a sweep for the UI to show
    store.start_sweep_run(client, parse_spec(quickstart), "name: quickstart\n", str(in_tmp_path / "results"))
    port = _unused_port()
    env = {**os.environ, "PATH": str(in_tmp_path)}  # no `mlflow` executable to be found
    ui = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", "ui", "--port", str(port), "--uri", f"sqlite:///{in_tmp_path}/m.db"],
        cwd=in_tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and ui.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
                    assert response.status == 200
                    return
            except OSError:
                time.sleep(1)
        pytest.fail(f"the MLflow UI never answered (exit {ui.poll()})")
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(ui.pid, signal.SIGTERM)  # the UI and the server workers it started, in their own session
        ui.communicate(timeout=30)


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


HOSTILE_LEAVES = (
    st.sampled_from([math.inf, -math.inf, math.nan, 1e308, 10**30, -(10**30), 2**63])
    | st.integers(0, 200_000).map(lambda n: "x" * n)
)


@st.composite
def hostile_spec_text(draw, base):
    """The quickstart, mutated, dumped as YAML, then perhaps given a duplicate key or deep nesting."""
    spec = draw(mutated_quickstart(base))
    node = draw(st.sampled_from(list(_containers(spec))))
    keys = [key for key, _ in _items(node)]
    if keys and draw(st.booleans()):
        node[draw(st.sampled_from(keys))] = draw(HOSTILE_LEAVES)
    lines = yaml.safe_dump(spec, sort_keys=False, default_flow_style=False).splitlines()
    index = draw(st.integers(0, len(lines) - 1))
    edit = draw(st.sampled_from(["none", "duplicate", "nest"]))
    if edit == "duplicate":
        lines.insert(index, lines[index])
    elif edit == "nest" and ": " in lines[index]:
        depth = draw(st.integers(1, 3000))
        lines[index] = lines[index].split(": ")[0] + ": " + "[" * depth + "]" * depth
    return "\n".join(lines) + "\n"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_spec_text(yaml.safe_load(QUICKSTART.read_text())))
def test_validate_answers_any_spec_with_valid_or_short_error_lines(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("fuzz") / "mutant.yaml"
    path.write_text(text)
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        code = main(["validate", str(path)])
    if code == 0:
        assert "valid;" in stdout.getvalue()
        return
    assert code == 2, stderr.getvalue()
    lines = stderr.getvalue().splitlines()
    assert lines and lines[0].startswith(f"error: {path}: "), stderr.getvalue()[:2000]
    assert all(line.startswith("error: ") for line in lines), stderr.getvalue()[:2000]
    assert all(len(line) <= 500 for line in lines), max(lines, key=len)
