import math
import time

import pytest
import torch
from torch import nn

from trainers.measure import count_parameters, evaluate, measure_inference, measure_latency, stored_size_bytes
from trainers.techniques.quantize import Quantize, export_quantized

CPU = torch.device("cpu")


def mlp(*widths):
    torch.manual_seed(0)
    layers = []
    for inputs, outputs in zip(widths, widths[1:]):
        layers += [nn.Linear(inputs, outputs), nn.ReLU()]
    return nn.Sequential(*layers[:-1])


def test_evaluate_is_perfect_when_inputs_are_their_own_logits():
    y = torch.arange(10).repeat(3)
    x = nn.functional.one_hot(y, 10).float() * 5.0
    metrics = evaluate(nn.Identity(), x, y, batch_size=7)
    assert metrics["accuracy"] == 1.0
    assert metrics["loss"] == pytest.approx(math.log(1 + 9 * math.exp(-5.0)), rel=1e-4)


def test_evaluate_gives_known_accuracy_and_loss_on_hand_made_logits():
    logits = torch.tensor([[1.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    metrics = evaluate(nn.Identity(), logits, labels, batch_size=2)
    # argmax: 0, 0, 0 (a tie goes to the first class) -> one of three right
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    expected_loss = (math.log(1 + math.exp(-1.0)) + math.log(4.0) + math.log(2.0)) / 3
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_evaluate_puts_the_model_in_eval_mode():
    model = nn.Sequential(nn.Dropout(0.9))
    x = torch.eye(4) * 10.0
    metrics = evaluate(model, x, torch.arange(4))
    assert not model.training and metrics["accuracy"] == 1.0


def test_count_parameters_counts_weights_and_biases():
    assert count_parameters(mlp(64, 64, 10)) == 64 * 64 + 64 + 64 * 10 + 10
    assert count_parameters(nn.Sequential(nn.Linear(4, 3, bias=False), nn.BatchNorm1d(3))) == 12 + 6


@pytest.mark.parametrize("bits", [16, 8, 4, 2])
def test_count_parameters_of_a_quantized_model_equals_its_float_original(bits):
    model = mlp(32, 16, 5)
    expected = count_parameters(model)
    deployable, _ = export_quantized(model, Quantize(bits), CPU)
    assert count_parameters(deployable) == expected


def test_count_parameters_sees_dynamic_quantized_linear_without_parameters():
    deployable, _ = export_quantized(mlp(32, 16, 5), Quantize(8), CPU)
    assert list(deployable.parameters()) == []
    assert count_parameters(deployable) == 32 * 16 + 16 + 16 * 5 + 5


def test_stored_size_grows_with_parameters():
    small, large = stored_size_bytes(mlp(64, 64, 10)), stored_size_bytes(mlp(64, 256, 10))
    assert small < large
    assert large >= 4 * count_parameters(mlp(64, 256, 10))


def test_measure_latency_reports_median_p95_and_repeats_and_restores_threads():
    threads_before = torch.get_num_threads()
    latency = measure_latency(mlp(64, 64, 10), torch.randn(8, 64), min_repeats=30, max_repeats=50, threads=1)
    assert set(latency) == {"median_ms", "p95_ms", "repeats"}
    assert 30 <= latency["repeats"] <= 50
    assert 0 < latency["median_ms"] <= latency["p95_ms"]
    assert torch.get_num_threads() == threads_before


def test_measure_latency_runs_until_min_time_unless_max_repeats_stops_it():
    model = mlp(64, 64, 10)
    example = torch.randn(1, 64)
    capped = measure_latency(model, example, min_repeats=3, max_repeats=10, min_time_s=10.0)
    assert capped["repeats"] == 10
    quick = measure_latency(model, example, min_repeats=3, max_repeats=1000, min_time_s=0.0)
    assert quick["repeats"] == 3


def test_measure_inference_returns_exactly_the_trial_metrics_quickly_for_a_tiny_model():
    start = time.perf_counter()
    metrics = measure_inference(mlp(64, 64, 10), torch.randn(10, 64))
    elapsed_s = time.perf_counter() - start
    assert set(metrics) == {
        "latency_ms",
        "latency_p95_ms",
        "latency_b256_ms",
        "latency_b256_p95_ms",
        "inference_samples_per_s",
    }
    assert metrics["latency_p95_ms"] >= metrics["latency_ms"] > 0
    assert metrics["latency_b256_p95_ms"] >= metrics["latency_b256_ms"] > 0
    assert metrics["inference_samples_per_s"] == pytest.approx(256 / (metrics["latency_b256_ms"] / 1000))
    assert elapsed_s < 1.0


def test_measure_inference_times_a_bigger_model_as_slower():
    sample = torch.randn(256, 784)
    small = measure_inference(mlp(784, 64, 10), sample)
    big = measure_inference(mlp(784, 2048, 2048, 10), sample)
    assert big["latency_b256_ms"] > small["latency_b256_ms"]
    assert big["inference_samples_per_s"] < small["inference_samples_per_s"]


def test_measure_inference_rejects_an_empty_sample():
    with pytest.raises(ValueError, match="got 0"):
        measure_inference(mlp(4, 2), torch.empty(0, 4))


def test_count_parameters_of_a_sparse_layer_counts_its_stored_non_zeros():
    from trainers.techniques.prune import SparseLinear

    layer = nn.Linear(20, 10)
    with torch.no_grad():
        layer.weight[:, 5:] = 0  # 50 of 200 weights stay non-zero
    assert count_parameters(nn.Sequential(SparseLinear(layer.weight, layer.bias))) == 50 + 10
