import pytest
import torch
import torch.ao.nn.quantized.dynamic as dynamic_quantized
from torch import nn
from torch.nn.utils import parametrize

from trainers.deployable import EagerDeployable
from trainers.techniques.common import bake_weight_transforms
from trainers.techniques.quantize import (
    LowPrecisionModel,
    PackedConv2d,
    PackedLinear,
    Quantize,
    apply_fake_quant,
    export_quantized,
)

CPU = torch.device("cpu")


class ConvNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, kernel_size=3, padding=1)
        self.head = nn.Linear(6 * 5 * 5, 7)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).flatten(1))

    @staticmethod
    def example_inputs():
        return torch.randn(4, 3, 5, 5)


class HalfMask(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.register_buffer("mask", (torch.arange(shape.numel()) % 2).reshape(shape).float())

    def forward(self, weight):
        return weight * self.mask


def mlp(width=32, inputs=16, outputs=5):
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(inputs, width), nn.ReLU(), nn.Linear(width, outputs))


def test_config_modes_and_activity():
    assert [Quantize(bits).label() for bits in (2, 4, 8, 16, 32)] == ["q2", "q4", "q8", "q16", ""]
    assert Quantize(8).active and not Quantize().active
    assert Quantize.key == "quant_bits"


@pytest.mark.parametrize("bits", [3, 0, 64, 8.0, True])
def test_config_rejects_unsupported_bits(bits):
    with pytest.raises(ValueError, match=rf"Quantize\.bits .* got {bits!r}"):
        Quantize(bits)


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_fake_quant_weights_have_at_most_2_to_the_bits_levels_per_channel(bits):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(600, 4), nn.Conv2d(3, 4, kernel_size=15))
    notes = apply_fake_quant(model, Quantize(bits))
    assert notes["quant_fake_quant_layers"] == "0,1"
    assert ("quant_activations" in notes) == (bits == 8)  # 8-bit convs run on quantised activations
    for layer in (module for module in model.modules() if isinstance(module, (nn.Linear, nn.Conv2d))):
        assert parametrize.is_parametrized(layer, "weight")
        quantized = layer.weight.detach().flatten(1)
        original = layer.parametrizations.weight.original.detach().flatten(1)
        assert not torch.equal(quantized, original)
        for channel in quantized:
            assert 2 < len(torch.unique(channel)) <= 2**bits - 1


def test_fake_quant_gradient_passes_straight_through_to_the_original_weight():
    layer = nn.Sequential(nn.Linear(8, 3))
    apply_fake_quant(layer, Quantize(2))
    upstream = torch.randn(3, 8)
    (layer[0].weight * upstream).sum().backward()
    assert torch.equal(layer[0].parametrizations.weight.original.grad, upstream)


@pytest.mark.parametrize("bits", [16, 32])
def test_fake_quant_leaves_model_alone_for_16_and_32_bits(bits):
    model = mlp()
    assert apply_fake_quant(model, Quantize(bits)) == {}
    assert not any(parametrize.is_parametrized(module) for module in model.modules())


def test_fake_quant_filter_picks_layers():
    model = mlp()
    notes = apply_fake_quant(model, Quantize(4), filter_fn=lambda name, module: name == "2")
    assert notes == {"quant_fake_quant_layers": "2"}
    assert parametrize.is_parametrized(model[2]) and not parametrize.is_parametrized(model[0])


def test_fake_quant_composes_with_an_existing_mask_parametrization():
    layer = nn.Sequential(nn.Linear(10, 4))
    parametrize.register_parametrization(layer[0], "weight", HalfMask(layer[0].weight.shape))
    apply_fake_quant(layer, Quantize(4))
    mask = layer[0].parametrizations.weight[0].mask
    assert len(layer[0].parametrizations.weight) == 2
    assert torch.all(layer[0].weight[mask == 0] == 0)
    for channel in layer[0].weight.detach():
        assert len(torch.unique(channel)) <= 15
    upstream = torch.randn(4, 10)
    (layer[0].weight * upstream).sum().backward()
    assert torch.equal(layer[0].parametrizations.weight.original.grad, upstream * mask)


@pytest.mark.parametrize("bits", [2, 4])
def test_packed_export_matches_fake_quant_model_on_conv_and_linear(bits):
    torch.manual_seed(0)
    model = ConvNet()
    x = ConvNet.example_inputs()
    apply_fake_quant(model, Quantize(bits))
    with torch.no_grad():
        expected = model.eval()(x)
    deployable, notes = export_quantized(bake_weight_transforms(model), Quantize(bits), CPU)
    assert isinstance(deployable.conv, PackedConv2d) and isinstance(deployable.head, PackedLinear)
    assert deployable.head.packed_weight.dtype == torch.uint8
    bytes_per_row = {2: 38, 4: 75}[bits]  # 150 values, rows padded to whole bytes
    assert deployable.head.packed_weight.shape == (7, bytes_per_row)
    assert not deployable.training
    with torch.no_grad():
        torch.testing.assert_close(deployable(x), expected, rtol=1e-5, atol=1e-6)
    assert notes["quant_kernel"] == (
        f"1 PackedLinear ({bits}-bit weights packed {8 // bits} per byte, unpacked to fp32 in forward); "
        f"1 PackedConv2d ({bits}-bit weights packed {8 // bits} per byte, unpacked to fp32 in forward)"
    )


def test_packed_linear_pads_rows_that_do_not_fill_the_last_byte():
    model = nn.Sequential(nn.Linear(7, 3, bias=False))
    apply_fake_quant(model, Quantize(2))
    expected = model[0].weight.detach().clone()
    deployable, _ = export_quantized(bake_weight_transforms(model), Quantize(2), CPU)
    assert deployable[0].packed_weight.shape == (3, 2)
    assert deployable[0].bias is None
    torch.testing.assert_close(deployable[0].unpacked_weight(), expected, rtol=1e-6, atol=0)


def test_int8_export_on_cpu_uses_dynamic_quantized_linear_with_the_fake_quant_levels():
    model = mlp()
    x = torch.randn(64, 16)
    apply_fake_quant(model, Quantize(8))
    with torch.no_grad():
        expected = model.eval()(x)
    fake_quant_weight = model[0].weight.detach().clone()
    deployable, notes = export_quantized(bake_weight_transforms(model), Quantize(8), CPU)
    assert isinstance(deployable[0], dynamic_quantized.Linear)
    stored = deployable[0].weight()
    assert stored.dtype == torch.qint8 and stored.qscheme() == torch.per_channel_affine
    assert torch.all(stored.q_per_channel_zero_points() == 0)
    torch.testing.assert_close(stored.dequantize(), fake_quant_weight, rtol=1e-6, atol=1e-7)
    with torch.no_grad():
        torch.testing.assert_close(deployable(x), expected, rtol=0.05, atol=0.02)
    assert notes["quant_kernel"].startswith("2 DynamicQuantizedLinear (int8 matmul")


def test_int8_export_on_cpu_keeps_conv_weights_in_int8_with_fp32_compute():
    torch.manual_seed(0)
    model = ConvNet()
    deployable, notes = export_quantized(model, Quantize(8), CPU)
    assert isinstance(deployable.conv, PackedConv2d)
    assert deployable.conv.packed_weight.numel() == 6 * 3 * 3 * 3
    assert "1 PackedConv2d (8-bit weights packed 1 per byte" in notes["quant_kernel"]
    assert deployable(ConvNet.example_inputs()).dtype == torch.float32


def test_bf16_export_on_cpu_casts_in_and_out():
    model = mlp()
    x = torch.randn(8, 16)
    with torch.no_grad():
        expected = model(x)
        deployable, notes = export_quantized(model, Quantize(16), CPU)
        logits = deployable(x)
    assert isinstance(deployable, LowPrecisionModel)
    assert all(parameter.dtype == torch.bfloat16 for parameter in deployable.parameters())
    assert logits.dtype == torch.float32
    torch.testing.assert_close(logits, expected, rtol=0.05, atol=0.05)
    assert "bfloat16" in notes["quant_kernel"]


def test_fp32_export_returns_the_model_unchanged_in_eval_mode():
    model = mlp()
    deployable, notes = export_quantized(model, Quantize(32), CPU)
    assert deployable is model and not deployable.training and notes == {}


def test_export_rejects_a_model_that_still_has_parametrizations():
    model = mlp()
    apply_fake_quant(model, Quantize(4))
    with pytest.raises(ValueError, match="parametrizations"):
        export_quantized(model, Quantize(4), CPU)


def test_stored_size_shrinks_with_bits_and_q4_is_about_an_eighth_of_fp32():
    sizes = {}
    for bits in (32, 8, 4):
        model = mlp(width=256, inputs=256, outputs=256)
        deployable, _ = export_quantized(model, Quantize(bits), CPU)
        sizes[bits] = EagerDeployable(deployable).stored_bytes()
    assert sizes[4] < sizes[8] < sizes[32]
    weights, channels = 2 * 256 * 256, 2 * 256
    q4_payload = weights // 2 + 4 * channels + 4 * channels
    assert q4_payload <= sizes[4] < q4_payload + 4096
    assert sizes[32] >= 4 * (weights + channels)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("bits", [8, 16])
def test_export_on_cuda(bits):
    cuda = torch.device("cuda")
    model = mlp().to(cuda)
    x = torch.randn(32, 16, device=cuda)
    apply_fake_quant(model, Quantize(bits))
    with torch.no_grad():
        expected = model.eval()(x)
    deployable, notes = export_quantized(bake_weight_transforms(model), Quantize(bits), cuda)
    with torch.no_grad():
        logits = deployable(x)
    assert logits.dtype == torch.float32 and logits.device.type == "cuda"
    if bits == 8:
        assert isinstance(deployable[0], PackedLinear) and deployable[0].packed_weight.dtype == torch.uint8
        torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-5)
    else:
        assert "float16" in notes["quant_kernel"]
        torch.testing.assert_close(logits, expected, rtol=0.01, atol=0.01)
