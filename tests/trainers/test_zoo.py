"""Every technique on every architecture of the zoo, through the trial's own code path.

Each cell trains a zoo model for one epoch on a small slice of digits (token ids for the text
classifier), exports it to a runtime and passes `train_trial`'s runtime-agreement check (it raises
`RuntimeDisagreement` otherwise), or is refused before training by `techniques.unsupported`.
Eager cells and the int8 ONNX Runtime cells run by default; the other ONNX Runtime cells and the
compile / AOTInductor ones are slow.
"""

import dataclasses

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from torch import nn

from tests.trainers import zoo
from trainers import techniques
from trainers.data import load_dataset
from trainers.loop import TrialFailed, TrialRecipe, build_trial_model, deploy_to, export_deployable, train_trial
from trainers.runtimes.onnxruntime import OnnxRuntimeDeployable, _export_onnx
from trainers.techniques.quantize import ActivationFakeQuantize, PackedConv2d, quantize_per_channel

ARCHITECTURES = ["resnet", "mobilenet", "transformer", "text_classifier"]
TECHNIQUES = {
    "rank": {"rank": 4},
    "q8": {"quant_bits": 8},
    "q4": {"quant_bits": 4},
    "sparsity": {"sparsity": 0.75},
    "dropout": {"dropout": 0.1},
    "bf16": {"precision": "bf16"},
    "weight_decay": {"weight_decay": 1e-4},
    "l1": {"l1": 1e-5},
    "cp50": {"channel_sparsity": 0.5},
}
# the notes each technique leaves when it reached the layers it is for
EXPECTED_NOTES = {
    "rank": "low_rank_factorised",
    "q8": "quant_fake_quant_layers",
    "q4": "quant_fake_quant_layers",
    "sparsity": "pruned_layers",
    "dropout": "dropout_after",
}
SLOW = pytest.mark.slow


@pytest.fixture(scope="module")
def image_data():
    data = load_dataset("digits")
    return dataclasses.replace(data, x_train=data.x_train[:640], y_train=data.y_train[:640])


@pytest.fixture(scope="module")
def token_data(tmp_path_factory):
    rng = np.random.default_rng(0)
    words = {0: "bad awful poor dull", 1: "good great fine superb"}
    filler = "the a film plot scene story was and it".split()
    lines = []
    for row in range(400):
        label = row % 2
        chosen = list(rng.choice(words[label].split(), 2)) + list(rng.choice(filler, rng.integers(2, 9)))
        lines.append(f"{label}\t{' '.join(rng.permutation(chosen))}")
    path = tmp_path_factory.mktemp("text") / "reviews.tsv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return load_dataset("text", str(path), text_encoding="tokens", text_length=12, text_features=512)


def _data(architecture, image_data, token_data):
    return token_data if architecture == "text_classifier" else image_data


def _recipe(architecture, choices, runtime):
    options = {"vocabulary": 512} if architecture == "text_classifier" else {}
    return TrialRecipe(
        model_kind=f"tests.trainers.zoo:{architecture}", choices=choices, epochs=1, runtime=runtime, model_options=options
    )


def _run_cell(architecture, technique, runtime, data):
    recipe = _recipe(architecture, TECHNIQUES[technique], runtime)
    reports = []
    final = train_trial(recipe, data, lambda metrics, checkpoint: reports.append(metrics))
    notes = reports[-1]["notes"]
    assert notes["runtime"] == runtime, notes.get("runtime_unavailable")
    assert final["runtime_max_abs_diff"] <= recipe.max_abs_diff
    assert 0.0 <= final["test_accuracy"] <= 1.0
    if technique in EXPECTED_NOTES:
        assert notes[EXPECTED_NOTES[technique]] not in ("", "none")
    return notes


def _cells(runtime, fast_techniques):
    return [
        pytest.param(architecture, technique, runtime, marks=() if technique in fast_techniques else SLOW)
        for architecture in ARCHITECTURES
        for technique in TECHNIQUES
    ]


@pytest.mark.parametrize(
    "architecture, technique, runtime", _cells("eager", set(TECHNIQUES)) + _cells("onnxruntime", {"q8"})
)
def test_every_technique_trains_exports_and_agrees(architecture, technique, runtime, image_data, token_data):
    notes = _run_cell(architecture, technique, runtime, _data(architecture, image_data, token_data))
    if architecture == "transformer" and technique in EXPECTED_NOTES:
        # the technique reached attention's projections through the rewrite
        assert "encoder.layers.0.self_attn" in notes["attention_rewritten"].split(",")
        if technique != "dropout":
            assert "encoder.layers.0.self_attn.q_proj" in notes[EXPECTED_NOTES[technique]]
    if architecture == "text_classifier" and technique in ("rank", "q8", "q4", "sparsity"):
        assert notes[f"{next(iter(TECHNIQUES[technique]))}_not_covered"].startswith("embedding (nn.EmbeddingBag)")


@SLOW
@pytest.mark.parametrize(
    "architecture, technique, runtime",
    [("transformer", "q8", "compile"), ("mobilenet", "rank", "compile"), ("resnet", "q8", "compile"),
     ("resnet", "rank", "aotinductor"), ("transformer", "dropout", "aotinductor"), ("text_classifier", "q4", "aotinductor")],
)
def test_compiled_runtimes_agree(architecture, technique, runtime, image_data, token_data):
    _run_cell(architecture, technique, runtime, _data(architecture, image_data, token_data))


def test_a_technique_that_would_change_nothing_is_refused_before_training(image_data):
    reports = []
    recipe = TrialRecipe(model_kind="tests.trainers.test_zoo:embedding_only", choices={"sparsity": 0.5, "rank": 4})
    with pytest.raises(TrialFailed) as refused:
        train_trial(recipe, image_data, lambda metrics, checkpoint: reports.append(metrics))
    assert reports == [] and isinstance(refused.value.__cause__, techniques.UnsupportedTechnique)
    assert refused.value.trained is None  # refused before training: nothing trained, nothing to keep
    assert "sparsity on EmbeddingOnly: no layer it applies to (nn.Linear and nn.Conv2d): sp50 would change nothing" in str(refused.value)
    assert "rank on EmbeddingOnly" in str(refused.value)


def test_the_zoo_runs_every_technique_the_spec_offers():
    refused = {
        (architecture, technique): techniques.unsupported(
            getattr(zoo, architecture)((12,) if architecture == "text_classifier" else (1, 8, 8), 10),
            techniques.techniques_from_choices(choices),
        )
        for architecture in ARCHITECTURES
        for technique, choices in TECHNIQUES.items()
    }
    assert {cell: reasons for cell, reasons in refused.items() if reasons} == {}


class EmbeddingOnly(nn.Module):
    """Pixels read as token ids into an nn.EmbeddingBag: no Linear, no Conv, no activation."""

    def __init__(self, num_classes):
        super().__init__()
        self.embedding = nn.EmbeddingBag(17, num_classes)

    def forward(self, x):
        return self.embedding(x.flatten(1).long())


def embedding_only(num_classes):
    return EmbeddingOnly(num_classes)


def test_resnet_int8_onnx_runs_the_trained_activation_scales_and_folded_weight_levels(image_data):
    recipe = _recipe("resnet", {"quant_bits": 8}, "onnxruntime")
    model, data, configs, _ = build_trial_model(recipe, image_data)
    model.train()(data.preprocessed().x_train[:256])  # the activation quantisers observe, BatchNorm moves
    exported = export_deployable(model, configs, data.preprocess(), data.x_test[:1])
    deployable = deploy_to("onnxruntime", exported, data, torch.device("cpu"))
    graph = onnx.load_from_string(deployable.model_bytes).graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    producers = {output: node for node in graph.node for output in node.output}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert not any(node.op_type == "BatchNormalization" for node in graph.node)  # folded into the convs
    packed = [module for module in exported.eager.module.modules() if isinstance(module, PackedConv2d)]
    quantizers = [module for module in exported.float_model.modules() if isinstance(module, ActivationFakeQuantize)]
    assert len(convs) == len(packed) == 8
    trained_levels = [quantize_per_channel(module.unpacked_weight(), 8)[0].abs().numpy() for module in packed]
    scales = set()
    for conv in convs:
        activation, weight, bias = (producers[name] for name in conv.input)
        assert activation.op_type == weight.op_type == bias.op_type == "DequantizeLinear"
        scales.add(float(initializers[activation.input[1]]))
        stored_levels = np.abs(initializers[weight.input[0]].astype(np.float32))
        # folding BatchNorm multiplies each channel by one factor (negative where gamma is): same |levels|
        assert any(levels.shape == stored_levels.shape and np.array_equal(levels, stored_levels) for levels in trained_levels)
    assert scales <= {np.float32(quantizer.scale) for quantizer in quantizers}
    x = data.x_test[:256]
    reference = exported.eager(x)
    assert (deployable(x) - reference).abs().max() / reference.abs().max() <= recipe.max_abs_diff


def test_activation_quantiser_is_what_onnx_runtime_runs():
    torch.manual_seed(0)
    quantizer = ActivationFakeQuantize()
    for _ in range(3):
        quantizer(torch.randn(64, 8) * 3)  # training mode: the range follows the batches
    model = nn.Sequential(quantizer).eval()
    x = torch.randn(256, 8) * 4  # wider than the observed range: clipped alike
    session = OnnxRuntimeDeployable(_export_onnx(model, x).SerializeToString(), torch.device("cpu"))
    torch.testing.assert_close(session(x), model(x), atol=0.0, rtol=0.0)
    assert len(torch.unique(model(x))) <= 256
    state = quantizer.state_dict()
    restored = ActivationFakeQuantize().eval()
    restored.load_state_dict(state)
    assert (restored.scale, restored.zero_point) == (quantizer.scale, quantizer.zero_point)


def test_activation_quantiser_refuses_to_run_without_a_range():
    with pytest.raises(RuntimeError, match="no training batch"):
        ActivationFakeQuantize().eval()(torch.zeros(2))
