"""Distillation: Hinton's loss, a teacher read from a trial checkpoint, and a student pulled toward it."""

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from trainers import techniques
from trainers.checkpoints import CheckpointError, save_atomically
from trainers.data import load_dataset
from trainers.loop import TrialFailed, TrialRecipe, build_trial_model, rebuild_deployable, train_trial
from trainers.techniques.distill import Distill, distillation_loss


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class Last:
    def __init__(self):
        self.reports = []

    def __call__(self, metrics, checkpoint):
        self.reports.append((metrics, checkpoint))


@pytest.fixture(scope="module")
def untrained_teacher(digits, tmp_path_factory):
    """The trained.pt of a freshly built baseline MLP: the right shapes, read like any teacher."""
    model, _, _, _ = build_trial_model(TrialRecipe(hidden=(64,), seed=5), digits)
    path = str(tmp_path_factory.mktemp("untrained") / "trained.pt")
    save_atomically({"epoch": 0, "model": model.state_dict(), "optimizer": {}}, path)
    return path


@pytest.fixture(scope="module")
def teacher(digits, tmp_path_factory):
    """A baseline MLP, trained: (its recipe, its trained.pt)."""
    recipe = TrialRecipe(hidden=(64,), epochs=10)
    recorder = Last()
    train_trial(recipe, digits, recorder)
    path = str(tmp_path_factory.mktemp("teacher") / "trained.pt")
    save_atomically(recorder.reports[-1][1]["trained"], path)
    return recipe, path


def test_the_config_checks_its_values_says_its_mode_and_what_it_does():
    assert Distill(0.5).label() == "kd0.5" and Distill().label() == "" and not Distill().active
    assert Distill(0.5, temperature=2).describe() == (
        "distillation: 0.5 of the loss is the KL divergence to the teacher's logits at temperature 2"
    )
    with pytest.raises(ValueError, match="Distill.distill"):
        Distill(1.5)
    with pytest.raises(ValueError, match="Distill.temperature"):
        Distill(0.5, temperature=0)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_the_loss_is_hintons_formula_on_a_hand_checked_case(temperature):
    student, teacher = torch.tensor([[0.0, 0.0]]), torch.tensor([[0.0, math.log(9.0)]])
    # the student is uniform; the teacher's softmax at T is (1, 9^(1/T)) / (1 + 9^(1/T))
    odds = 9.0 ** (1 / temperature)
    p = (1 / (1 + odds), odds / (1 + odds))
    kl = p[0] * math.log(p[0] / 0.5) + p[1] * math.log(p[1] / 0.5)
    cross_entropy = math.log(2.0)
    got = distillation_loss(student, teacher, torch.tensor([0]), 0.25, temperature)
    assert got.item() == pytest.approx(0.75 * cross_entropy + 0.25 * temperature**2 * kl, rel=1e-6)
    assert distillation_loss(student, teacher, torch.tensor([0]), 0.0, temperature).item() == pytest.approx(cross_entropy)


def test_the_loss_phase_adds_what_turns_the_plain_cross_entropy_into_hintons_loss(digits, untrained_teacher):
    path = untrained_teacher
    recipe = TrialRecipe(hidden=(64,), choices={"distill": 0.7, "rank": 8}, teacher_path=path)
    model, data, configs, notes = build_trial_model(recipe, digits)
    techniques.wrap(model, configs, lambda module: None)
    loaded = configs["distill"].teacher.module
    assert notes["teacher"] == path and not loaded.training
    assert not any(parameter.requires_grad for parameter in loaded.parameters())
    x, y = data.preprocessed().x_train[:32], data.y_train[:32]
    logits = model(x)
    terms = techniques.loss_terms(model, configs, logits, y, x)
    expected = distillation_loss(logits, loaded(x), y, 0.7, 4.0)
    torch.testing.assert_close(sum(terms, F.cross_entropy(logits, y)), expected)
    terms[0].backward()  # differentiable with respect to the student only
    assert all(parameter.grad is None for parameter in loaded.parameters())


def test_a_distilling_trial_without_a_teacher_is_refused_before_it_trains(digits, tmp_path):
    reports = []
    with pytest.raises(TrialFailed, match="distill needs a teacher: set the trial recipe's teacher_path"):
        train_trial(TrialRecipe(epochs=1, choices={"distill": 0.5}), digits, lambda m, c: reports.append(m))
    garbage = tmp_path / "trained.pt"
    garbage.write_bytes(b"not a checkpoint")
    for path in (str(tmp_path / "missing.pt"), str(garbage)):
        with pytest.raises(TrialFailed, match="cannot be read") as failed:
            train_trial(TrialRecipe(epochs=1, choices={"distill": 0.5}, teacher_path=path), digits, lambda m, c: reports.append(m))
        assert isinstance(failed.value.__cause__, CheckpointError) and failed.value.trained is None
    assert reports == []


def test_a_teacher_of_another_architecture_is_refused_with_the_reason(digits, untrained_teacher):
    path = untrained_teacher
    with pytest.raises(TrialFailed, match="does not fit this trial's model"):
        train_trial(TrialRecipe(hidden=(32,), epochs=1, choices={"distill": 0.5}, teacher_path=path), digits, lambda m, c: None)


def mean_kl_to(teacher_logits, logits):
    return F.kl_div(F.log_softmax(logits, -1), F.log_softmax(teacher_logits, -1), reduction="batchmean", log_target=True).item()


@pytest.mark.slow
def test_a_student_trained_with_the_teacher_moves_toward_its_outputs(digits, teacher):
    recipe, path = teacher
    exported, _ = rebuild_deployable(recipe, digits, path)
    teacher_logits = exported.eager(digits.x_test)
    distances = {}
    for weight in (0.0, 0.5):
        # another seed than the teacher's: without distillation nothing pulls it to the teacher's outputs
        student = TrialRecipe(
            seed=1, hidden=(64,), epochs=10, choices={"channel_sparsity": 0.5, "distill": weight}, teacher_path=path
        )
        recorder = Last()
        train_trial(student, digits, recorder)
        distances[weight] = mean_kl_to(teacher_logits, recorder.reports[-1][1]["deployable"](digits.x_test))
    assert distances[0.5] < 0.8 * distances[0.0]  # measured: 0.019 against 0.034


def test_a_transformer_student_with_rewritten_attention_reads_a_teacher_with_torchs_fused_attention(digits, tmp_path):
    baseline = TrialRecipe(model_kind="tests.trainers.zoo:transformer")
    model, _, _, _ = build_trial_model(baseline, digits)
    path = str(tmp_path / "trained.pt")
    save_atomically({"epoch": 1, "model": model.state_dict(), "optimizer": {}}, path)
    recipe = dataclasses.replace(baseline, choices={"distill": 0.5, "channel_sparsity": 0.5}, teacher_path=path)
    student, data, configs, notes = build_trial_model(recipe, digits)
    techniques.wrap(student, configs, lambda module: None)
    assert "encoder.layers.0.self_attn" in notes["attention_rewritten"]  # the student's, for pruning heads
    teacher = configs["distill"].teacher.module
    assert isinstance(teacher.encoder.layers[0].self_attn, torch.nn.MultiheadAttention)
    x = data.preprocessed().x_test[:4]
    torch.testing.assert_close(teacher(x), model.eval()(x))
