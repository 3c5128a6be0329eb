import math

import pytest
import torch
from torch import nn

from trainers.data import load_dataset
from trainers.deployable import EagerDeployable
from trainers.measure import (
    PAIRED_CALL_TIMING,
    bootstrap_median_interval,
    evaluate,
    measure_deployable,
    measure_inference,
    measure_latency,
    paired_latencies,
)
from trainers.metrics import BENCH_METRICS, FINAL_METRICS
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
    metrics = evaluate(EagerDeployable(nn.Identity()), x, y, batch_size=7)
    assert metrics["accuracy"] == 1.0
    assert metrics["loss"] == pytest.approx(math.log(1 + 9 * math.exp(-5.0)), rel=1e-4)


def test_evaluate_gives_known_accuracy_and_loss_on_hand_made_logits():
    logits = torch.tensor([[1.0, 0.0], [math.log(3.0), 0.0], [0.0, 0.0]])
    labels = torch.tensor([0, 1, 1])
    metrics = evaluate(EagerDeployable(nn.Identity()), logits, labels, batch_size=2)
    # argmax: 0, 0, 0 (a tie goes to the first class) -> one of three right
    assert metrics["accuracy"] == pytest.approx(1 / 3)
    expected_loss = (math.log(1 + math.exp(-1.0)) + math.log(4.0) + math.log(2.0)) / 3
    assert metrics["loss"] == pytest.approx(expected_loss, rel=1e-6)


def test_an_eager_deployable_evaluates_in_eval_mode():
    model = nn.Sequential(nn.Dropout(0.9))
    x = torch.eye(4) * 10.0
    metrics = evaluate(EagerDeployable(model), x, torch.arange(4))
    assert not model.training and metrics["accuracy"] == 1.0


def count_parameters(module):
    return EagerDeployable(module).parameter_count()


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
    small, large = EagerDeployable(mlp(64, 64, 10)).stored_bytes(), EagerDeployable(mlp(64, 256, 10)).stored_bytes()
    assert small < large
    assert large >= 4 * count_parameters(mlp(64, 256, 10))


def test_measure_latency_reports_median_p95_and_repeats_and_restores_threads():
    threads_before = torch.get_num_threads()
    latency = measure_latency(EagerDeployable(mlp(64, 64, 10)), torch.randn(8, 64), min_repeats=30, max_repeats=50, threads=1)
    assert set(latency) == {"median_ms", "p95_ms", "repeats", "times_ms"}
    assert 30 <= latency["repeats"] <= 50 and len(latency["times_ms"]) == latency["repeats"]
    assert 0 < latency["median_ms"] <= latency["p95_ms"]
    assert torch.get_num_threads() == threads_before


def test_measure_latency_runs_until_min_time_unless_max_repeats_stops_it():
    model = EagerDeployable(mlp(64, 64, 10))
    example = torch.randn(1, 64)
    capped = measure_latency(model, example, min_repeats=3, max_repeats=10, min_time_s=10.0)
    assert capped["repeats"] == 10
    quick = measure_latency(model, example, min_repeats=3, max_repeats=1000, min_time_s=0.0)
    assert quick["repeats"] == 3


def test_measure_inference_returns_exactly_the_trial_metrics_for_a_tiny_model():
    metrics = measure_inference(EagerDeployable(mlp(64, 64, 10)), torch.randn(10, 64))
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


def test_measure_inference_times_a_much_bigger_model_as_slower():
    # 784-2048-2048-10 does ~80x the arithmetic of 784-64-10 per row: no load on a shared
    # machine turns that around
    sample = torch.randn(256, 784)
    small = measure_inference(EagerDeployable(mlp(784, 64, 10)), sample)
    big = measure_inference(EagerDeployable(mlp(784, 2048, 2048, 10)), sample)
    assert big["latency_b256_ms"] > small["latency_b256_ms"]
    assert big["inference_samples_per_s"] < small["inference_samples_per_s"]


def test_measure_inference_rejects_an_empty_sample():
    with pytest.raises(ValueError, match="got 0"):
        measure_inference(EagerDeployable(mlp(4, 2)), torch.empty(0, 4))


def test_count_parameters_of_a_sparse_layer_counts_its_stored_non_zeros():
    from trainers.techniques.prune import SparseLinear

    layer = nn.Linear(20, 10)
    with torch.no_grad():
        layer.weight[:, 5:] = 0  # 50 of 200 weights stay non-zero
    assert count_parameters(nn.Sequential(SparseLinear(layer.weight, layer.bias))) == 50 + 10


def test_measure_deployable_reports_every_final_measurement_of_the_table():
    digits = load_dataset("digits")
    deployable = EagerDeployable(nn.Sequential(nn.Flatten(), mlp(64, 32, 10)))
    metrics = measure_deployable(deployable, digits, torch.device("cpu"))
    assert set(metrics) <= set(FINAL_METRICS) | set(BENCH_METRICS)
    assert metrics["param_count"] == 64 * 32 + 32 + 32 * 10 + 10
    assert metrics["size_bytes"] == deployable.stored_bytes()
    assert 0.0 <= metrics["test_accuracy"] <= 1.0 and metrics["test_loss"] > 0


class StoresHalf(nn.Module):
    """A layer type measurement has never heard of: it says what it stores."""

    def __init__(self):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(10, 10))

    def stored_numels(self):
        return [50]

    def forward(self, x):
        return x @ self.weight


def test_parameter_count_asks_layers_what_they_store():
    assert count_parameters(nn.Sequential(StoresHalf(), nn.Linear(10, 2))) == 50 + 22


def test_paired_latencies_pair_every_candidate_with_the_baseline_round_by_round():
    sample = torch.randn(256, 784)
    candidates = {
        "baseline": EagerDeployable(mlp(784, 64, 10)),
        "big": EagerDeployable(mlp(784, 2048, 2048, 10)),  # ~80x the arithmetic: slower under any load
    }
    figures = paired_latencies(
        candidates, "baseline", {"baseline": sample, "big": sample}, batch_sizes=(1, 64), rounds=4, min_time_s=0.0
    )
    assert set(figures) == {"baseline", "big"} and set(figures["big"]) == {1, 64}
    own = figures["baseline"][64]
    assert own["round_speedups"] == [1.0] * 4 and own["speedup"] == own["speedup_low"] == own["speedup_high"] == 1.0
    big = figures["big"][64]
    assert len(big["round_speedups"]) == 4
    assert big["speedup_low"] <= big["speedup"] <= big["speedup_high"] < 1.0
    assert big["p95_ms"] >= big["median_ms"] > own["median_ms"]


class _CountedCalls(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, 0

    def forward(self, inputs):
        self.calls += 1
        return self.model(inputs)


def test_a_candidate_given_as_copies_is_timed_one_copy_a_round_in_turn():
    model, sample = mlp(64, 32, 10), torch.randn(8, 64)
    copies = [_CountedCalls(model) for _ in range(3)]
    figures = paired_latencies(
        {"baseline": model, "copies": copies}, "baseline", {"baseline": sample, "copies": sample},
        batch_sizes=(1,), rounds=6, min_rounds=6, min_time_s=0.0,
    )  # fmt: skip
    assert len(figures["copies"][1]["round_speedups"]) == 6
    calls_a_round = PAIRED_CALL_TIMING["warmup"] + PAIRED_CALL_TIMING["min_repeats"]  # min_time_s 0: the fewest calls
    assert [copy.calls for copy in copies] == [2 * calls_a_round] * 3  # 6 rounds, each copy in 2 of them


def test_paired_latencies_refuse_a_missing_baseline_or_too_few_rounds():
    model = {"a": EagerDeployable(mlp(4, 2))}
    with pytest.raises(ValueError, match="baseline 'b' is not among"):
        paired_latencies(model, "b", {"a": torch.randn(2, 4)})
    with pytest.raises(ValueError, match="at least 3 rounds"):
        paired_latencies(model, "a", {"a": torch.randn(2, 4)}, rounds=2)


def test_bootstrap_interval_brackets_the_median_and_is_reproducible():
    values = [0.9, 1.3, 1.1, 1.0, 1.2, 0.95, 1.05]
    low, high = bootstrap_median_interval(values)
    assert low <= 1.05 <= high and (low, high) == bootstrap_median_interval(values)
    assert bootstrap_median_interval([2.0] * 7) == (2.0, 2.0)
    wide, narrow = bootstrap_median_interval(values, 0.99), bootstrap_median_interval(values, 0.5)
    assert wide[0] <= narrow[0] and narrow[1] <= wide[1]


def test_an_a_a_control_widens_every_interval_by_its_own_error():
    sample = torch.randn(64, 784)
    baseline = EagerDeployable(mlp(784, 64, 10))
    candidates = {"baseline": baseline, "copy": EagerDeployable(mlp(784, 64, 10)), "big": EagerDeployable(mlp(784, 1024, 10))}
    samples = dict.fromkeys(candidates, sample)
    plain = paired_latencies(candidates, "baseline", samples, batch_sizes=(1,), rounds=3, min_time_s=0.0)
    controlled = paired_latencies(candidates, "baseline", samples, batch_sizes=(1,), rounds=3, min_time_s=0.0, control="copy")
    copy = controlled["copy"][1]
    assert copy["speedup_low"] <= 1.0 <= copy["speedup_high"]  # an identical model holds 1.0, by construction
    for figures in (plain, controlled):
        big = figures["big"][1]
        assert big["speedup_low"] <= big["speedup"] <= big["speedup_high"]


def test_paired_rounds_stop_once_a_candidate_is_precise_enough_and_never_past_the_cap():
    sample = torch.randn(8, 64)
    candidates = {"baseline": EagerDeployable(mlp(64, 64, 10)), "wide": EagerDeployable(mlp(64, 512, 10))}
    samples = dict.fromkeys(candidates, sample)
    timing = {"batch_sizes": (1,), "rounds": 8, "min_rounds": 3, "min_time_s": 0.0}
    loose = paired_latencies(candidates, "baseline", samples, precision=100.0, **timing)
    exact = paired_latencies(candidates, "baseline", samples, precision=0.0, **timing)
    assert len(loose["wide"][1]["round_speedups"]) == 3  # any interval is narrow enough after the fewest rounds
    assert len(exact["wide"][1]["round_speedups"]) == 8  # none is: every round up to the cap
