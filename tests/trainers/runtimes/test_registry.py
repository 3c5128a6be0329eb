"""The runtime registry: discovery, lookup, versions and the logits comparison."""

import dataclasses
import pkgutil
import sys

import pytest
import torch

from tests.trainers.runtimes.toys import export_inputs, mlp
from trainers import runtimes
from trainers.runtimes import RUNTIMES, export_to, max_abs_diff, runtime_versions


def test_every_module_of_the_package_registers_its_runtime():
    modules = {info.name for info in pkgutil.iter_modules(runtimes.__path__)}
    assert modules == {"aotinductor", "compile", "eager", "onnxruntime"}
    runtimes.discover()
    assert set(RUNTIMES) == modules


def test_a_new_runtime_module_is_found_without_editing_the_package(tmp_path, monkeypatch):
    (tmp_path / "doubled.py").write_text(
        "from trainers.runtimes import register\n"
        "from trainers.deployable import EagerDeployable\n"
        "@register('doubled')\n"
        "def export_doubled(inputs):\n"
        "    return EagerDeployable(inputs.model.double())\n"
    )
    monkeypatch.setattr(runtimes, "__path__", [*runtimes.__path__, str(tmp_path)])
    monkeypatch.setattr(runtimes, "RUNTIMES", dict(RUNTIMES))
    monkeypatch.delitem(sys.modules, "trainers.runtimes.doubled", raising=False)
    assert "doubled" in runtimes.discover()
    assert runtimes.export_to("doubled", export_inputs(mlp())).module[1].weight.dtype == torch.float64
    sys.modules.pop("trainers.runtimes.doubled")


def test_an_unknown_runtime_names_the_valid_ones():
    valid = "aotinductor, compile, eager, onnxruntime"
    with pytest.raises(KeyError, match=f"unknown runtime 'tensorrt'; valid runtimes: {valid}"):
        export_to("tensorrt", export_inputs(mlp()))


def test_runtime_versions_name_the_packages_of_each_runtime():
    versions = runtime_versions(["onnxruntime", "eager"])
    assert set(versions) == {"onnxruntime", "onnx", "torch"}
    assert versions["torch"].startswith(torch.__version__.split("+")[0])


def test_max_abs_diff_compares_logits():
    inputs = export_inputs(mlp())

    def shifted(x):
        return inputs.eager(x) + 0.25

    assert max_abs_diff(shifted, inputs.eager, inputs.example) == pytest.approx(0.25)
    assert max_abs_diff(inputs.eager, inputs.eager, inputs.example) == 0.0


def test_batch_example_has_at_least_two_rows():
    inputs = export_inputs(mlp())
    one = dataclasses.replace(inputs, example=inputs.example[:1])
    assert one.batch_example().shape == (2, 64) and torch.equal(one.batch_example()[1], inputs.example[0])
    assert inputs.batch_example() is inputs.example
