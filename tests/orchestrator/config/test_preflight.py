"""The pre-flight on real data and real models: a swept technique value the model cannot take, and a
teacher checkpoint that is not this model's, are spec errors before Ray starts."""

import pytest
import torch

from orchestrator.config.loading import parse_spec
from orchestrator.config.preflight import load_data
from orchestrator.config.schema import SpecError
from trainers.checkpoints import save_atomically
from trainers.models import build_model


def _spec(quickstart, **changes):
    for section, value in changes.items():
        quickstart[section] = value
    return parse_spec(quickstart, "spec.yaml")


def _trained_file(path, model):
    save_atomically({"epoch": 1, "model": model.state_dict(), "optimizer": {}}, str(path))
    return str(path)


def test_a_technique_value_that_would_change_nothing_is_refused_naming_key_and_value(quickstart):
    spec = _spec(
        quickstart,
        model={"kind": "tests.trainers.test_zoo:embedding_only"},
        space={"sparsity": {"choice": [0.0, 0.5]}},
    )
    with pytest.raises(SpecError) as refused:
        load_data(spec, "spec.yaml")
    message = str(refused.value)
    assert message.startswith("spec.yaml: space.sparsity: sparsity on EmbeddingOnly: no layer it applies to")
    assert message.endswith("got 0.5")


def test_only_the_off_value_of_a_technique_is_no_refusal(quickstart):
    spec = _spec(quickstart, model={"kind": "tests.trainers.test_zoo:embedding_only"}, space={"sparsity": 0.0})
    assert load_data(spec, "spec.yaml").num_classes == 10


def test_a_teacher_that_is_not_a_checkpoint_is_refused(quickstart, tmp_path):
    garbage = tmp_path / "teacher.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (tmp_path / "missing.pt", garbage):
        spec = _spec(quickstart, train={"epochs": 1, "teacher_path": str(path)}, space={"distill": 0.5})
        with pytest.raises(SpecError, match=r"^spec.yaml: train.teacher_path: checkpoint .* cannot be read"):
            load_data(spec, "spec.yaml")


def test_a_teacher_of_another_model_is_refused_and_this_models_is_taken(quickstart, tmp_path):
    torch.manual_seed(0)
    other = _trained_file(tmp_path / "other.pt", build_model("mlp", (1, 8, 8), 10, hidden=(16,)))
    spec = _spec(quickstart, train={"epochs": 1, "teacher_path": other}, space={"distill": 0.5})
    with pytest.raises(SpecError, match=r"^spec.yaml: train.teacher_path: teacher .* does not fit this trial's model"):
        load_data(spec, "spec.yaml")
    same = _trained_file(tmp_path / "same.pt", build_model("mlp", (1, 8, 8), 10, hidden=tuple(quickstart["model"]["hidden"])))
    spec = _spec(quickstart, train={"epochs": 1, "teacher_path": same}, space={"distill": 0.5})
    assert load_data(spec, "spec.yaml").num_classes == 10


@pytest.mark.parametrize(
    "factory, message",
    [
        ("make_three_logits", "gives logits of shape (2, 3) for a batch of 2 inputs; the data has 10 classes, so (2, 10) is expected"),
        ("make_for_100_inputs", "fails on a batch of 2 inputs of the data (2x1x8x8 torch.float32): RuntimeError: mat1 and mat2 shapes cannot be multiplied (2x64 and 100x10)"),
    ],
)
def test_a_model_that_does_not_fit_the_data_is_refused_after_one_batch(quickstart, factory, message):
    kind = f"tests.trainers.toy_factory:{factory}"
    spec = _spec(quickstart, model={"kind": kind})
    with pytest.raises(SpecError) as refused:
        load_data(spec, "spec.yaml")
    assert str(refused.value) == f"spec.yaml: model.kind: model {kind!r} {message}"
