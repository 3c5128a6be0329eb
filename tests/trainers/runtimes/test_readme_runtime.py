"""The README's "Adding a runtime" example, installed as a module of trainers/runtimes and used."""

import re
import sys
from pathlib import Path

import pytest

import trainers.runtimes as runtimes
from orchestrator.config.loading import parse_spec
from orchestrator.config.schema import runtime_names
from trainers.data import load_dataset
from trainers.loop import TrialRecipe, train_trial

README = Path(__file__).resolve().parents[3] / "README.md"


def readme_runtime_example():
    text = README.read_text()
    section = text[text.index("## Adding a runtime") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


@pytest.fixture
def runtime_in_the_package(tmp_path, monkeypatch):
    """The example dropped into the package: its folder joins the package's search path."""
    (tmp_path / "torch_export.py").write_text(readme_runtime_example())
    runtimes.__path__.append(str(tmp_path))  # in place: the spec lists runtimes from this same list
    monkeypatch.setattr(runtimes, "RUNTIMES", dict(runtimes.RUNTIMES))
    monkeypatch.delitem(sys.modules, "trainers.runtimes.torch_export", raising=False)
    yield
    runtimes.__path__.remove(str(tmp_path))


def test_the_readme_runtime_moves_in_with_its_module_alone(runtime_in_the_package, tmp_path):
    runtimes.discover()
    assert "torch_export" in runtimes.RUNTIMES and "torch_export" in runtime_names()
    spec = {"name": "t", "data": {"source": "digits"}, "deploy": {"runtimes": ["torch_export", "eager"]}}
    assert parse_spec(spec).deploy.runtimes[0] == "torch_export"

    reports = []
    digits = load_dataset("digits")
    recipe = TrialRecipe(epochs=1, hidden=(16,), runtime="torch_export")
    final = train_trial(recipe, digits, lambda metrics, checkpoint: reports.append((metrics, checkpoint)))
    metrics, checkpoint = reports[-1]
    assert metrics["notes"]["runtime"] == "torch_export"
    assert final["runtime_max_abs_diff"] == 0.0  # the same graph as eager, captured
    assert checkpoint["deployable"].save(str(tmp_path)).endswith("model.pt2")
    assert final["size_bytes"] == (tmp_path / "model.pt2").stat().st_size
    assert final["param_count"] == 64 * 16 + 16 + 16 * 10 + 10


def test_the_readme_runtime_says_what_it_cannot_capture(runtime_in_the_package):
    runtimes.discover()
    reports = []
    recipe = TrialRecipe(epochs=1, hidden=(16,), choices={"quant_bits": 8}, runtime="torch_export")
    train_trial(recipe, load_dataset("digits"), lambda metrics, checkpoint: reports.append(metrics))
    notes = reports[-1]["notes"]
    assert notes["runtime"] == "eager" and notes["runtime_unavailable"].startswith("torch_export: ")
