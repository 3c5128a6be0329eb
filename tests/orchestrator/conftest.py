"""Shared fixtures of the orchestrator tests: the quickstart spec as a dict, spec files written into
a temporary directory, the real `accelsweep` command run in a subprocess or (for input errors,
which end before Ray or MLflow start) in this process, and one real finished sweep per session
for the tests that only read one."""

import contextlib
import copy
import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
import yaml

from orchestrator.cli import main
from orchestrator.tracking.tags import KIND_TAG
from tests.conftest import copy_of_new_mlflow_store

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "search_spaces" / "quickstart.yaml"
_QUICKSTART_RAW = yaml.safe_load(QUICKSTART.read_text())


@pytest.fixture
def quickstart() -> dict:
    """A fresh copy of search_spaces/quickstart.yaml as a dict, free to mutate."""
    return copy.deepcopy(_QUICKSTART_RAW)


@pytest.fixture
def write_spec(tmp_path):
    """Write a spec (a dict, dumped as YAML, or raw YAML text) into tmp_path; returns its path.

    Example:
        >>> path = write_spec({"name": "t", "data": {"source": "digits"}}, "t.yaml")
    """

    def write(content: dict | str, filename: str = "spec.yaml") -> Path:
        path = tmp_path / filename
        path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
        return path

    return write


@pytest.fixture
def in_tmp_path(tmp_path, monkeypatch) -> Path:
    """Make tmp_path the working directory, with no MLflow or Ray address taken from the environment."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return tmp_path


@pytest.fixture
def accelsweep(in_tmp_path):
    """Run `python -m orchestrator ARGS...` for real, in tmp_path; returns the CompletedProcess.

    Example:
        >>> result = accelsweep("validate", "spec.yaml")
        >>> result.returncode
        0
    """

    def run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "orchestrator", *args],
            cwd=in_tmp_path,
            env=os.environ.copy(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    return run


@pytest.fixture
def accelsweep_in_process(in_tmp_path, monkeypatch):
    """Run `accelsweep ARGS...` in this process, in tmp_path, as the console script does (`main`);
    returns a CompletedProcess with what it printed to stdout and stderr (its log lines too).

    For commands that end on an input error before Ray or MLflow start: each command keeps at least
    one test through the real `accelsweep` subprocess (`accelsweep`). Like `python -m`, tmp_path is
    first on sys.path (a spec's factory module is imported from there, and forgotten afterwards);
    the environment defaults `main` sets are undone afterwards.

    Example:
        >>> result = accelsweep_in_process("validate", "spec.yaml")
        >>> result.returncode
        0
    """
    monkeypatch.syspath_prepend(str(in_tmp_path))
    saved_environment = dict(os.environ)

    def run(*args: str) -> subprocess.CompletedProcess:
        stdout, stderr = io.StringIO(), io.StringIO()
        handler = logging.StreamHandler(stderr)  # the terminal's log lines, as `environment.configure` formats them
        handler.setFormatter(logging.Formatter("%(asctime)s %(message)s", datefmt="%H:%M:%S"))
        root = logging.getLogger()
        root.addHandler(handler)
        level, root.level = root.level, logging.INFO
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    code = main(list(args))
                except SystemExit as exit_:  # argparse: --help, a usage error
                    code = exit_.code
        finally:
            root.removeHandler(handler)
            root.setLevel(level)
            os.environ.clear()
            os.environ.update(saved_environment)
        return subprocess.CompletedProcess(["accelsweep", *args], code, stdout.getvalue(), stderr.getvalue())

    yield run
    for name, module in list(sys.modules.items()):
        if str(getattr(module, "__file__", None) or "").startswith(str(in_tmp_path)):
            del sys.modules[name]  # a user's module of this test must not answer the next test's import


class FinishedSweep(NamedTuple):
    """A sweep that `accelsweep run` ran for real: its directory (mlflow.db and accelsweep_results
    are there), the finished command, a client of its store, its parent runs and its trial runs."""

    workdir: Path
    completed: subprocess.CompletedProcess
    client: object  # an MlflowClient
    parents: list
    children: list


@contextlib.contextmanager
def started_local_ray(num_cpus: int):
    """A new local Ray of `num_cpus` CPUs in this process (never a cluster running beside it), shut
    down on leaving.

    Example:
        >>> with started_local_ray(2):  # doctest: +SKIP
        ...     ray.get(ray.remote(lambda: 1).remote())
    """
    import ray

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def run_sweep(spec_text: str, workdir: Path, experiment: str, expect_code: int | None = 0) -> FinishedSweep:
    """`accelsweep run spec.yaml` for real, in a subprocess in `workdir`, into ./mlflow.db there (a
    new, empty store: `copy_of_new_mlflow_store`).

    Args:
        spec_text: the spec's YAML.
        workdir: an empty directory.
        experiment: the spec's MLflow experiment (its name unless `tracking.experiment` says).
        expect_code: the exit code asserted, or None to leave it to the caller.

    Example:
        >>> sweep = run_sweep(SHARED_SWEEP, tmp_path, "it-sweep")  # doctest: +SKIP
    """
    (workdir / "spec.yaml").write_text(spec_text)
    copy_of_new_mlflow_store(workdir / "mlflow.db")  # the store `run` would create, without its migrations' seconds
    # the store is the working directory's sqlite file: another test's URI or Ray must not leak in
    env = {name: value for name, value in os.environ.items() if name not in ("MLFLOW_TRACKING_URI", "RAY_ADDRESS")}
    completed = subprocess.run(
        [sys.executable, "-m", "orchestrator", "run", "spec.yaml"], cwd=workdir, env=env, capture_output=True, text=True, timeout=900
    )
    if expect_code is not None:
        assert completed.returncode == expect_code, completed.stderr[-3000:]
    from mlflow.tracking import MlflowClient  # only where a sweep is run

    client = MlflowClient(f"sqlite:///{workdir / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    parents = [run for run in runs if run.data.tags[KIND_TAG] == "sweep"]
    children = [run for run in runs if run.data.tags[KIND_TAG] == "trial"]
    return FinishedSweep(workdir, completed, client, parents, children)


SHARED_SWEEP = """\
# mirror: https://alice:s3cret@mlflow.example.com
name: it-sweep
data: {source: digits}
model: {kind: mlp, hidden: [32]}
train: {epochs: 2, batch_size: 64, seed: 1}
space:
  quant_bits: {grid: [8, 4]}
  workers: {grid: [1, 2]}
  dropout: 0.1
  grad_compression: powersgd   # what the 2-worker trials all-reduce; said to do nothing on 1 worker
  powersgd_rank: 2
search: {algorithm: grid, num_samples: 1, metric: val_accuracy, mode: max}
resources: {workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 2}
deploy: {rounds: 3}   # both runtimes, fewest rounds: these tests check what is measured, not how well
"""
"""The spec of the session's one real sweep: the baseline and a 2 x 2 grid, 1-worker trials trained
in-process and 2-worker trials by Ray Train (DDP, gradients compressed by PowerSGD), measured in ONNX
Runtime and eager PyTorch."""


@pytest.fixture(scope="session")
def finished_sweep(tmp_path_factory) -> FinishedSweep:
    """The session's one real `accelsweep run` of SHARED_SWEEP (on its own local Ray, into a sqlite
    store in its directory), finished; read it, never write to it. A test that needs a real sweep
    of a different spec runs its own (`run_sweep`) only when the behaviour it checks needs that spec.
    """
    return run_sweep(SHARED_SWEEP, tmp_path_factory.mktemp("it-sweep"), "it-sweep")
