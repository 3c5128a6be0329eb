"""The ONNX Runtime runtime: graphs, weights on the trained grid, stored bytes and logits.

Tolerances on logits (max absolute difference from the PyTorch model with the same weights):
fp32 1e-4 (float rounding only); 8, 4 and 2 bits 5% of the largest logit (the weights are exactly
the trained grid, checked apart to 1e-6, but activations are quantised to int8 per call:
dynamically for MatMul and MatMulNBits, with calibrated ranges for Conv).
"""

import dataclasses
import functools

import numpy as np
import onnx
import onnxruntime
import pytest
import torch
from onnx import numpy_helper

from tests.trainers.runtimes.toys import cnn, export_inputs, mlp
from trainers.deployable import EagerDeployable
from trainers.runtimes import RuntimeUnavailable, export_to, max_abs_diff

EXACT = 1e-4
QUANTISED_RELATIVE = 0.05


@functools.cache
def exported(make, bits=32, sparsity=0.0, rank=None):
    """(export inputs, ONNX Runtime deployable) of a toy model, exported once per session: the
    deployables are only read and called, and an export costs seconds on a loaded machine."""
    inputs = export_inputs(make(), bits=bits, sparsity=sparsity, rank=rank)
    return inputs, export_to("onnxruntime", inputs)


def ops(deployable):
    return [node.op_type for node in onnx.load_from_string(deployable.model_bytes).graph.node]


def parameters(inputs):
    return sum(parameter.numel() for parameter in inputs.model.parameters())


def largest_logit(inputs):
    return inputs.model(inputs.calibration).abs().max().item()


def reference_diff(deployable, inputs):
    return max_abs_diff(deployable, EagerDeployable(inputs.model), inputs.calibration)


@pytest.mark.parametrize("make", [mlp, cnn])
def test_fp32_matches_pytorch_and_has_matmul_not_gemm(make):
    inputs, deployable = exported(make)
    assert reference_diff(deployable, inputs) < EXACT
    assert "Gemm" not in ops(deployable) and "MatMul" in ops(deployable)
    assert deployable.parameter_count() == parameters(inputs)
    assert deployable(inputs.calibration[:1]).shape == (1, 10)  # the batch dimension is dynamic


def test_low_rank_layers_are_two_matmuls():
    inputs, deployable = exported(mlp, rank=8)
    assert ops(deployable).count("MatMul") == 2 * 3
    assert reference_diff(deployable, inputs) < EXACT
    assert deployable.parameter_count() == parameters(inputs)


@pytest.mark.parametrize("make", [mlp, cnn])
def test_int8_logits_are_close(make):
    inputs, deployable = exported(make, bits=8)
    assert reference_diff(deployable, inputs) < QUANTISED_RELATIVE * largest_logit(inputs)
    assert "MatMulInteger" in ops(deployable) and "MatMul" not in ops(deployable)
    assert deployable.parameter_count() == parameters(inputs)


def test_int8_linear_activations_are_quantised_alike_in_training_eager_and_onnx_runtime():
    # every Linear input to uint8 per call over its full range, ONNX Runtime's DynamicQuantizeLinear:
    # QAT's simulation (training mode), the eager int8 kernel and ONNX Runtime give the same logits
    inputs = export_inputs(mlp(), bits=8)
    x = inputs.calibration
    onnx_runtime = export_to("onnxruntime", inputs)(x)
    with torch.no_grad():
        simulated = inputs.model.train()(x)
    inputs.model.eval()
    assert (inputs.eager(x) - onnx_runtime).abs().max() < 1e-4 * largest_logit(inputs)
    assert (simulated - onnx_runtime).abs().max() < 1e-4 * largest_logit(inputs)
    assert (inputs.model(x) - onnx_runtime).abs().max() > 1e-3 * largest_logit(inputs)  # eval mode: fp32 activations


def test_int8_matmul_weights_are_the_trained_grid():
    inputs, deployable = exported(mlp, bits=8)
    initializers = {
        tensor.name: numpy_helper.to_array(tensor) for tensor in onnx.load_from_string(deployable.model_bytes).graph.initializer
    }
    linears = [module for module in inputs.model.modules() if isinstance(module, torch.nn.Linear)]
    quantized = sorted(name for name in initializers if name.endswith("_quantized"))
    assert len(quantized) == len(linears)
    for name, linear in zip(quantized, linears):
        base = name.removesuffix("_quantized")
        assert np.all(initializers[f"{base}_zero_point"] == 0)
        dequantized = initializers[name].astype(np.float32) * initializers[f"{base}_scale"]
        assert np.abs(dequantized - linear.weight.detach().numpy().T).max() < 1e-6


def test_int8_conv_is_static_qdq():
    _, deployable = exported(cnn, bits=8)
    graph = onnx.load_from_string(deployable.model_bytes).graph
    producers = {output: node.op_type for node in graph.node for output in node.output}
    for conv in (node for node in graph.node if node.op_type == "Conv"):
        assert [producers[name] for name in conv.input] == ["DequantizeLinear"] * 3  # activations, weights, int32 bias
    assert "2 Conv static QDQ (activation scales from QAT)" in deployable.notes["onnx_weights"]


def unpacked_matmul_nbits_weights(deployable):
    graph = onnx.load_from_string(deployable.model_bytes).graph
    initializers = {tensor.name: numpy_helper.to_array(tensor) for tensor in graph.initializer}
    weights = []
    for node in (node for node in graph.node if node.op_type == "MatMulNBits"):
        attributes = {attribute.name: attribute.i for attribute in node.attribute}
        bits, in_features = attributes["bits"], attributes["K"]
        packed, scales = initializers[node.input[1]], initializers[node.input[2]]
        values = np.stack([(packed >> shift) & (2**bits - 1) for shift in range(0, 8, bits)], axis=-1)
        levels = values.reshape(len(packed), -1).astype(np.float32) - 2 ** (bits - 1)
        blockwise_scales = np.repeat(scales, attributes["block_size"], axis=1)
        weights.append((levels * blockwise_scales)[:, :in_features])
    return weights


@pytest.mark.parametrize("bits", [4, 2])
@pytest.mark.parametrize("make", [mlp, cnn])
def test_weight_only_bits_store_the_trained_grid(make, bits):
    inputs, deployable = exported(make, bits=bits)
    assert "MatMul" not in ops(deployable)
    linears = [module for module in inputs.model.modules() if isinstance(module, torch.nn.Linear)]
    weights = unpacked_matmul_nbits_weights(deployable)
    assert len(weights) == len(linears)
    for weight, linear in zip(weights, linears):
        assert np.abs(weight - linear.weight.detach().numpy()).max() < 1e-6
    assert reference_diff(deployable, inputs) < QUANTISED_RELATIVE * largest_logit(inputs)
    assert deployable.parameter_count() == parameters(inputs)


@pytest.mark.parametrize("bits, extra", [(8, {}), (4, {"session.disable_quant_qdq": "1"})])
def test_session_options_say_how_the_measured_session_was_made(bits, extra):
    _, deployable = exported(cnn, bits=bits)
    assert deployable.session_options == {
        "intra_op_num_threads": 1,
        "inter_op_num_threads": 1,
        "execution_mode": "sequential",
        "extra_session_config": extra,
    }
    for key, value in extra.items():
        assert deployable.session.get_session_options().get_session_config_entry(key) == value


@pytest.mark.parametrize("make", [mlp, cnn])
def test_fewer_bits_store_fewer_bytes(make):
    sizes = {bits: exported(make, bits=bits)[1].stored_bytes() for bits in (32, 8, 4, 2)}
    assert sizes[32] > sizes[8] > sizes[4] > sizes[2]


@pytest.mark.parametrize("bits", [4, 2])
def test_low_bit_conv_weights_are_int4_levels_of_the_trained_grid(bits):
    inputs, deployable = exported(cnn, bits=bits)
    graph = onnx.load_from_string(deployable.model_bytes).graph
    tensors = {tensor.name: tensor for tensor in graph.initializer}
    initializers = {name: numpy_helper.to_array(tensor) for name, tensor in tensors.items()}
    dequantized = {node.output[0]: node for node in graph.node if node.op_type == "DequantizeLinear"}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert all(conv.input[1] in dequantized for conv in convs)
    for conv, module in zip(convs, [m for m in inputs.model.modules() if isinstance(m, torch.nn.Conv2d)]):
        levels_name, scale_name = dequantized[conv.input[1]].input[:2]
        assert tensors[levels_name].data_type == onnx.TensorProto.INT4
        levels = initializers[levels_name].astype(np.float32)
        assert np.abs(levels).max() <= 2 ** (bits - 1) - 1
        weight = levels * initializers[scale_name][:, None, None, None]
        assert np.abs(weight - module.weight.detach().numpy()).max() < 1e-6


def test_sparse_weights_are_stored_smaller_with_the_same_logits():
    inputs, sparse = exported(mlp, sparsity=0.9)
    _, dense = exported(mlp)
    graph = onnx.load_from_string(sparse.model_bytes).graph
    assert len(graph.sparse_initializer) == 3
    assert sparse.stored_bytes() < dense.stored_bytes() / 2
    assert reference_diff(sparse, inputs) < EXACT
    nonzero = sum(int((p != 0).sum()) for p in inputs.model.parameters())
    assert sparse.parameter_count() == nonzero
    assert "densified by ONNX Runtime at load" in sparse.notes["onnx_sparse"]


@pytest.mark.parametrize("bits", [8, 4])
def test_sparse_storage_composes_with_quantised_weights(bits):
    inputs = export_inputs(cnn(), bits=bits, sparsity=0.9)
    sparse = export_to("onnxruntime", inputs)
    dense = export_to("onnxruntime", dataclasses.replace(inputs, fmt=dataclasses.replace(inputs.fmt, sparse=False)))
    assert sparse.stored_bytes() <= dense.stored_bytes()
    assert reference_diff(sparse, inputs) < QUANTISED_RELATIVE * largest_logit(inputs)


def test_fp16_on_cpu_is_unavailable_and_says_why():
    with pytest.raises(RuntimeUnavailable, match="16-bit weights run on the CUDA execution provider only"):
        export_to("onnxruntime", export_inputs(mlp(), bits=16))


@pytest.mark.skipif(
    "CUDAExecutionProvider" in onnxruntime.get_available_providers(), reason="this onnxruntime has the CUDA provider"
)
def test_cuda_without_the_cuda_provider_is_unavailable():
    inputs = export_inputs(mlp())
    with pytest.raises(RuntimeUnavailable, match="no CUDAExecutionProvider"):
        export_to("onnxruntime", dataclasses.replace(inputs, device=torch.device("cuda")))


def test_saved_model_runs_in_a_fresh_session_with_its_session_options(tmp_path):
    inputs, deployable = exported(cnn, bits=4)
    path = deployable.save(str(tmp_path))
    assert path.endswith("model.onnx")
    options = onnxruntime.SessionOptions()  # as mlflow.onnx builds it from onnx_session_options
    options.intra_op_num_threads = deployable.session_options["intra_op_num_threads"]
    for key, value in deployable.session_options["extra_session_config"].items():
        options.add_session_config_entry(key, value)
    session = onnxruntime.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    x = inputs.calibration.numpy()
    logits = session.run(None, {session.get_inputs()[0].name: x})[0]
    np.testing.assert_array_equal(logits, deployable(inputs.calibration).numpy())


def test_a_graph_without_a_kernel_in_this_build_is_unavailable(monkeypatch):
    from onnxruntime.capi.onnxruntime_pybind11_state import NotImplemented as NoKernel

    def no_kernel(*args, **kwargs):
        raise NoKernel("Could not find an implementation for MatMulNBits(1) node with name 'x'\nmore")

    monkeypatch.setattr(onnxruntime, "InferenceSession", no_kernel)
    with pytest.raises(RuntimeUnavailable, match=r"cannot run the 2-bit: .* graph: Could not find .*MatMulNBits.*'x'$"):
        export_to("onnxruntime", export_inputs(mlp(), bits=2))


def test_the_native_call_is_session_run_on_numpy_with_the_same_logits():
    inputs = export_inputs(mlp())
    deployable = export_to("onnxruntime", inputs)
    native = deployable.native_call(inputs.example)()
    assert isinstance(native[0], np.ndarray)  # ONNX Runtime's own output: nothing crossed back to torch
    assert np.array_equal(native[0], deployable(inputs.example).numpy())
