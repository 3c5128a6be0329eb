"""Structured pruning: real channels removed on the zoo's architectures, trained, exported, resumed."""

import copy
import dataclasses

import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from tests.trainers.zoo import ZOO
from trainers.attention import Attention
from trainers.checkpoints import load_trained, save_atomically
from trainers.data import load_dataset
from trainers.loop import (
    TrialFailed,
    TrialRecipe,
    build_trial_model,
    deploy_to,
    rebuild_deployable,
    runtime_difference,
    train_trial,
)
from trainers.models import build_model
from trainers.techniques import build, reshape, techniques_from_choices
from trainers.techniques.channel_prune import ChannelPrune, apply_channel_pruning, pruning_epoch
from trainers.techniques.quantize import ActivationFakeQuantize, DynamicActivationFakeQuantize

SHAPE, CLASSES = (1, 8, 8), 10
ZOO_KINDS = {name: f"tests.trainers.zoo:{name}" for name in ZOO}


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def parameter_count(model):
    return sum(parameter.numel() for parameter in model.parameters())


def model_of(kind):
    torch.manual_seed(0)
    if kind in ("mlp", "cnn"):
        return build_model(kind, SHAPE, CLASSES, hidden=(32, 16), channels=(8, 16))
    return ZOO[kind](SHAPE, CLASSES)


def layers(model):
    return [module for module in model.modules() if isinstance(module, (nn.Linear, nn.Conv2d))]


def pruned(kind, sparsity=0.5):
    model = model_of(kind)
    before = parameter_count(model)
    apply_channel_pruning(model, ChannelPrune(sparsity), torch.randn(4, *SHAPE))
    return model, before


def test_the_config_checks_its_value_says_its_mode_and_what_it_does():
    assert ChannelPrune(0.5).label() == "cp50" and ChannelPrune(0.125).label() == "cp12.5"
    assert ChannelPrune().label() == "" and not ChannelPrune().active
    assert ChannelPrune(0.5).describe() == "structured pruning: 50% of channels, neurons and heads removed"
    with pytest.raises(ValueError, match="ChannelPrune.channel_sparsity"):
        ChannelPrune(0.95)


def test_pruning_happens_halfway_from_scratch_and_at_once_from_trained_weights():
    assert [pruning_epoch(epochs) for epochs in (1, 2, 5, 6)] == [0, 1, 2, 3]
    assert [pruning_epoch(epochs, starts_from_trained=True) for epochs in (1, 2, 5, 6)] == [0, 0, 0, 0]


@pytest.mark.parametrize("kind", ["mlp", "cnn", *ZOO])
def test_pruned_models_are_smaller_and_keep_their_input_and_output(kind):
    model, before = pruned(kind)
    first, last = layers(model)[0], layers(model)[-1]
    reference = layers(model_of(kind))
    assert parameter_count(model) < 0.6 * before
    assert first.weight.shape[1] == reference[0].weight.shape[1]  # the model's input is untouched
    assert last.weight.shape[0] == CLASSES  # so is the classifier's output
    assert model(torch.randn(3, *SHAPE)).shape == (3, CLASSES)


def test_a_resnets_residual_groups_shrink_together():
    model, _ = pruned("resnet")
    # a residual add ties the block's output conv, its projection and the next block's output
    assert model.layer2.conv2.out_channels == model.layer2.shortcut[0].out_channels == model.layer3.conv2.out_channels == 16
    assert model.layer2.bn2.num_features == model.layer2.shortcut[1].num_features == 16
    assert model.layer1.conv1.out_channels == model.layer1.bn1.num_features == model.layer1.conv2.in_channels == 8
    assert model.stem[0].out_channels == model.layer1.conv2.out_channels == 8  # layer1's identity shortcut
    assert model.fc.in_features == 16 and model.fc.out_features == CLASSES


def test_a_mobilenets_depthwise_convs_follow_the_channels_feeding_them():
    model, _ = pruned("mobilenet")
    for block in model.features[3:]:
        depthwise = block.depthwise
        assert depthwise.groups == depthwise.in_channels == depthwise.out_channels == block.bn1.num_features
    assert model.features[3].depthwise.in_channels == model.features[0].out_channels == 8


def test_a_transformer_loses_half_its_heads_and_its_stream_shrinks_with_its_positional_parameter():
    model = model_of("transformer")
    notes = build(model, techniques_from_choices({"channel_sparsity": 0.5}))
    assert "encoder.layers.0.self_attn" in notes["attention_rewritten"]  # explicit q/k/v/out projections
    apply_channel_pruning(model, ChannelPrune(0.5), torch.randn(4, *SHAPE))
    layer = model.encoder.layers[0]
    attention = layer.self_attn
    assert (attention.num_heads, attention.head_dim) == (2, 8)  # 4 heads of 8 -> 2 heads of 8
    assert attention.q_proj.out_features == attention.k_proj.out_features == attention.v_proj.out_features == 16
    assert attention.out_proj.in_features == 16
    assert model.embed.out_features == model.position.shape[-1] == attention.q_proj.in_features == 16
    assert layer.linear1.out_features == 32 and model.norm.normalized_shape == (16,)
    assert model(torch.randn(3, *SHAPE)).shape == (3, CLASSES)


class SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = Attention(nn.MultiheadAttention(16, 4, batch_first=True))

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


def test_the_heads_removed_are_the_weakest_and_q_k_v_out_lose_the_same_ones():
    torch.manual_seed(0)
    model = SelfAttention().eval()
    attention = model.attention
    with torch.no_grad():  # heads 0 and 2 (features 0-3 and 8-11) contribute nothing
        for head in (0, 2):
            rows = slice(4 * head, 4 * head + 4)
            for projection in (attention.q_proj, attention.k_proj, attention.v_proj):
                projection.weight[rows] = 0
                projection.bias[rows] = 0
            attention.out_proj.weight[:, rows] = 0
    x = torch.randn(2, 5, 16)
    expected = model(x)
    apply_channel_pruning(model, ChannelPrune(0.5), x)
    assert (attention.num_heads, attention.q_proj.out_features) == (2, 8)
    assert attention.q_proj.in_features == attention.out_proj.out_features == 16  # the model's input and output
    torch.testing.assert_close(model(x), expected)  # heads 1 and 3 kept, whole, in q, k, v and out


def test_the_kept_channels_are_the_largest():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[0].weight.copy_(torch.diag(torch.tensor([1.0, 5.0, 0.1, 3.0])))
        model[0].bias.zero_()
        model[2].weight.copy_(torch.tensor([[1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 4.0]]) / 10)
    apply_channel_pruning(model, ChannelPrune(0.5), torch.randn(2, 4))
    # neurons 1 and 3 have the largest weights: they stay, with the next layer's columns 1 and 3
    assert torch.equal(model[0].weight, torch.tensor([[0.0, 5.0, 0.0, 0.0], [0.0, 0.0, 0.0, 3.0]]))
    assert torch.equal(model[2].weight, torch.tensor([[2.0, 4.0], [2.0, 4.0]]) / 10)


def test_fake_quantisation_is_put_back_after_pruning_and_a_pruning_mask_is_refused():
    model = model_of("cnn")
    configs = techniques_from_choices({"quant_bits": 4, "channel_sparsity": 0.5})
    build(model, configs)
    apply_channel_pruning(model, configs["channel_sparsity"], torch.randn(4, *SHAPE))
    weight = layers(model)[1].weight
    assert weight.shape[0] == 8 and len(torch.unique(weight[0])) <= 15  # smaller, still on the 4-bit grid
    masked = model_of("cnn")
    with pytest.raises(ValueError, match="channel_sparsity cannot compose with WeightMask"):
        build(masked, techniques_from_choices({"sparsity": 0.5, "channel_sparsity": 0.5}))


def test_eight_bit_activation_quantisers_are_lifted_for_the_cut_and_put_back(digits):
    model = model_of("resnet")
    configs = techniques_from_choices({"quant_bits": 8, "channel_sparsity": 0.5})
    build(model, configs)
    x = digits.x_train[:64].reshape(-1, *SHAPE)
    model.train()(x)  # the activation quantisers observe a range
    static = [module for module in model.modules() if isinstance(module, ActivationFakeQuantize)]
    ranges = [(float(module.min_val), float(module.max_val)) for module in static]
    apply_channel_pruning(model, configs["channel_sparsity"], x)
    assert model.layer1.conv1[1].out_channels == 8  # channels really removed
    kept = [module for module in model.modules() if isinstance(module, ActivationFakeQuantize)]
    assert kept == static  # the same quantisers, at the same places
    assert [(float(module.min_val), float(module.max_val)) for module in kept] == ranges  # not moved by the trace
    hooks = [hook for module in model.modules() for hook in module._forward_pre_hooks.values()]
    assert sum(isinstance(hook, DynamicActivationFakeQuantize) for hook in hooks) == 1  # on fc, put back
    assert len(torch.unique(model.layer1.conv1[1].weight[0])) <= 255  # still on the 8-bit grid
    model.train()(x)  # the smaller model trains with its quantisers


@pytest.mark.slow
@pytest.mark.parametrize("kind, quantised_convs", [("resnet", 8), ("transformer", 0)])
def test_a_pruned_int8_trial_runs_in_onnx_runtime(digits, kind, quantised_convs):
    recipe = TrialRecipe(
        model_kind=ZOO_KINDS[kind], epochs=2, choices={"quant_bits": 8, "channel_sparsity": 0.5}, runtime="onnxruntime"
    )
    recorder = Checkpoints()
    final = train_trial(recipe, digits, recorder)
    notes = recorder.reports[-1][0]["notes"]
    assert notes["mode"] == "q8-cp50" and f"{quantised_convs} Conv static QDQ" in notes["onnx_weights"]
    assert final["parameters_after_pruning"] < final["parameters_before_pruning"]
    assert final["runtime_max_abs_diff"] <= recipe.max_abs_diff


def onnx_weights(deployable):
    graph = onnx.load_from_string(deployable.model_bytes).graph
    return sum(numpy_helper.to_array(tensor).size for tensor in graph.initializer)


class Checkpoints:
    """Keeps every report, with a copy of its training state (the loop's state_dict tensors live on)."""

    def __init__(self):
        self.reports = []

    def __call__(self, metrics, checkpoint):
        kept = None if checkpoint is None else checkpoint | {"trained": copy.deepcopy(checkpoint["trained"])}
        self.reports.append((metrics, kept))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resnet", "mobilenet", "transformer"])
def test_a_pruned_trial_trains_exports_smaller_and_onnx_runtime_agrees(digits, kind, tmp_path):
    graphs = {}
    for choices in ({}, {"channel_sparsity": 0.5}):
        recipe = TrialRecipe(model_kind=ZOO_KINDS[kind], epochs=2, choices=choices, runtime="onnxruntime")
        recorder = Checkpoints()
        final = train_trial(recipe, digits, recorder)
        graphs[bool(choices)] = onnx_weights(recorder.reports[-1][1]["deployable"])
        assert final["runtime_max_abs_diff"] < 1e-4
    assert final["test_accuracy"] > 0.3  # pruned at epoch 1, fine-tuned for one epoch: well above chance
    assert recorder.reports[-1][0]["notes"]["mode"] == "cp50"
    assert graphs[True] < 0.6 * graphs[False]  # the ONNX graph holds the smaller shapes


@pytest.mark.slow
def test_a_shrunk_trial_resumes_and_rebuilds_with_the_pruned_shapes(digits, tmp_path):
    recipe = TrialRecipe(model_kind=ZOO_KINDS["resnet"], epochs=4, choices={"channel_sparsity": 0.5}, runtime="onnxruntime")
    first = Checkpoints()
    train_trial(recipe, digits, first)
    states = [checkpoint["trained"] for _, checkpoint in first.reports[:-1]]
    # pruned at the start of epoch 3 (index 2): the checkpoints after epochs 1 and 2 are dense
    assert [state["model"]["fc.weight"].shape[1] for state in states] == [32, 32, 16]
    assert first.reports[2][0]["parameters_after_pruning"] < first.reports[2][0]["parameters_before_pruning"]
    # the fine-tuning epoch moved the pruned weights: the new optimizer holds the new parameters
    assert not torch.equal(first.reports[-1][1]["trained"]["model"]["fc.weight"], states[2]["model"]["fc.weight"])

    for state in (states[0], states[2]):  # before and after the shrink
        resumed = Checkpoints()
        final = train_trial(recipe, digits, resumed, resume=state)
        assert [metrics["epoch"] for metrics, _ in resumed.reports] == list(range(state["epoch"] + 1, 5))
        assert resumed.reports[-1][1]["trained"]["model"]["fc.weight"].shape == (10, 16)
        assert final["test_accuracy"] > 0.5

    trained_path = str(tmp_path / "trained.pt")
    save_atomically(first.reports[-1][1]["trained"], trained_path)
    exported, data = rebuild_deployable(recipe, digits, trained_path)
    rebuilt = deploy_to("onnxruntime", exported, data, torch.device("cpu"))
    shipped = first.reports[-1][1]["deployable"]
    assert runtime_difference(rebuilt, shipped, digits.x_test) < 1e-5
    assert runtime_difference(rebuilt, exported.eager, digits.x_test) < 1e-4


def test_a_trial_started_from_trained_weights_is_pruned_at_once_and_resumes_and_rebuilds_without_them(
    digits, baseline_mlp, tmp_path
):
    baseline, path = baseline_mlp
    trained = load_trained(path)["model"]["1.weight"]
    recipe = dataclasses.replace(
        baseline, epochs=3, choices={"channel_sparsity": 0.5}, start_from="baseline", start_weights_path=path
    )
    model, _, configs, _ = build_trial_model(recipe, digits)
    metrics = reshape(model, configs, 0, recipe.epochs, digits.preprocessed().x_train[:64])
    assert metrics["parameters_after_pruning"] < metrics["parameters_before_pruning"]  # before the first epoch
    kept = model[1].weight
    assert kept.shape == (32, 64)
    assert all(any(torch.equal(row, trained_row) for trained_row in trained) for row in kept)  # the trained weights, cut

    first = Checkpoints()
    train_trial(recipe, digits, first)
    assert "parameters_after_pruning" in first.reports[0][0]  # pruned in epoch 1, then 3 epochs of fine-tuning
    after_epoch_one = first.reports[0][1]["trained"]
    assert after_epoch_one["model"]["1.weight"].shape == (32, 64)
    without_start_weights = dataclasses.replace(recipe, start_weights_path=None)  # the checkpoints are enough
    resumed = Checkpoints()
    train_trial(without_start_weights, digits, resumed, resume=after_epoch_one)
    assert [metrics["epoch"] for metrics, _ in resumed.reports] == [2, 3]
    trained_path = str(tmp_path / "trained.pt")
    save_atomically(first.reports[-1][1]["trained"], trained_path)
    exported, data = rebuild_deployable(without_start_weights, digits, trained_path)
    assert runtime_difference(exported.eager, first.reports[-1][1]["deployable"], digits.x_test) < 1e-6


@pytest.mark.slow
@pytest.mark.parametrize("choices", [{"rank": 0.5}, {"quant_bits": 4}, {"dropout": 0.1, "l1": 1e-5}])
def test_channel_pruning_composes_with_other_techniques(digits, choices):
    recipe = TrialRecipe(model_kind="cnn", epochs=2, choices=choices | {"channel_sparsity": 0.5}, runtime="onnxruntime")
    recorder = Checkpoints()
    final = train_trial(recipe, digits, recorder)  # pruned at the start of its last epoch
    assert final["parameters_after_pruning"] < 0.6 * final["parameters_before_pruning"]
    assert final["runtime_max_abs_diff"] < recipe.max_abs_diff and final["test_accuracy"] > 0.3


def test_a_pruning_mask_is_refused_before_training(digits):
    reports = []
    with pytest.raises(TrialFailed, match="sweep channel_sparsity and sparsity in separate trials"):
        train_trial(TrialRecipe(epochs=1, choices={"sparsity": 0.5, "channel_sparsity": 0.5}), digits, lambda m, c: reports.append(m))
    assert reports == []


def test_a_model_without_linear_or_conv_layers_is_refused_before_training(digits):
    recipe = TrialRecipe(model_kind="tests.trainers.test_zoo:embedding_only", choices={"channel_sparsity": 0.5})
    with pytest.raises(TrialFailed, match="channel_sparsity on EmbeddingOnly: no nn.Linear or nn.Conv2d layer"):
        train_trial(recipe, digits, lambda m, c: pytest.fail("a refused trial reported"))
