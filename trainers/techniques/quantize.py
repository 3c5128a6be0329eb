"""Weight quantisation: fake quantisation while training, real low-bit kernels for deployment.

Training registers a `FakeQuantize` parametrization on the weight of every nn.Linear and
nn.Conv2d (quantisation-aware training). It composes with other weight parametrizations, such
as a pruning mask, registered on the same weight. At 8 bits, where deployed convolutions run
on quantised activations (ONNX Runtime's QLinearConv), every nn.Conv2d's input and output are
fake-quantised too (`ActivationFakeQuantize`: uint8, per tensor, range observed over the training
batches): its output after the nn.BatchNorm2d that follows it, where there is one, since the
deployed graph folds that BatchNorm into the convolution. The eager deployable keeps those
quantisers and the ONNX graph turns them into QuantizeLinear/DequantizeLinear with the same scale
and zero point, so training, eager and ONNX Runtime quantise activations alike. Every 8-bit
nn.Linear's input is quantised per call at run time (dynamic int8: uint8 per tensor over the
batch's own range), and training simulates that too (`DynamicActivationFakeQuantize`, a forward
pre-hook active in training mode). Folding BatchNorm
into the weights after QAT keeps them on the trained grid: per output channel the fold multiplies
the weight by one factor, and the per-channel symmetric scale absorbs it. After training the lead removes all
parametrizations (keeping the quantised values) and `export_quantized` swaps in the layers that
really run on the device:

- 32 bits: the model unchanged.
- 16 bits: the whole model in bfloat16 on CPU, float16 on CUDA; inputs and logits stay float32.
- 8 bits on CPU: nn.Linear becomes PyTorch's dynamic int8 Linear (int8 weights, int8 matmul, uint8
  activations quantised per call over the full range, as ONNX Runtime does: `DynamicInt8Linear`);
  nn.Conv2d keeps int8 weights and runs in fp32 (PackedConv2d).
- 8 bits on CUDA, 4 and 2 bits anywhere: PackedLinear / PackedConv2d store the weights packed
  into uint8 bytes (1, 2 or 4 values per byte) plus per-channel scales and unpack them in forward.

All bit widths use the same symmetric, per-output-channel scale: max|w| over the channel divided
by qmax = 2^(bits-1) - 1, so exported weights equal the fake-quantised ones.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
import torch.ao.nn.quantized.dynamic as dynamic_quantized
import torch.ao.quantization.fx._decomposed  # noqa: F401  registers torch.ops.quantized_decomposed
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from trainers.techniques import Technique, register

logger = logging.getLogger(__name__)

SUPPORTED_BITS = (2, 4, 8, 16, 32)
FAKE_QUANT_BITS = (2, 4, 8)
ACTIVATION_QUANT_BITS = 8
"""Weight bits at which convolutions' activations are quantised too (static uint8 QLinearConv)."""
ACTIVATION_RANGE_MOMENTUM = 0.1
"""Weight of each training batch in the running min/max of an activation quantiser."""


@dataclass(frozen=True)
class Quantize:
    """Weight quantisation config.

    Args:
        bits: weight bit width, one of 2, 4, 8, 16, 32; 32 means off.

    Example:
        >>> Quantize(4).label()
        'q4'
    """

    key: ClassVar[str] = "quant_bits"
    bits: int = 32

    def __post_init__(self):
        if not isinstance(self.bits, int) or self.bits not in SUPPORTED_BITS:
            raise ValueError(f"Quantize.bits must be one of {SUPPORTED_BITS}, got {self.bits!r}")

    @property
    def active(self) -> bool:
        return self.bits != 32

    def label(self) -> str:
        return f"q{self.bits}" if self.active else ""

    def describe(self) -> str:
        """What the config does, in words; "" when off.

        Example:
            >>> Quantize(8).describe()
            '8-bit quantisation-aware training, deployed with int8 kernels'
        """
        if self.bits == 32:
            return ""
        if self.bits == 16:
            return "16-bit weights (bf16 on CPU, fp16 on GPU)"
        if self.bits == 8:
            return "8-bit quantisation-aware training, deployed with int8 kernels"
        return f"{self.bits}-bit quantisation-aware training, deployed with packed {self.bits}-bit weights"


def quantize_per_channel(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The grid every quantised weight lives on: symmetric integer levels per output channel.

    Args:
        weight: the float weight, output channels first.
        bits: the bit width; levels lie in [-(2^(bits-1) - 1), 2^(bits-1) - 1].

    Returns:
        (levels as floats, of the weight's shape; one scale per output channel = max |w| / qmax).

    Example:
        >>> levels, scale = quantize_per_channel(torch.tensor([[0.5, -1.0]]), 8)
        >>> levels.tolist(), scale.tolist()
        ([[64.0, -127.0]], [0.007874015718698502])
    """
    qmax = 2 ** (bits - 1) - 1
    per_channel = weight.reshape(weight.shape[0], -1)
    scale = (per_channel.abs().amax(dim=1) / qmax).clamp_min(torch.finfo(torch.float32).eps)
    levels = torch.round(per_channel / scale[:, None]).clamp(-qmax, qmax)
    return levels.reshape(weight.shape), scale


def _dequantize_per_channel(levels: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return (levels.reshape(levels.shape[0], -1) * scale[:, None]).reshape(levels.shape)


class FakeQuantize(nn.Module):
    """Weight parametrization that rounds a weight to `bits`-bit per-channel levels.

    Symmetric, per-output-channel (dim 0) scale; the gradient passes straight through the
    rounding to the underlying weight (straight-through estimator).

    Args:
        bits: weight bit width, 2 to 8.

    Example:
        >>> layer = parametrize.register_parametrization(nn.Linear(16, 4), "weight", FakeQuantize(4))
        >>> len(torch.unique(layer.weight[0])) <= 15
        True
    """

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        levels, scale = quantize_per_channel(weight, self.bits)
        quantized = _dequantize_per_channel(levels, scale)
        return weight + (quantized - weight).detach()


class ActivationFakeQuantize(nn.Module):
    """Fake uint8 quantisation of an activation, per tensor, asymmetric, with an observed range.

    In training mode each batch moves a running min and max (momentum `ACTIVATION_RANGE_MOMENTUM`;
    the first batch sets them; the range always holds 0) and the batch is fake-quantised with the
    resulting scale = (max - min) / 255 and zero point = round(-min / scale) (gradients pass
    straight through inside the range). In eval mode the range is frozen and the quantisation is
    `quantized_decomposed` quantize/dequantize ops with constant float32 scale and zero point,
    which torch's ONNX exporter writes as QuantizeLinear/DequantizeLinear: what ONNX Runtime
    runs is what trained.

    Example:
        >>> quantizer = ActivationFakeQuantize()
        >>> _ = quantizer(torch.linspace(-1, 1, 9))  # training mode: observe
        >>> quantizer.eval()(torch.tensor([0.3]))  # eval: the nearest of 256 levels over [-1, 1]
        tensor([0.2980])
    """

    def __init__(self):
        super().__init__()
        self.register_buffer("min_val", torch.zeros(()))
        self.register_buffer("max_val", torch.zeros(()))
        self.register_buffer("observed", torch.zeros((), dtype=torch.bool))
        self.scale, self.zero_point = 1.0, None  # set from the range when it switches to eval mode
        self.register_load_state_dict_post_hook(lambda module, _: module._freeze())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            self._observe(x.detach())
            scale, zero_point = self._qparams()
            return torch.fake_quantize_per_tensor_affine(x, scale, zero_point.int(), 0, 255)
        if self.zero_point is None:
            raise RuntimeError("ActivationFakeQuantize has seen no training batch: its range is unknown")
        quantized = torch.ops.quantized_decomposed.quantize_per_tensor(x, self.scale, self.zero_point, 0, 255, torch.uint8)
        return torch.ops.quantized_decomposed.dequantize_per_tensor(
            quantized, self.scale, self.zero_point, 0, 255, torch.uint8
        ).to(x.dtype)

    def train(self, mode: bool = True) -> "ActivationFakeQuantize":
        super().train(mode)
        if not mode:
            self._freeze()
        return self

    def extra_repr(self) -> str:
        return f"scale={self.scale:.4g}, zero_point={self.zero_point}"

    def _observe(self, x):
        low, high = x.min().clamp_max(0), x.max().clamp_min(0)
        if not self.observed:
            self.min_val.copy_(low)
            self.max_val.copy_(high)
            self.observed.fill_(True)
        else:
            self.min_val.lerp_(low, ACTIVATION_RANGE_MOMENTUM)
            self.max_val.lerp_(high, ACTIVATION_RANGE_MOMENTUM)

    def _qparams(self):
        scale = ((self.max_val - self.min_val) / 255).clamp_min(torch.finfo(torch.float32).eps)
        return scale, torch.round(-self.min_val / scale).clamp(0, 255)

    def _freeze(self):
        if not self.observed:
            return
        scale, zero_point = self._qparams()
        self.scale, self.zero_point = float(np.float32(scale.item())), int(zero_point.item())


class DynamicActivationFakeQuantize:
    """Forward pre-hook that fake-quantises an nn.Linear's input as ONNX Runtime's dynamic int8 MatMul will.

    In training mode each call quantises the input per tensor to uint8 over its own range, as
    ONNX Runtime's DynamicQuantizeLinear (and `DynamicInt8Linear`) do at run time: scale =
    (max(x, 0) - min(x, 0)) / 255, zero point = round(-min / scale), rounding half to even; the
    gradient passes straight through. In eval mode it does nothing, so the float model exported
    to ONNX holds no quantisation of its own (the runtimes quantise those inputs themselves).
    Registered on every 8-bit Linear by `apply_fake_quant`; `lift_activation_quantizers` takes it
    off for torch-pruning's trace.

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> _ = layer.register_forward_pre_hook(DynamicActivationFakeQuantize())
        >>> inputs = torch.linspace(-1, 1, 8).reshape(2, 4)
        >>> bool(torch.equal(layer.eval()(inputs), nn.functional.linear(inputs, layer.weight, layer.bias)))
        True
    """

    def __call__(self, module: nn.Module, inputs: tuple) -> tuple | None:
        if not module.training:
            return None
        x = inputs[0]
        low, high = x.detach().min().clamp_max(0), x.detach().max().clamp_min(0)
        scale = ((high - low) / 255).clamp_min(torch.finfo(torch.float32).eps).float()
        zero_point = torch.round(-low / scale).clamp(0, 255).int()
        return (torch.fake_quantize_per_tensor_affine(x, scale, zero_point, 0, 255), *inputs[1:])


def lift_activation_quantizers(model: nn.Module) -> Callable[[], None]:
    """Take every activation fake quantiser off a model, for code that must not trace them; returns a restore.

    Static quantisers (`ActivationFakeQuantize` modules) become nn.Identity, dynamic ones
    (`DynamicActivationFakeQuantize` hooks) are removed; calling the returned function puts the
    same objects back at the same places (a static quantiser's range is per tensor, so it survives
    a change of channels).

    Args:
        model: the model, changed in place until the restore is called.

    Returns:
        restore(): puts the quantisers back.

    Example:
        >>> model = nn.Sequential(ActivationFakeQuantize(), nn.Linear(4, 2))
        >>> restore = lift_activation_quantizers(model)
        >>> type(model[0]).__name__
        'Identity'
        >>> restore(); type(model[0]).__name__
        'ActivationFakeQuantize'
    """
    static = [(name, module) for name, module in model.named_modules() if isinstance(module, ActivationFakeQuantize)]
    for name, _ in static:
        model.set_submodule(name, nn.Identity())
    dynamic = []
    for module in model.modules():
        for key, hook in list(module._forward_pre_hooks.items()):
            if isinstance(hook, DynamicActivationFakeQuantize):
                del module._forward_pre_hooks[key]
                dynamic.append((module, hook))

    def restore():
        for name, quantizer in static:
            model.set_submodule(name, quantizer)
        for module, hook in dynamic:
            module.register_forward_pre_hook(hook)

    return restore


def _quantizable_layers(
    model: nn.Module, filter_fn: Callable[[str, nn.Module], bool] | None
) -> list[tuple[str, nn.Linear | nn.Conv2d]]:
    return [
        (name, module)
        for name, module in model.named_modules()
        if name
        and isinstance(module, (nn.Linear, nn.Conv2d))
        and (filter_fn is None or filter_fn(name, module))
    ]


def _quantize_conv_activations(model, convs):
    # the BatchNorm2d registered right after a conv, on as many channels, is taken to be the one
    # its output goes through (the conv-BN idiom); if that guess is wrong the eager model and the
    # ONNX graph still quantise at the same places, the graph just fuses less
    modules = list(model.named_modules())
    quantized_outputs = []
    for name, conv in convs:
        index = next(position for position, (_, module) in enumerate(modules) if module is conv)
        following = next(
            ((module_name, module) for module_name, module in modules[index + 1 :] if not module_name.startswith(f"{name}.")),
            None,
        )  # the next module registered after the conv and its own parametrizations
        has_batch_norm = (
            following is not None
            and isinstance(following[1], nn.BatchNorm2d)
            and following[1].num_features == conv.out_channels
        )
        if has_batch_norm:
            model.set_submodule(name, nn.Sequential(ActivationFakeQuantize(), conv))
            model.set_submodule(following[0], nn.Sequential(following[1], ActivationFakeQuantize()))
            quantized_outputs.append(following[0])
        else:
            model.set_submodule(name, nn.Sequential(ActivationFakeQuantize(), conv, ActivationFakeQuantize()))
            quantized_outputs.append(name)
    return quantized_outputs


def apply_fake_quant(
    model: nn.Module,
    cfg: Quantize,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
) -> dict[str, str]:
    """Register FakeQuantize on the weights of a model's layers for quantisation-aware training.

    Only 2, 4 and 8 bits train with fake quantisation; 16 and 32 bits leave the model unchanged
    (16-bit precision is applied at export). At 8 bits every quantised nn.Conv2d is also wrapped
    so that its input and output (after its BatchNorm2d) go through an `ActivationFakeQuantize`,
    and every quantised nn.Linear's input is fake-quantised per call in training
    (`DynamicActivationFakeQuantize`), as the deployed dynamic int8 kernels quantise it.

    Args:
        model: the model, modified in place.
        cfg: the quantisation config.
        filter_fn: optional `filter_fn(module_name, module) -> bool`; only nn.Linear and nn.Conv2d
            layers for which it returns True are quantised. The root module itself never is.
            Pass the same filter to `export_quantized`.

    Returns:
        Notes for MLflow tags: "quant_fake_quant_layers" (the layers whose weights are
        fake-quantised) and, at 8 bits, "quant_activations" (convolutions' activations) and
        "quant_dynamic_activations" (Linear inputs); empty when nothing was registered.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> apply_fake_quant(model, Quantize(4))
        {'quant_fake_quant_layers': '0,2'}
    """
    if cfg.bits not in FAKE_QUANT_BITS:
        return {}
    layers = _quantizable_layers(model, filter_fn)
    for _, module in layers:
        parametrize.register_parametrization(module, "weight", FakeQuantize(cfg.bits))
    names = [name for name, _ in layers]
    logger.info("fake %d-bit quantisation on %s", cfg.bits, names)
    notes = {"quant_fake_quant_layers": ",".join(names)}
    convs = [(name, module) for name, module in layers if isinstance(module, nn.Conv2d)]
    linears = [name for name, module in layers if isinstance(module, nn.Linear)]
    if cfg.bits == ACTIVATION_QUANT_BITS and linears:
        for name in linears:
            model.get_submodule(name).register_forward_pre_hook(DynamicActivationFakeQuantize())
        notes["quant_dynamic_activations"] = (
            f"uint8 per tensor per call, as ONNX Runtime's dynamic int8 MatMul: inputs of {len(linears)} Linear, in training"
        )
    if cfg.bits == ACTIVATION_QUANT_BITS and convs:
        outputs = _quantize_conv_activations(model, convs)
        notes["quant_activations"] = (
            f"uint8 per tensor, ranges observed in training: inputs of {len(convs)} Conv2d, outputs after "
            f"{', '.join(outputs)}"
        )
    return notes


def _pack(levels: torch.Tensor, bits: int) -> torch.Tensor:
    values_per_byte = 8 // bits
    unsigned = (levels.reshape(levels.shape[0], -1) + 2 ** (bits - 1)).to(torch.uint8)
    padding = -unsigned.shape[1] % values_per_byte
    planes = F.pad(unsigned, (0, padding)).reshape(unsigned.shape[0], values_per_byte, -1)
    shifts = torch.arange(0, 8, bits, dtype=torch.uint8, device=levels.device)
    return (planes << shifts[:, None]).sum(dim=1, dtype=torch.uint8)


def _unpack(packed: torch.Tensor, bits: int, values_per_row: int) -> torch.Tensor:
    planes = [(packed >> shift) & (2**bits - 1) for shift in range(0, 8, bits)]
    unsigned = torch.cat(planes, dim=1)[:, :values_per_row]
    return unsigned.to(torch.float32).sub_(2 ** (bits - 1))


class PackedWeight(nn.Module):
    """Base of layers whose weight is stored as `bits`-bit integers packed into uint8 bytes.

    The state_dict holds `packed_weight` (uint8, one row per output channel), `weight_scale`
    (float32, one per output channel) and `bias` (float32 or None). Each channel's values, offset
    by 2^(bits-1) to be unsigned and zero-padded to a multiple of 8 // bits, are split into
    8 // bits equal planes; plane k sits in bits k*bits to (k+1)*bits - 1 of each byte, so
    unpacking is a few whole-row shifts and masks.

    Args:
        weight: the float weight, output channels first.
        bias: the float bias, or None.
        bits: 2, 4 or 8.

    Example:
        >>> layer = PackedLinear(nn.Linear(16, 4), bits=4)
        >>> layer.unpacked_weight().shape
        torch.Size([4, 16])
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, bits: int):
        super().__init__()
        levels, scale = quantize_per_channel(weight.detach().float(), bits)
        self.bits = bits
        self.weight_shape = weight.shape
        self.register_buffer("packed_weight", _pack(levels, bits))
        self.register_buffer("weight_scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())

    def unpacked_weight(self) -> torch.Tensor:
        """Return the float32 weight: unpacked levels times per-channel scales.

        Returns:
            A tensor of the original weight's shape.

        Example:
            >>> PackedLinear(nn.Linear(16, 4), bits=2).unpacked_weight().dtype
            torch.float32
        """
        values_per_row = self.weight_shape[1:].numel()
        levels = _unpack(self.packed_weight, self.bits, values_per_row)
        return levels.mul_(self.weight_scale[:, None]).reshape(self.weight_shape)

    def stored_numels(self) -> list[int]:
        """The logical elements it stores: its packed weight's and its bias's."""
        return [self.weight_shape.numel()] + ([] if self.bias is None else [self.bias.numel()])

    def extra_repr(self) -> str:
        return f"weight_shape={tuple(self.weight_shape)}, bits={self.bits}"


class PackedLinear(PackedWeight):
    """nn.Linear with packed low-bit weights, unpacked to float32 for F.linear in each forward.

    Args:
        linear: the trained float layer.
        bits: 2, 4 or 8.

    Example:
        >>> PackedLinear(nn.Linear(16, 4), bits=4)(torch.randn(2, 16)).shape
        torch.Size([2, 4])
    """

    def __init__(self, linear: nn.Linear, bits: int):
        super().__init__(linear.weight, linear.bias, bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.unpacked_weight(), self.bias)


class PackedConv2d(PackedWeight):
    """nn.Conv2d with packed low-bit weights, unpacked to float32 for F.conv2d in each forward.

    Args:
        conv: the trained float layer; its padding_mode must be "zeros".
        bits: 2, 4 or 8.

    Example:
        >>> PackedConv2d(nn.Conv2d(3, 8, 3), bits=4)(torch.randn(1, 3, 8, 8)).shape
        torch.Size([1, 8, 6, 6])
    """

    def __init__(self, conv: nn.Conv2d, bits: int):
        if conv.padding_mode != "zeros":
            raise ValueError(f"PackedConv2d needs padding_mode 'zeros', got {conv.padding_mode!r}")
        super().__init__(conv.weight, conv.bias, bits)
        self.stride = conv.stride
        self.padding = conv.padding
        self.dilation = conv.dilation
        self.groups = conv.groups

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.unpacked_weight()
        return F.conv2d(x, weight, self.bias, self.stride, self.padding, self.dilation, self.groups)


class LowPrecisionModel(nn.Module):
    """Runs a model in a 16-bit dtype behind a float32 interface (integer inputs, token ids, pass as they are).

    Args:
        model: the float32 model, converted in place to `dtype`.
        dtype: torch.bfloat16 or torch.float16.

    Example:
        >>> model = LowPrecisionModel(nn.Linear(4, 2), torch.bfloat16)
        >>> model(torch.randn(3, 4)).dtype
        torch.float32
    """

    def __init__(self, model: nn.Module, dtype: torch.dtype):
        super().__init__()
        self.model = model.to(dtype)
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x.to(self.dtype) if x.is_floating_point() else x).float()


class DynamicInt8Linear(dynamic_quantized.Linear):
    """PyTorch's dynamic int8 Linear with ONNX Runtime's 8-bit activations, saying what it stores.

    Each call quantises its input per tensor to uint8 over the full 0-255 range (scale =
    (max(x, 0) - min(x, 0)) / 255, zero point = round(-min / scale)), as ONNX Runtime's
    DynamicQuantizeLinear does. PyTorch's own dynamic Linear passes `reduce_range=True` to
    fbgemm: 7-bit activations (0-127), half the resolution of the model ONNX Runtime runs, which
    put the transformer's int8 logits 0.05 of the largest logit away from ONNX Runtime's; with
    the full range one layer's outputs agree with ONNX Runtime's to float rounding. (fbgemm reduces
    the range to avoid int16 saturation in AVX2 kernels without VNNI; ONNX Runtime's U8S8 kernels
    take the same risk on such CPUs.) Its .parameters() is empty, so it says what it stores.

    Example:
        >>> _dynamic_int8_linear(nn.Linear(4, 2)).stored_numels()
        [8, 2]
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.ops.quantized.linear_dynamic(x, self._packed_params._packed_params, reduce_range=False).to(x.dtype)

    def stored_numels(self) -> list[int]:
        """The elements it stores: its int8 weight's and its bias's."""
        bias = self.bias()
        return [self.weight().numel()] + ([] if bias is None else [bias.numel()])


def _dynamic_int8_linear(linear: nn.Linear) -> nn.Module:
    levels, scale = quantize_per_channel(linear.weight.detach().float(), 8)
    zero_points = torch.zeros_like(scale, dtype=torch.long)
    int8_weight = torch.quantize_per_channel(
        _dequantize_per_channel(levels, scale), scale.double(), zero_points, 0, torch.qint8
    )
    quantized = DynamicInt8Linear(
        linear.in_features, linear.out_features, bias_=linear.bias is not None, dtype=torch.qint8
    )
    bias = None if linear.bias is None else linear.bias.detach().float()
    quantized.set_weight_bias(int8_weight, bias)
    return quantized


def _deployable_layer(layer: nn.Linear | nn.Conv2d, bits: int, device: torch.device) -> nn.Module:
    if isinstance(layer, nn.Conv2d):
        return PackedConv2d(layer, bits)
    if bits == 8 and device.type == "cpu":
        return _dynamic_int8_linear(layer)
    return PackedLinear(layer, bits)


def _kernel_note(model: nn.Module, bits: int) -> str:
    packed = f"{bits}-bit weights packed {8 // bits} per byte, unpacked to fp32 in forward"
    engine = torch.backends.quantized.engine
    kernels = (
        ("DynamicQuantizedLinear", dynamic_quantized.Linear, f"int8 matmul, {engine} engine"),
        ("PackedLinear", PackedLinear, packed),
        ("PackedConv2d", PackedConv2d, packed),
    )
    parts = []
    for label, layer_type, description in kernels:
        count = sum(isinstance(module, layer_type) for module in model.modules())
        if count:
            parts.append(f"{count} {label} ({description})")
    return "; ".join(parts)


def export_quantized(
    model: nn.Module,
    cfg: Quantize,
    device: torch.device,
    filter_fn: Callable[[str, nn.Module], bool] | None = None,
) -> tuple[nn.Module, dict[str, str]]:
    """Turn a trained plain model into the deployable quantised model for `device`.

    Args:
        model: the trained model with no parametrizations left (weights already hold the
            fake-quantised values); its layers (never the root module) are replaced in place.
        cfg: the quantisation config.
        device: where the model will run; CPU and CUDA pick different kernels.
        filter_fn: the layer filter passed to `apply_fake_quant`, if any.

    Returns:
        The eval-mode model on `device` (float32 inputs, float32 logits) and notes for MLflow
        tags naming the kernels that run; empty notes for 32 bits.

    Example:
        >>> model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
        >>> deployable, notes = export_quantized(model, Quantize(4), torch.device("cpu"))
        >>> notes["quant_kernel"]
        '2 PackedLinear (4-bit weights packed 2 per byte, unpacked to fp32 in forward)'
    """
    if any(parametrize.is_parametrized(module) for module in model.modules()):
        raise ValueError("export_quantized needs a plain model: remove weight parametrizations first")
    model = model.to(device).eval()
    if cfg.bits == 32:
        return model, {}
    if cfg.bits == 16:
        dtype = torch.bfloat16 if device.type == "cpu" else torch.float16
        notes = {"quant_kernel": f"whole model in {dtype}, float32 inputs and logits"}
        return LowPrecisionModel(model, dtype).eval(), notes

    for name, layer in _quantizable_layers(model, filter_fn):
        model.set_submodule(name, _deployable_layer(layer, cfg.bits, device))
    model = model.to(device).eval()
    notes = {"quant_kernel": _kernel_note(model, cfg.bits)}
    logger.info("exported %d-bit model for %s: %s", cfg.bits, device, notes["quant_kernel"])
    return model, notes


def _refusals(model, cfg):
    if cfg.bits not in FAKE_QUANT_BITS:
        return []
    return [
        f"quant_bits on {name} (nn.Conv2d, padding_mode={module.padding_mode!r}): the {cfg.bits}-bit conv kernels pad with zeros only"
        for name, module in model.named_modules()
        if isinstance(module, nn.Conv2d) and module.padding_mode != "zeros"
    ]


def _export(model, cfg, context):
    if not cfg.active:
        return model
    model, notes = export_quantized(model, cfg, context.device)
    context.fmt.weight_bits = cfg.bits
    context.notes |= notes
    return model


TECHNIQUE = register(
    Technique(
        config=Quantize,
        position=20,
        after=("rank", "sparsity"),  # fake quantisation acts on the masked, factorised weight
        needs_explicit_attention=True,
        applies_to=lambda module: isinstance(module, (nn.Linear, nn.Conv2d)),
        covers="nn.Linear and nn.Conv2d",
        refusals=_refusals,
        build=apply_fake_quant,
        export=_export,
    )
)
