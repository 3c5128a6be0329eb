"""The technique registry: discovery, phase order, export conflicts, and a technique added from outside."""

import re
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from trainers import techniques
from trainers.data import load_dataset
from trainers.loop import TrialRecipe, build_trial_model, export_deployable, train_trial
from trainers.techniques import Technique, phase_order, register, techniques_from_choices
from trainers.techniques.prune import update_pruning

README = Path(__file__).resolve().parents[3] / "README.md"


@pytest.fixture
def isolated_registry(monkeypatch):
    """Registrations made in the test disappear afterwards."""
    monkeypatch.setattr(techniques, "_REGISTRY", dict(techniques._REGISTRY))
    saved = dict(techniques.TECHNIQUES)
    yield
    techniques.TECHNIQUES.clear()
    techniques.TECHNIQUES.update(saved)


def keys(phase):
    return [technique.key for technique in phase_order(phase)]


def test_every_module_of_the_package_is_registered():
    modules = {path.stem for path in Path(techniques.__file__).parent.glob("*.py")} - {"__init__", "common"}
    registered_modules = {technique.config.__module__.rsplit(".", 1)[1] for technique in techniques.techniques()}
    assert registered_modules == modules


def test_build_phase_masks_before_fake_quantisation_and_after_factorising():
    order = keys("build")
    assert order.index("rank") < order.index("sparsity") < order.index("quant_bits")


def test_compile_exports_last_and_labels_keep_registry_order():
    assert keys("export")[-1] == "compile"
    configs = techniques_from_choices({"sparsity": 0.5, "quant_bits": 8, "rank": 4, "dropout": 0.1})
    assert techniques.label_string(configs) == "r4-q8-sp50-d0.1"


def test_after_cycles_are_refused(isolated_registry):
    class First:
        key = "first"

    class Second:
        key = "second"

    register(Technique(config=First, position=1, after=("second",), build=lambda model, cfg: {}))
    register(Technique(config=Second, position=2, after=("first",), build=lambda model, cfg: {}))
    with pytest.raises(ValueError, match="cycle"):
        phase_order("build")


def test_a_key_registered_twice_is_refused(isolated_registry):
    existing = techniques.techniques()[0]
    with pytest.raises(ValueError, match="registered twice"):
        register(Technique(config=existing.config, position=999))


def test_quantised_export_wins_over_sparse_export_and_the_tags_say_so():
    digits = load_dataset("digits")
    model, data, configs, _ = build_trial_model(TrialRecipe(choices={"sparsity": 0.8, "quant_bits": 8}), digits)
    update_pruning(model, configs["sparsity"], epoch=0, epochs=1)
    exported = export_deployable(model, configs, data.preprocess(), data.x_test[:1])
    assert (exported.fmt.weight_bits, exported.fmt.sparse) == (8, False)
    assert exported.notes["export_conflict"] == "sp80 export skipped: q8 export wins"
    assert exported.fmt.notes["export_conflict"] == exported.notes["export_conflict"]


def readme_technique_example():
    text = README.read_text()
    section = text[text.index("## Adding a technique") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def test_the_readme_technique_moves_in_with_its_module_alone(isolated_registry, tmp_path, monkeypatch):
    (tmp_path / "label_smoothing.py").write_text(readme_technique_example())
    # dropping the file into the package folder: the package's search path gains the folder
    monkeypatch.setattr(techniques, "__path__", list(techniques.__path__) + [str(tmp_path)])
    monkeypatch.delitem(sys.modules, "trainers.techniques.label_smoothing", raising=False)
    techniques.discover()

    assert "label_smoothing" in techniques.TECHNIQUES
    assert techniques.off_value("label_smoothing") == 0.0
    assert keys("loss") == ["distill", "l1", "label_smoothing"]
    digits = load_dataset("digits")
    reports = []
    final = train_trial(
        TrialRecipe(epochs=1, hidden=(16,), choices={"label_smoothing": 0.2}), digits, lambda m, c: reports.append(m)
    )
    assert reports[-1]["notes"]["mode"] == "ls0.2"
    plain = train_trial(TrialRecipe(epochs=1, hidden=(16,)), digits, lambda m, c: None)
    # smoothed targets keep the logits from growing: the training loss it reports (the plain
    # cross-entropy) differs from the unsmoothed trial's, so the hook really ran
    assert final["train_loss"] != plain["train_loss"]
    with pytest.raises(ValueError, match="LabelSmoothing.smoothing"):
        techniques_from_choices({"label_smoothing": 1.5})


def test_hooks_are_called_for_inactive_configs_and_do_nothing():
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
    before = {name: tensor.clone() for name, tensor in model.state_dict().items()}
    configs = techniques_from_choices({})
    assert techniques.build(model, configs) == {}
    assert techniques.epoch_start(model, configs, 0, 2) == {"sparsity": 0.0}
    inputs, logits, targets = torch.zeros(2, 64), torch.zeros(2, 10), torch.zeros(2, dtype=torch.long)
    assert techniques.loss_terms(model, configs, logits, targets, inputs) == []
    assert techniques.reshape(model, configs, 0, 2, inputs) is None
    assert all(torch.equal(before[name], tensor) for name, tensor in model.state_dict().items())
