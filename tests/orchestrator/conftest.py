"""Shared fixtures of the orchestrator tests: the quickstart spec as a dict, spec files written into
a temporary directory, and the real `accelsweep` command run in a subprocess."""

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

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
