"""Every command's arguments: a bad value is one `error:` line naming the flag and the value, exit 2,
before the command reads a store, rebuilds a model or prints a table; a closed stdout (`| head`)
ends any command quietly; and a property test: any argv, parsed by any command's parser, exits 0 or
2 with at most one short `error:` line and no traceback."""

import argparse
import io
import os
import signal
import socket
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.tracking import MlflowClient

from orchestrator.cli import COMMANDS, main, parser
from tests.orchestrator.cli.test_cli import assert_clean_user_error
from tests.orchestrator.stored_sweep import TRIALS, create_sweep

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A sqlite store holding the sweep "demo" (TRIALS: measured, without a stored spec); its URI."""
    root = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    client = MlflowClient(tracking_uri=uri)
    experiment_id = client.create_experiment("demo", artifact_location=(root / "artifacts").as_uri())
    create_sweep(client, experiment_id, "demo", TRIALS, start_time=1_000)
    return uri


def run_in_process(argv):
    """`accelsweep ARGV` in this process: (exit code, stdout, stderr)."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            code = main(argv)
        except SystemExit as exit:  # argparse's own exits: --help, and a bad argument
            code = exit.code
    return code, stdout.getvalue(), stderr.getvalue()


def _store_state(uri):
    client = MlflowClient(tracking_uri=uri)
    runs = client.search_runs([experiment.experiment_id for experiment in client.search_experiments()])
    return sorted((run.info.run_id, run.info.status, len(run.data.tags)) for run in runs), client.search_registered_models()


BAD_ARGUMENTS = [
    (["report", "demo", "--objectives", ""], "argument --objectives: needs at least one comma-separated name, got ''"),
    (["report", "demo", "--max-accuracy-drop", "nan"], "argument --max-accuracy-drop: must be a finite number, got 'nan'"),
    (["report", "demo", "--target-tolerance", "inf"], "argument --target-tolerance: must be a finite number, got 'inf'"),
    (["report", "demo", "--max-accuracy-drop", "0.1", "--register", "bad/name:1"],
     "argument --register: 'bad/name:1' is not a model name MLflow accepts: Invalid model name 'bad/name:1'. Names cannot contain '/' or ':'."),
    (["report", "demo", "--max-accuracy-drop", "0.1", "--register", ""], "argument --register: '' is not a model name MLflow accepts"),
    (["report", "demo", "--plot", "no/such/dir/x.png"], "argument --plot: no folder 'no/such/dir' to write 'no/such/dir/x.png' in"),
    (["report", "demo", "--plot", "x.txt"], "argument --plot: writes a PNG: give a file name ending in .png, got 'x.txt'"),
    (["bench", "demo", "--rounds", "0"], "argument --rounds: Input should be greater than or equal to 3, got '0'"),
    (["bench", "demo", "--rounds", "1e3"], "argument --rounds: not a whole number: '1e3'"),
    (["bench", "demo", "--runtimes", ""], "argument --runtimes: needs at least one comma-separated name, got ''"),
    (["bench", "demo", "--runtimes", " , "], "argument --runtimes: needs at least one comma-separated name, got ' , '"),
    (["ui", "demo", "--port", "99999"], "argument --port: a port is from 1 to 65535, got '99999'"),
    (["ui", "demo", "--port", "0"], "argument --port: a port is from 1 to 65535, got '0'"),  # the links need the real port
    (["jobs", "list", "--address", "http://[::1"], "'http://[::1' (from --address) is not a URL: Invalid IPv6 URL"),
]


@pytest.mark.parametrize("argv, message", BAD_ARGUMENTS, ids=lambda value: " ".join(value) if isinstance(value, list) else "")
def test_a_bad_argument_is_one_error_line_naming_flag_and_value(store, tmp_path, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    before = _store_state(store)
    code, stdout, stderr = run_in_process([*argv, "--uri", store] if argv[0] != "jobs" else argv)
    assert code == 2, stderr
    assert stdout == "", stdout  # nothing printed before the refusal: no table
    lines = stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) <= 500, stderr
    assert message in lines[0], lines[0]
    assert _store_state(store) == before  # no run, tag or registered model was written
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: bench --gpu would run")
def test_bench_on_the_gpu_without_cuda_says_so(store, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, stdout, stderr = run_in_process(["bench", "demo", "--gpu", "--uri", store])
    assert (code, stdout) == (2, "")
    assert stderr.startswith("error: bench --gpu: no CUDA device here (torch ") and len(stderr.splitlines()) == 1, stderr


def test_ui_on_a_busy_port_is_one_error_line(store):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, stdout, stderr = run_in_process(["ui", "demo", "--uri", store, "--port", str(port)])
    assert (code, stdout) == (2, "")
    assert stderr == f"error: ui --port {port}: cannot serve on 127.0.0.1:{port}: Address already in use (give another --port)\n"


@pytest.mark.parametrize(
    "argv, message",
    [
        (["report", "demo", "--plot", "x.txt"], "argument --plot: writes a PNG"),
        (["report", "demo", "--max-accuracy-drop", "0.01", "--register", "bad/name:1"], "argument --register: 'bad/name:1'"),
    ],
)
def test_the_real_command_refuses_a_bad_argument_in_one_line(accelsweep, in_tmp_path, store, argv, message):
    result = accelsweep(*argv, "--uri", store)
    assert_clean_user_error(result, in_tmp_path, message)
    assert result.stdout == ""


@pytest.mark.parametrize(
    "argv, code",
    [(["report", "demo"], 128 + signal.SIGPIPE), (["report", "--help"], 0)],  # argparse ignores its own write errors
    ids=["report", "help"],
)
def test_a_closed_stdout_ends_the_command_quietly(store, tmp_path, argv, code):
    """`accelsweep report demo | head -0`: the reader is gone before the table is written."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = subprocess.Popen(
        [sys.executable, "-m", "orchestrator", *argv, *(["--uri", store] if "demo" in argv else [])],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    command.stdout.close()  # before the command has even started: its first write meets a closed pipe
    stderr = command.stderr.read()
    assert command.wait(timeout=120) == code, stderr
    assert stderr == "", stderr


def _flags(command_name):
    """Every option string of a command's parser (and of its actions' parsers, for `jobs`)."""
    commands = next(action for action in parser()._actions if isinstance(action, argparse._SubParsersAction))
    found, todo = set(), [commands.choices[command_name]]
    while todo:
        current = todo.pop()
        for action in current._actions:
            found |= set(action.option_strings)
            if isinstance(action.choices, dict):
                found |= set(action.choices)
                todo += list(action.choices.values())
    return sorted(found)


HOSTILE_VALUES = st.sampled_from(
    ["", " ", ",", "nan", "inf", "-inf", "-1", "0", "3", "1e309", "99999", "2.5", "demo", "x.txt", "no/dir/x.png",
     "x.png", "bad/name:1", "http://[::1", "http://127.0.0.1:1", "ray://x", "latency_ms", "test_accuracy,size_bytes",
     "eager", "onnxruntime,eager", "--", "-", "-x", "\x00", "é", "a" * 600]
) | st.text(max_size=20)
COMMAND_NAMES = [module.__name__.rpartition(".")[2] for module in COMMANDS]


@st.composite
def command_lines(draw):
    command = draw(st.sampled_from(COMMAND_NAMES))
    flags = _flags(command)
    words = draw(st.lists(st.sampled_from(flags) | HOSTILE_VALUES, max_size=6))
    return [command, *words]


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(command_lines())
def test_any_command_line_parses_or_is_refused_in_one_short_line(argv):
    stdout, stderr = io.StringIO(), io.StringIO()
    with redirect_stdout(stdout), redirect_stderr(stderr):
        try:
            parser().parse_args(argv)
            code = 0
        except SystemExit as exit:
            code = exit.code
    assert code in (0, 2), (argv, stderr.getvalue())
    errors = [line for line in stderr.getvalue().splitlines() if line.startswith("error:")]
    assert stderr.getvalue().count("\n") == len(errors) <= 1, (argv, stderr.getvalue())
    assert all(len(line) <= 500 for line in errors), errors
    assert "Traceback" not in stderr.getvalue()
    if code == 2:
        assert errors, (argv, stdout.getvalue())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(_flags("report")) | HOSTILE_VALUES, max_size=5))
def test_report_answers_any_arguments_with_its_table_or_one_error_line(store, tmp_path, words):
    """`report demo ...` run to the end against a stored sweep without a spec (so --register is
    refused before any rebuilding): exit 0 or 2, at most one short error line, no traceback."""
    argv = ["report", "demo", *words, "--uri", store]
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        code, _, stderr = run_in_process(argv)
    finally:
        os.chdir(cwd)
    assert code in (0, 2), (argv, stderr)
    errors = [line for line in stderr.splitlines() if line.startswith("error:")]
    assert len(errors) <= 1 and all(len(line) <= 500 for line in errors), (argv, stderr)
    assert "Traceback" not in stderr, (argv, stderr)
