"""The ONNX Runtime runtime: the trained model exported to ONNX, its weights stored as the techniques ask.

Export uses torch's dynamo exporter (`torch.onnx.export(..., dynamo=True)`; the TorchScript one
is deprecated in torch 2.13) with a dynamic batch dimension. Both exporters emit `Gemm` for a
Linear layer; ONNX Runtime's weight-only quantizer handles `MatMul` only, so every `Gemm` with a
constant weight is rewritten as `MatMul` (weight pre-transposed) + `Add`. Then, by weight bits:

- 32: the fp32 graph.
- 16: fp16 weights and compute (inputs and logits stay float32) on the CUDA execution provider
  only; on CPU, `RuntimeUnavailable`: the CPU provider has no fp16 MatMul/Conv kernels on this
  x86 machine, and its optimizer turns an fp16 graph back into fp32 `FusedGemm` nodes at load
  (checked with onnxruntime 1.32), so it would time an fp32 model under a 16-bit label.
- 8: every `MatMul` dynamically quantised (int8 weights, per output channel, symmetric: scale =
  max|w| / 127, the grid QAT trained; activations quantised per call), every `Conv` statically
  quantised in QDQ form: int8 per-channel symmetric weights (BatchNorm folded in by the exporter,
  which keeps the trained levels), int32 bias, and the uint8 QuantizeLinear/DequantizeLinear
  pairs of QAT's own activation quantisers (`ActivationFakeQuantize`, exported as they ran), so
  ONNX Runtime fuses QLinearConv with the scales training used. (Calibrating the activations
  afterwards with MinMax instead, on 256 training rows, put the ResNet's logits 0.03-0.11 of the
  largest logit away from the trained model's, further with more rows; see `test_zoo.py`.)
- 4 and 2: every `MatMul` becomes `com.microsoft.MatMulNBits` (weights packed blockwise along the
  input dimension), built here from the QAT grid so that the stored levels and scales are exactly
  the trained ones (ONNX Runtime's own quantizer would re-quantise with another scale). On CPU it
  runs with `accuracy_level=4`: activations are quantised to int8 per block inside the kernel, as
  in dynamic int8. ONNX Runtime has no low-bit Conv kernel, so `Conv` weights are stored as int4
  levels (2-bit levels fit int4 too) with the trained per-channel scales, dequantised by a
  `DequantizeLinear` node in front of an fp32 `Conv`; the session folds it once at load
  (`session.disable_quant_qdq=1`, in `OnnxRuntimeDeployable.session_options`), so the Conv runs
  as fast as in fp32.
- sparse: any initializer with enough zeros is stored as an ONNX sparse initializer (values +
  int64 indices) when that is smaller. ONNX Runtime densifies sparse initializers when it loads
  the model, so latency is that of the dense kernels: only the stored bytes shrink.
"""

import contextlib
import copy
import functools
import logging
import math
import os
import tempfile
import warnings
from collections.abc import Callable

import numpy as np
import onnx
import onnxruntime
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph
from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NoKernel
from onnxruntime.quantization import QuantType, quantize_dynamic

from trainers.deployable import Deployable
from trainers.runtimes import ExportInputs, RuntimeUnavailable, first_line, register
from trainers.techniques.quantize import quantize_per_channel

logger = logging.getLogger(__name__)

FILE = "model.onnx"
OPSET = 21  # the first with int4 DequantizeLinear
WEIGHT_ONLY_BLOCK_SIZES = (16, 32, 64, 128, 256)
# MatMulNBits computes with int8-quantised activations on CPU (1.6x faster than fp32 compute for
# the Fashion MLP at batch 1 here); a CPU setting.
WEIGHT_ONLY_ACCURACY_LEVEL = 4
# Lets constant folding dequantise the int4 Conv weights once at load (ONNX Runtime keeps
# DequantizeLinear for QDQ fusion otherwise, and runs it on every call: 2x slower on the CNN here).
# Only for 4/2-bit graphs, which have no activation QDQ for it to disable.
FOLD_DEQUANTIZED_WEIGHTS = {"session.disable_quant_qdq": "1"}
# Inputs of each op that hold weights or biases (not quantisation scales, zero points or shapes).
_PARAMETER_INPUTS = {
    "MatMul": (1,),
    "Gemm": (1, 2),
    "Conv": (1, 2),
    "Add": (0, 1),
    "MatMulNBits": (1,),
    "DequantizeLinear": (0,),
    "DynamicQuantizeMatMul": (1, 4),
    "MatMulInteger": (1,),
}


class OnnxRuntimeDeployable(Deployable):
    """A serialized ONNX model and the ONNX Runtime session that runs it.

    The session uses `threads` intra-op threads, one inter-op thread and sequential execution,
    on the CPU execution provider, or the CUDA one when `device` is CUDA. Called, inputs and logits
    are torch tensors that cross to numpy and back; `native_call` (what latency times) is
    `session.run` on numpy. `session_options` holds these
    settings in the form `mlflow.onnx.log_model(onnx_session_options=...)` takes, so a logged model
    loads with the session that was measured.

    Args:
        model_bytes: the serialized ONNX model (the stored artifact).
        device: where the session runs; logits come back on this device.
        threads: intra-op threads.
        notes: what the export decided, for the trial's tags.
        session_config: extra session config entries (`SessionOptions.add_session_config_entry`).

    Example:
        >>> from trainers.deployable import DeployFormat, EagerDeployable
        >>> model, x = torch.nn.Linear(8, 10).eval(), torch.randn(256, 8)
        >>> inputs = ExportInputs(model, EagerDeployable(model), DeployFormat(8), x[:4], x, torch.device("cpu"))
        >>> deployable = export_onnxruntime(inputs)
        >>> deployable(inputs.example).shape, deployable.stored_bytes() == len(deployable.model_bytes)
        (torch.Size([4, 10]), True)
    """

    runtime = "onnxruntime"
    mlflow_flavor = "onnx"

    def __init__(
        self,
        model_bytes: bytes,
        device: torch.device,
        threads: int = 1,
        notes: dict[str, str] | None = None,
        session_config: dict[str, str] | None = None,
    ):
        self.model_bytes = model_bytes
        self.device = device
        self.notes = notes or {}
        self.session_options = {
            "intra_op_num_threads": threads,
            "inter_op_num_threads": 1,
            "execution_mode": "sequential",
            "extra_session_config": dict(session_config or {}),
        }
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        for key, value in self.session_options["extra_session_config"].items():
            options.add_session_config_entry(key, value)
        self.session = onnxruntime.InferenceSession(model_bytes, options, providers=[_provider(device)])
        self.input_name = self.session.get_inputs()[0].name

    def __call__(self, inputs: torch.Tensor) -> torch.Tensor:
        array = _as_input(inputs).numpy()
        logits = self.session.run(None, {self.input_name: array})[0]
        return torch.from_numpy(logits).to(inputs.device)

    def native_call(self, inputs: torch.Tensor) -> Callable[[], object]:
        """`session.run` on a numpy array made once: what a user of the `.onnx` file calls (the torch
        to numpy to torch crossing of `__call__` costs ~4-5 us a call here, not ONNX Runtime's).

        Example:
            >>> deployable = export_onnxruntime(inputs)  # doctest: +SKIP
            >>> deployable.native_call(inputs.example)()[0].shape  # doctest: +SKIP
            (4, 10)
        """
        return functools.partial(self.session.run, None, {self.input_name: _as_input(inputs).numpy()})

    def stored_bytes(self) -> int:
        return len(self.model_bytes)

    def parameter_count(self) -> int:
        graph = onnx.load_from_string(self.model_bytes).graph
        counts = {tensor.name: math.prod(tensor.dims) for tensor in graph.initializer}
        counts |= {sparse.values.name: math.prod(sparse.values.dims) for sparse in graph.sparse_initializer}
        names = set()
        for node in graph.node:
            for index in _PARAMETER_INPUTS.get(node.op_type, ()):
                if index < len(node.input) and node.input[index] in counts:
                    names.add(node.input[index])
                    if node.op_type == "MatMulNBits":  # packed: count the logical K x N weights
                        attributes = {attribute.name: attribute.i for attribute in node.attribute}
                        counts[node.input[index]] = attributes["K"] * attributes["N"]
        return sum(counts[name] for name in names)

    def save(self, directory: str) -> str:
        path = os.path.join(directory, FILE)
        with open(path, "wb") as file:
            file.write(self.model_bytes)
        return path


@register("onnxruntime", packages=("onnxruntime", "onnx"))
def export_onnxruntime(inputs: ExportInputs) -> OnnxRuntimeDeployable:
    """Export the trained model to ONNX, store its weights as `inputs.fmt` asks, and open a session.

    Args:
        inputs: the trained float model (weights on the QAT grid), its format, example rows,
            calibration rows, device and threads.

    Returns:
        The ONNX Runtime deployable; `notes` says what was quantised and how it is stored.

    Raises:
        RuntimeUnavailable: 16 bits on CPU; a CUDA device without ONNX Runtime's CUDA provider;
            an unsupported bit width; a graph this ONNX Runtime build has no kernel for.

    Example:
        >>> from trainers.deployable import DeployFormat, EagerDeployable
        >>> model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 10)).eval()
        >>> x = torch.randn(256, 8)
        >>> inputs = ExportInputs(model, EagerDeployable(model), DeployFormat(8), x[:4], x, torch.device("cpu"))
        >>> export_onnxruntime(inputs).notes
        {'onnx_weights': 'int8: 2 MatMul dynamic (per-channel symmetric), 0 Conv static QDQ'}
    """
    bits = inputs.fmt.weight_bits
    _refuse_unrunnable(bits, inputs.device)  # before the export's seconds
    model = _matmuls_not_gemms(_export_onnx(inputs.model, inputs.batch_example()))
    if bits == 8:
        model, note = _quantize_int8(model)
    elif bits in (4, 2):
        model, note = _quantize_weight_only(model, bits)
    elif bits == 16:
        model, note = _to_fp16(model)
    elif bits == 32:
        note = "fp32"
    else:
        raise RuntimeUnavailable(f"onnxruntime: no export for {bits}-bit weights (valid: 32, 16, 8, 4, 2)")
    notes = {"onnx_weights": note}
    if inputs.fmt.sparse:
        model, notes["onnx_sparse"] = _sparse_initializers(model)
    logger.info("ONNX export: %s", notes)
    try:
        return open_onnxruntime(model.SerializeToString(), bits, inputs.device, inputs.threads, notes)
    except (NoKernel, Fail, InvalidGraph) as error:  # e.g. no MatMulNBits kernel for these bits in this build
        raise RuntimeUnavailable(
            f"onnxruntime {onnxruntime.__version__} cannot run the {note} graph: {first_line(error)}"
        ) from error


def open_onnxruntime(
    model_bytes: bytes, weight_bits: int, device: torch.device, threads: int = 1, notes: dict[str, str] | None = None
) -> OnnxRuntimeDeployable:
    """Open an ONNX model this runtime exported (a trial's logged `model.onnx`) with the session
    settings its export chose for its weight bits, without exporting again.

    Args:
        model_bytes: the serialized model.
        weight_bits: the bits its weights were stored with (`DeployFormat.weight_bits`).
        device: where the session runs.
        threads: intra-op threads.
        notes: what the export decided, for the trial's tags.

    Raises:
        RuntimeUnavailable: as `export_onnxruntime` (16 bits on CPU, no CUDA provider).

    Example:
        >>> from trainers.deployable import DeployFormat, EagerDeployable
        >>> model, x = torch.nn.Linear(8, 10).eval(), torch.randn(256, 8)
        >>> exported = export_onnxruntime(ExportInputs(model, EagerDeployable(model), DeployFormat(4), x[:4], x, torch.device("cpu")))
        >>> opened = open_onnxruntime(exported.model_bytes, 4, torch.device("cpu"))
        >>> opened.session_options == exported.session_options, torch.equal(opened(x[:4]), exported(x[:4]))
        (True, True)
    """
    _refuse_unrunnable(weight_bits, device)
    session_config = FOLD_DEQUANTIZED_WEIGHTS if weight_bits in (4, 2) else {}
    return OnnxRuntimeDeployable(model_bytes, device, threads, notes, session_config)


def _refuse_unrunnable(bits, device):
    _provider(device)  # a CUDA device without the CUDA provider
    if bits == 16 and device.type != "cuda":
        raise RuntimeUnavailable(
            "onnxruntime: 16-bit weights run on the CUDA execution provider only; the CPU provider has no fp16 "
            "MatMul/Conv kernels here: it casts the weights back to fp32 at load and runs fp32"
        )


def _provider(device):
    if device.type != "cuda":
        return "CPUExecutionProvider"
    if "CUDAExecutionProvider" not in onnxruntime.get_available_providers():
        raise RuntimeUnavailable(
            f"onnxruntime {onnxruntime.__version__} has no CUDAExecutionProvider (install onnxruntime-gpu); "
            f"available: {onnxruntime.get_available_providers()}"
        )
    return "CUDAExecutionProvider"


def _as_input(rows):
    # float rows go in as float32; integer rows (token ids) keep their dtype
    rows = rows.detach().cpu()
    return rows.float() if rows.is_floating_point() else rows


def _export_onnx(model, example):
    model = copy.deepcopy(model).cpu().eval()
    example = _as_input(example)
    batch = torch.export.Dim("batch")
    with _quiet_exporter():
        program = torch.onnx.export(
            model, (example,), dynamo=True, dynamic_shapes=({0: batch},), opset_version=OPSET, verbose=False
        )
    model_proto = program.model_proto
    for node in model_proto.graph.node:  # the exporter's stack traces: kilobytes a node, nothing ONNX Runtime reads
        node.ClearField("metadata_props")
        node.ClearField("doc_string")
    return model_proto


@contextlib.contextmanager
def _quiet_exporter():
    # the exporter and its optimizer log and warn about every model (missing torchvision ops, "no
    # unused functions to remove", pytree deprecations): none of it is about the user's model
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [each.level for each in loggers]
    for each in loggers:
        each.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for each, level in zip(loggers, levels):
            each.setLevel(level)


def _matmuls_not_gemms(model):
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes = []
    for node in graph.node:
        attributes = {attribute.name: helper.get_attribute_value(attribute) for attribute in node.attribute}
        scaled = attributes.get("alpha", 1.0) != 1.0 or attributes.get("beta", 1.0) != 1.0
        plain = not scaled and not attributes.get("transA", 0)
        if node.op_type != "Gemm" or node.input[1] not in initializers or not plain:
            nodes.append(node)
            continue
        weight = numpy_helper.to_array(initializers[node.input[1]])
        if attributes.get("transB", 0):
            weight = weight.T
        weight_name = f"{node.input[1]}_matmul"
        graph.initializer.append(numpy_helper.from_array(np.ascontiguousarray(weight), weight_name))
        product = node.output[0] if len(node.input) < 3 else f"{node.output[0]}_matmul"
        nodes.append(helper.make_node("MatMul", [node.input[0], weight_name], [product], name=f"{node.name}_matmul"))
        if len(node.input) == 3:
            nodes.append(helper.make_node("Add", [product, node.input[2]], [node.output[0]], name=f"{node.name}_add"))
    graph.ClearField("node")
    graph.node.extend(nodes)
    return _without_unused_initializers(model)


def _without_unused_initializers(model):
    graph = model.graph
    used = _used_names(graph)
    kept = [tensor for tensor in graph.initializer if tensor.name in used]
    graph.ClearField("initializer")
    graph.initializer.extend(kept)
    return model


def _used_names(graph):
    # subgraphs (a Loop's body: nn.EmbeddingBag exports as one) read the outer graph's initializers too
    names = set()
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            subgraphs = [attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else attribute.graphs
            for subgraph in subgraphs:
                names |= _used_names(subgraph)
    return names


def _quantize_int8(model):
    conv_count = _int8_conv_weights(model)
    matmul_count = _count(model, "MatMul")
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "int8.onnx")
        quantize_dynamic(model, path, op_types_to_quantize=["MatMul"], per_channel=True, weight_type=QuantType.QInt8)
        model = onnx.load(path)
    note = f"int8: {matmul_count} MatMul dynamic (per-channel symmetric), {conv_count} Conv static QDQ"
    if conv_count:
        note += " (activation scales from QAT)"
    return model, note


def _int8_conv_weights(model):
    # QAT left QuantizeLinear/DequantizeLinear around every conv (its activation quantisers) and the
    # exporter folded BatchNorm into the conv: store the folded weight as its int8 per-channel levels
    # (the trained levels: folding scales each channel by one factor) and the bias as int32 on the
    # input scale x weight scale, as ONNX Runtime's QLinearConv fusion wants them
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    dequantized_scales = {
        node.output[0]: numpy_helper.to_array(initializers[node.input[1]])
        for node in graph.node
        if node.op_type == "DequantizeLinear" and node.input[1] in initializers
    }
    nodes, converted = [], 0
    for node in graph.node:
        if node.op_type != "Conv" or node.input[1] not in initializers or node.input[0] not in dequantized_scales:
            nodes.append(node)
            continue
        weight = torch.from_numpy(numpy_helper.to_array(initializers[node.input[1]]).copy())
        levels, weight_scale = quantize_per_channel(weight, 8)
        name = f"{node.name}_int8"
        graph.initializer.extend([
            numpy_helper.from_array(levels.numpy().astype(np.int8), f"{name}_weight"),
            numpy_helper.from_array(weight_scale.numpy().astype(np.float32), f"{name}_weight_scale"),
        ])
        nodes.append(_dequantize(f"{name}_weight", axis=0))
        node.input[1] = nodes[-1].output[0]
        if len(node.input) > 2 and node.input[2] in initializers:
            bias_scale = (weight_scale.numpy() * dequantized_scales[node.input[0]]).astype(np.float32)
            bias = numpy_helper.to_array(initializers[node.input[2]]) / bias_scale
            graph.initializer.extend([
                numpy_helper.from_array(np.round(bias).astype(np.int32), f"{name}_bias"),
                numpy_helper.from_array(bias_scale, f"{name}_bias_scale"),
            ])
            nodes.append(_dequantize(f"{name}_bias", axis=0))
            node.input[2] = nodes[-1].output[0]
        nodes.append(node)
        converted += 1
    graph.ClearField("node")
    graph.node.extend(nodes)
    _without_unused_initializers(model)
    return converted


def _dequantize(name, axis):
    return helper.make_node("DequantizeLinear", [name, f"{name}_scale"], [f"{name}_dequantized"], name=f"{name}_dequantize", axis=axis)


def _count(model, op_type):
    return sum(node.op_type == op_type for node in model.graph.node)


def _quantize_weight_only(model, bits):
    graph = model.graph
    initializers = {tensor.name: tensor for tensor in graph.initializer}
    nodes = []
    for node in graph.node:
        weight = initializers.get(node.input[1]) if node.op_type in ("MatMul", "Conv") else None
        if weight is not None and node.op_type == "MatMul" and len(weight.dims) == 2:
            nodes.append(_matmul_nbits(graph, node, numpy_helper.to_array(weight), bits))
        elif weight is not None and node.op_type == "Conv":
            nodes += [_dequantized_int4(graph, f"{node.name}_weight", numpy_helper.to_array(weight), bits), node]
            node.input[1] = nodes[-2].output[0]
        else:
            nodes.append(node)
    graph.ClearField("node")
    graph.node.extend(nodes)
    if all(opset.domain != "com.microsoft" for opset in model.opset_import):
        model.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    note = (
        f"{bits}-bit: {_count(model, 'MatMulNBits')} MatMul as MatMulNBits (QAT grid, int8 compute); "
        f"{_count(model, 'Conv')} Conv weights as int4 DequantizeLinear (QAT grid) into fp32 Conv"
    )
    return _without_unused_initializers(model), note


def _matmul_nbits(graph, node, weight, bits):
    packed, scales, block_size = _pack_blockwise(weight, bits)
    name = f"{node.name}_q{bits}"
    graph.initializer.extend(
        [numpy_helper.from_array(packed, f"{name}_weight"), numpy_helper.from_array(scales, f"{name}_scales")]
    )
    in_features, out_features = weight.shape
    return helper.make_node(
        "MatMulNBits",
        [node.input[0], f"{name}_weight", f"{name}_scales"],
        list(node.output),
        name=name,
        domain="com.microsoft",
        K=in_features,
        N=out_features,
        bits=bits,
        block_size=block_size,
        accuracy_level=WEIGHT_ONLY_ACCURACY_LEVEL,
    )


def _dequantized_int4(graph, name, weight, bits):
    # Levels of 2- and 4-bit grids (|level| <= 7) fit int4 exactly; the scale is the QAT one.
    levels, scale = quantize_per_channel(torch.from_numpy(weight.copy()), bits)
    graph.initializer.extend([
        helper.make_tensor(f"{name}_int4", TensorProto.INT4, weight.shape, levels.numpy().astype(np.int8).ravel()),
        numpy_helper.from_array(scale.numpy().astype(np.float32), f"{name}_scale"),
    ])
    inputs = [f"{name}_int4", f"{name}_scale"]
    return helper.make_node("DequantizeLinear", inputs, [name], name=f"{name}_dequantize", axis=0)


def _pack_blockwise(weight, bits):
    # MatMulNBits layout: B is (N, blocks, block_size * bits / 8) uint8, values stored unsigned
    # (level + 2^(bits-1), the default zero point), the first value of a byte in its lowest bits.
    in_features, out_features = weight.shape
    def stored_bytes(size):  # packed values plus one float32 scale per block, per output channel
        return math.ceil(in_features / size) * (size * bits // 8 + 4)

    block_size = min(WEIGHT_ONLY_BLOCK_SIZES, key=lambda size: (stored_bytes(size), -size))
    blocks = math.ceil(in_features / block_size)
    levels, scale = quantize_per_channel(torch.from_numpy(weight.T.copy()), bits)
    unsigned = (levels.numpy().astype(np.int64) + 2 ** (bits - 1)).astype(np.uint8)
    padding = blocks * block_size - in_features
    unsigned = np.pad(unsigned, ((0, 0), (0, padding)), constant_values=2 ** (bits - 1))
    values_per_byte = 8 // bits
    planes = unsigned.reshape(out_features, -1, values_per_byte)
    packed = np.zeros(planes.shape[:2], dtype=np.uint8)
    for position in range(values_per_byte):
        packed |= planes[:, :, position] << (position * bits)
    scales = np.repeat(scale.numpy().astype(np.float32)[:, None], blocks, axis=1)
    return packed.reshape(out_features, blocks, -1), scales, block_size


def _to_fp16(model):
    from onnxruntime.transformers.float16 import convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=True), "fp16 (CUDA), float32 inputs and logits"


def _sparse_initializers(model):
    graph = model.graph
    dense = []
    stored = []
    for tensor in graph.initializer:
        if tensor.data_type in (TensorProto.INT4, TensorProto.UINT4):  # packed two per byte; numpy has no int4
            dense.append(tensor)
            continue
        array = numpy_helper.to_array(tensor)
        nonzero = np.flatnonzero(array)
        values = numpy_helper.from_array(array.ravel()[nonzero], tensor.name)
        indices = numpy_helper.from_array(nonzero.astype(np.int64), f"{tensor.name}_indices")
        sparse = helper.make_sparse_tensor(values, indices, list(array.shape))
        if sparse.ByteSize() >= tensor.ByteSize():
            dense.append(tensor)
            continue
        graph.sparse_initializer.append(sparse)
        stored.append(f"{tensor.name} ({len(nonzero)}/{array.size} non-zero)")
    graph.ClearField("initializer")
    graph.initializer.extend(dense)
    note = f"sparse initializers: {', '.join(stored) or 'none smaller than dense'}; densified by ONNX Runtime at load"
    return model, note
