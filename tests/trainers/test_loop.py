import dataclasses
import io
import math
import re

import numpy as np
import onnx
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from trainers.checkpoints import load_trained
from trainers.data import load_dataset
from trainers.deployable import Deployable
from trainers.checkpoints import save_atomically
from trainers.loop import (
    RuntimeDisagreement,
    TrialFailed,
    TrialRecipe,
    build_trial_model,
    deploy_to,
    export_deployable,
    export_trained,
    rebuild_deployable,
    scheduled_lr,
    train_for_export,
    train_trial,
    training_steps,
)
from trainers.measure import evaluate
from trainers.streamed import StreamedDataset, TensorBatches
from trainers.metrics import EPOCH_METRICS, FINAL_METRICS, TRAINED_FOR_EXPORT
from trainers.techniques.prune import SparseLinear, update_pruning
from trainers.techniques.quantize import PackedLinear


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


class Recorder:
    def __init__(self, directory=None):
        self.reports = []
        self.directory = directory

    def __call__(self, metrics, checkpoint):
        # Round-trip the checkpoint through bytes as the orchestrator does (torch.save, then a
        # weights_only load; a Deployable saves itself), so anything that cannot be stored or
        # safely loaded fails here.
        stored = None
        if checkpoint is not None:
            stored = {}
            for stem, state in checkpoint.items():
                if isinstance(state, Deployable):
                    stored[stem] = state.save(str(self.directory)) if self.directory else state
                    continue
                buffer = io.BytesIO()
                torch.save(state, buffer)
                buffer.seek(0)
                stored[stem] = torch.load(buffer, weights_only=stem == "trained")
        self.reports.append((metrics, stored))


def test_baseline_trains_reports_every_epoch_and_measures(digits):
    recorder = Recorder()
    final = train_trial(TrialRecipe(epochs=3, hidden=(32,)), digits, recorder)
    assert [m["epoch"] for m, _ in recorder.reports] == [1, 2, 3]
    assert all(set(EPOCH_METRICS) <= set(m) for m, _ in recorder.reports)
    assert all(c is not None and "trained" in c for _, c in recorder.reports)
    assert final["test_accuracy"] > 0.8
    assert final["latency_b256_provisional_ms"] > 0 and final["latency_provisional_ms"] > 0  # timed, so no order between them under load
    assert final["size_bytes"] > 4 * final["param_count"] > 0
    assert set(final) - {"epoch"} <= set(FINAL_METRICS) | set(EPOCH_METRICS)
    assert final["world_size"] == 1
    assert "deployable" in recorder.reports[-1][1]
    assert recorder.reports[-1][0]["notes"]["mode"] == "baseline"


@pytest.mark.parametrize(
    "choices, layer_type",
    [
        ({"rank": 8, "quant_bits": 4}, PackedLinear),
        ({"sparsity": 0.9}, SparseLinear),
    ],
)
def test_export_stores_what_the_technique_promises(digits, choices, layer_type):
    model, _, configs, _ = build_trial_model(TrialRecipe(hidden=(64,), choices=choices), digits)
    update_pruning(model, configs["sparsity"], epoch=0, epochs=1)
    exported = export_deployable(model, configs, digits.preprocess(), digits.x_test[:1])
    assert any(isinstance(module, layer_type) for module in exported.eager.module.modules())
    fmt = exported.fmt
    assert (fmt.weight_bits, fmt.sparse) == ((4, False) if "quant_bits" in choices else (32, True))


def test_a_trial_started_from_the_baseline_factorises_its_trained_weights(digits, baseline_mlp):
    baseline, path = baseline_mlp
    trained = load_trained(path)["model"]
    recipe = dataclasses.replace(baseline, choices={"rank": 8}, start_from="baseline", start_weights_path=path)
    model, _, _, notes = build_trial_model(recipe, digits)
    first, second = model[1]  # the 64 -> 64 layer as Linear(64 -> 8), Linear(8 -> 64)
    u, singular_values, vh = torch.linalg.svd(trained["1.weight"].double(), full_matrices=False)
    truncated = (u[:, :8] * singular_values[:8]) @ vh[:8]  # the best rank-8 approximation of the trained weight
    torch.testing.assert_close((second.weight @ first.weight).double(), truncated, atol=1e-5, rtol=1e-4)
    assert torch.equal(second.bias, trained["1.bias"])
    assert notes["start_weights"] == path


def test_the_dense_trial_of_a_recipe_started_from_the_baseline_trains_from_scratch(digits, baseline_mlp):
    baseline, path = baseline_mlp
    dense, _, _, notes = build_trial_model(dataclasses.replace(baseline, start_from="baseline", start_weights_path=path), digits)
    fresh, _, _, _ = build_trial_model(baseline, digits)
    assert "start_weights" not in notes
    torch.testing.assert_close(dense.state_dict(), fresh.state_dict())


def test_start_weights_that_do_not_fit_or_are_missing_fail_the_trial_before_it_trains(digits, baseline_mlp):
    _, path = baseline_mlp
    reports = []
    narrower = TrialRecipe(hidden=(32,), epochs=1, choices={"rank": 8}, start_from="baseline", start_weights_path=path)
    fits_not = rf"^start weights {re.escape(path)} does not fit this trial's model .*size mismatch for 1.weight"
    with pytest.raises(TrialFailed, match=fits_not):
        train_trial(narrower, digits, lambda m, c: reports.append(m))
    with pytest.raises(TrialFailed, match=r"^start_from 'baseline' needs start weights"):
        train_trial(dataclasses.replace(narrower, start_weights_path=None), digits, lambda m, c: reports.append(m))
    assert reports == []
    with pytest.raises(ValueError, match="start_weights_path is read only with start_from 'baseline'"):
        TrialRecipe(start_weights_path=path)
    with pytest.raises(ValueError, match=r"train.start_from must be one of \('scratch', 'baseline'\), got 'trained'"):
        TrialRecipe(start_from="trained")


def test_techniques_shrink_the_stored_model(digits):
    sizes = {}
    for name, choices in {"dense": {}, "q8": {"quant_bits": 8}, "r4": {"rank": 4}, "fk": {"feature_keep": 0.5}}.items():
        final = train_trial(TrialRecipe(epochs=1, hidden=(64,), choices=choices), digits, Recorder())
        sizes[name] = final["size_bytes"]
    assert sizes["q8"] < sizes["dense"]
    assert sizes["r4"] < sizes["dense"]
    assert sizes["fk"] < sizes["dense"]


def test_a_diverging_trial_stops_at_once_and_says_so(digits):
    recorder = Recorder()
    final = train_trial(TrialRecipe(epochs=4, optimizer="sgd", lr=1e12), digits, recorder)
    assert final["diverged"] == 1
    assert len(recorder.reports) == final["diverged_epoch"]  # the epochs before, then the diverged one
    assert "test_accuracy" not in final


def test_resume_continues_from_the_checkpoint(digits):
    first = Recorder()
    train_trial(TrialRecipe(epochs=3), digits, first)
    after_epoch_one = first.reports[0][1]["trained"]
    resumed = Recorder()
    train_trial(TrialRecipe(epochs=3), digits, resumed, resume=after_epoch_one)
    assert [m["epoch"] for m, _ in resumed.reports] == [2, 3]
    assert resumed.reports[-1][0]["test_accuracy"] > 0.8


# channel pruning shrinks the model at the start of epoch 2: a new DDP wrapper trains the smaller
# one; local SGD's replicas agree once the last average is taken
TWO_RANK_CHOICES = {"ddp": {}, "cp50": {"channel_sparsity": 0.5}, "sync4": {"sync_every": 4}}


TWO_RANK_DATA = {"n_samples": 600, "n_features": 16}
TWO_RANK_RECIPE = TrialRecipe(epochs=2, hidden=(16,), batch_size=32, runtime="onnxruntime")


def _ddp_rank(rank, world_size, directory, results):
    dist.init_process_group("gloo", init_method=f"file://{directory}/init", rank=rank, world_size=world_size)
    try:
        data = load_dataset("synthetic", **TWO_RANK_DATA)
        for name, choices in TWO_RANK_CHOICES.items():
            recipe = dataclasses.replace(TWO_RANK_RECIPE, choices=choices)
            results[name, rank] = train_trial(recipe, data, lambda m, c: None)
        recorder = Recorder()  # the "ddp" recipe again, trained for its trial driver to export
        results["for_export", rank] = train_for_export(TWO_RANK_RECIPE, data, recorder)
        if rank == 0:
            save_atomically(recorder.reports[-1][1]["trained"], f"{directory}/trained.pt")
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def two_rank_trials(tmp_path_factory):
    """Two spawned gloo ranks that train each recipe of TWO_RANK_CHOICES in turn, then the plain one
    with `train_for_export`, in one process group (spawning two processes that load torch costs
    seconds); ({(name, rank): final metrics}, the directory holding rank 0's `trained.pt`)."""
    results, directory = mp.Manager().dict(), tmp_path_factory.mktemp("ddp")
    mp.spawn(_ddp_rank, args=(2, str(directory), results), nprocs=2, join=True)
    return dict(results), directory


@pytest.mark.slow  # two spawned processes load torch and train: the quick loop's longest test by far
@pytest.mark.parametrize("name", TWO_RANK_CHOICES)
def test_two_ranks_train_with_averaged_gradients(two_rank_trials, name):
    choices = TWO_RANK_CHOICES[name]
    results = {rank: two_rank_trials[0][name, rank] for rank in (0, 1)}
    assert math.isfinite(results[0]["test_accuracy"]) and "test_accuracy" not in results[1]  # rank 0 measures alone
    for rank in (0, 1):
        # Both ranks trained on different shards, yet their weights agree exactly: only
        # averaged gradients (DDP's all-reduce) can do that.
        assert results[rank]["ddp_ranks_trained"] == 2
        assert results[rank]["ddp_replica_checksum_spread"] == 0
        assert results[rank]["world_size"] == 2
        steps = results[rank]["optimizer_steps"]
        expected_rounds = math.ceil(steps / 4) if "sync_every" in choices else steps
        assert results[rank]["sync_rounds"] == expected_rounds and results[rank]["comm_bytes_per_step"] > 0
        if "channel_sparsity" in choices:
            pruned = results[rank]["parameters_after_pruning"]
            assert pruned == results[0]["parameters_after_pruning"] < results[rank]["parameters_before_pruning"]


@pytest.mark.slow
def test_a_worker_group_trained_for_export_is_measured_by_its_driver_as_its_rank_0_would_measure_it(two_rank_trials, tmp_path):
    results, directory = two_rank_trials
    for rank in (0, 1):  # the workers only trained: their last report says so, with the training figures
        assert results["for_export", rank][TRAINED_FOR_EXPORT] == 1 and "test_accuracy" not in results["for_export", rank]
        assert results["for_export", rank]["ddp_replica_checksum_spread"] == 0
    recorder = Recorder(tmp_path)
    data = load_dataset("synthetic", **TWO_RANK_DATA)
    final = export_trained(TWO_RANK_RECIPE, data, str(directory / "trained.pt"), results["for_export", 0], recorder)
    exported_by_rank_0 = results["ddp", 0]  # the same recipe, trained the same way, exported in the worker group
    assert set(final) == set(exported_by_rank_0) and TRAINED_FOR_EXPORT not in final
    for figure in ("test_accuracy", "test_loss", "size_bytes", "param_count", "val_accuracy", "comm_bytes_per_step", "world_size"):
        assert final[figure] == exported_by_rank_0[figure], figure
    metrics, checkpoint = recorder.reports[-1]  # one report: the trial's final result, shipped artifact and all
    assert len(recorder.reports) == 1 and metrics["notes"]["runtime"] == "onnxruntime" and metrics["notes"]["mode"] == "baseline"
    assert checkpoint["deployable"] == str(tmp_path / "model.onnx") and checkpoint["trained"]["epoch"] == 2


def test_a_run_resumed_after_its_last_epoch_hands_over_that_epochs_figures(digits, tmp_path):
    recipe = TrialRecipe(epochs=2, hidden=(16,))
    trained = Recorder()
    first = train_for_export(recipe, digits, trained)
    resumed = Recorder()
    again = train_for_export(recipe, digits, resumed, resume=trained.reports[-1][1]["trained"])
    assert len(resumed.reports) == 1 and again[TRAINED_FOR_EXPORT] == 1  # no epoch left: the hand-over alone
    for figure in ("epoch", "val_accuracy", "val_loss", "train_loss"):
        assert again[figure] == first[figure], figure
    save_atomically(resumed.reports[-1][1]["trained"], str(tmp_path / "trained.pt"))
    final = export_trained(recipe, digits, str(tmp_path / "trained.pt"), again, Recorder())
    assert final["test_accuracy"] > 0.5 and final["resumed_from_epoch"] == 2


def test_a_checkpoint_the_driver_cannot_read_fails_the_trial_in_one_line(digits, tmp_path):
    (tmp_path / "trained.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(TrialFailed, match="cannot be read") as failed:
        export_trained(TrialRecipe(epochs=1), digits, str(tmp_path / "trained.pt"), {"epoch": 1}, Recorder())
    assert "\n" not in failed.value.reason and "trained.pt" in failed.value.reason and failed.value.trained is None


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_trains_and_reports_the_truth(digits, precision):
    final = train_trial(TrialRecipe(epochs=2, choices={"precision": precision}), digits, Recorder())
    assert final["test_accuracy"] > 0.6
    assert final["train_samples_per_s"] > 0


@pytest.mark.slow
def test_compiled_trial_reports_compile_time_apart_and_the_same_outputs(digits):
    recorder = Recorder()
    final = train_trial(TrialRecipe(epochs=1, hidden=(16,), choices={"compile": True}), digits, recorder)
    assert final["compile_seconds"] > 0 and final["inference_compile_seconds"] > 0
    assert recorder.reports[-1][0]["notes"]["compile_inference"] == "compiled"
    # the compiled deployable model computes what the eager one does
    model, data, configs, _ = build_trial_model(TrialRecipe(hidden=(16,)), digits)
    model.load_state_dict(recorder.reports[-1][1]["trained"]["model"])
    eager = export_deployable(model, configs, data.preprocess(), data.x_test[:1]).eager
    compiled = torch.compile(eager.module)
    with torch.no_grad():
        torch.testing.assert_close(compiled(data.x_test[:8]), eager(data.x_test[:8]))


def test_the_primary_runtime_measures_accuracy_and_ships_its_artifact(digits, tmp_path):
    recorder = Recorder(tmp_path)
    final = train_trial(TrialRecipe(epochs=1, hidden=(32,), choices={"quant_bits": 8}, runtime="onnxruntime"), digits, recorder)
    metrics, checkpoint = recorder.reports[-1]
    assert metrics["notes"]["runtime"] == "onnxruntime" and "int8" in metrics["notes"]["onnx_weights"]
    assert checkpoint["deployable"] == str(tmp_path / "model.onnx") and (tmp_path / "model.onnx").stat().st_size > 0
    assert final["size_bytes"] == (tmp_path / "model.onnx").stat().st_size
    assert 0 <= final["runtime_max_abs_diff"] <= 0.05
    # timed while others may train: provisional only; the quiet phase gives latency_ms
    assert final["latency_provisional_ms"] > 0 and "latency_ms" not in final


def test_a_runtime_that_disagrees_with_pytorch_fails_the_trial(digits):
    recipe = TrialRecipe(epochs=1, hidden=(32,), choices={"quant_bits": 4}, runtime="onnxruntime", max_abs_diff=1e-9)
    with pytest.raises(TrialFailed, match="onnxruntime's logits differ from the eager PyTorch model's") as failed:
        train_trial(recipe, digits, Recorder())
    assert isinstance(failed.value.__cause__, RuntimeDisagreement)
    assert failed.value.trained["epoch"] == 1 and failed.value.trained["model"]  # the trained weights are kept


def test_a_runtime_that_cannot_run_the_trial_says_so_and_the_eager_model_is_measured(digits):
    recorder = Recorder()
    train_trial(TrialRecipe(epochs=1, hidden=(32,), choices={"quant_bits": 16}, runtime="onnxruntime"), digits, recorder)
    notes = recorder.reports[-1][0]["notes"]
    assert notes["runtime"] == "eager"
    assert notes["runtime_unavailable"].startswith("onnxruntime: 16-bit weights run on the CUDA execution provider only")


def _csv_with_raw_units(path):
    # columns in very different units and offsets, values exactly representable in float32
    rng = np.random.default_rng(0)
    features = np.round(rng.normal([1000.0, 0.0, -50.0, 5.0, 0.0, 2.0], [300.0, 0.01, 8.0, 1.0, 4.0, 0.5], (300, 6)) * 4) / 4
    labels = (features[:, 0] > 1000).astype(int) + (features[:, 2] > -50).astype(int)
    lines = ["a,b,c,d,e,f,label"] + [",".join(f"{value:g}" for value in row) + f",{label}" for row, label in zip(features, labels)]
    path.write_text("\n".join(lines) + "\n")
    return features


def _trained_model(recipe, data, recorder, tmp_path):
    path = tmp_path / "trained.pt"
    torch.save(recorder.reports[-1][1]["trained"], path)
    model, model_data, _, _ = build_trial_model(recipe, data)
    model.load_state_dict(recorder.reports[-1][1]["trained"]["model"])
    return model.eval(), model_data, str(path)


@pytest.mark.parametrize(
    "source, choices, graph_ops",
    [
        ("csv", {"feature_keep": 0.5}, {"Sub", "Div", "Gather"}),  # standardised, then selected
        ("digits", {"feature_keep": 0.5}, {"Div", "Gather"}),  # pixels 0-16 scaled, then selected
    ],
)
def test_every_deployable_takes_raw_rows_and_computes_what_was_trained(tmp_path, source, choices, graph_ops):
    if source == "csv":
        written = _csv_with_raw_units(tmp_path / "data.csv")
        data = load_dataset("csv", str(tmp_path / "data.csv"))
        # the test rows are the file's values as written, not standardised ones
        assert {tuple(row) for row in data.x_test.tolist()} <= {tuple(row) for row in written.tolist()}
    else:
        data = load_dataset("digits")
        assert data.x_test.max() == 16
    recipe = TrialRecipe(epochs=2, hidden=(16,), choices=choices, runtime="onnxruntime")
    recorder = Recorder()
    final = train_trial(recipe, data, recorder)
    shipped = recorder.reports[-1][1]["deployable"]
    model, model_data, trained_path = _trained_model(recipe, data, recorder, tmp_path)
    with torch.no_grad():
        trained_logits = model(model_data.preprocessed().x_test)

    exported, rebuilt_data = rebuild_deployable(recipe, data, trained_path)
    assert torch.equal(rebuilt_data.x_test, data.x_test) and rebuilt_data.input_shape == data.input_shape
    for runtime in ("onnxruntime", "eager"):
        deployable = deploy_to(runtime, exported, rebuilt_data, torch.device("cpu"))
        torch.testing.assert_close(deployable(data.x_test), trained_logits, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(shipped(data.x_test), trained_logits, atol=1e-4, rtol=1e-4)
    assert evaluate(shipped, data.x_test, data.y_test)["accuracy"] == final["test_accuracy"]
    assert (trained_logits.argmax(1) == data.y_test).float().mean().item() == pytest.approx(final["test_accuracy"])
    graph = onnx.load_from_string(shipped.model_bytes).graph
    assert graph_ops <= {node.op_type for node in graph.node}
    assert [dim.dim_value for dim in graph.input[0].type.tensor_type.shape.dim[1:]] == list(data.input_shape)


@pytest.mark.parametrize(
    ("schedule", "warmup_steps", "expected"),
    [
        ("constant", 0, {0: 0.1, 50: 0.1, 99: 0.1}),
        ("cosine", 0, {0: 0.1, 50: 0.05, 100: 0.0}),
        ("constant", 10, {0: 0.01, 4: 0.05, 9: 0.1, 10: 0.1, 99: 0.1}),
        ("cosine", 20, {0: 0.005, 19: 0.1, 20: 0.1, 60: 0.05, 100: 0.0}),
        ("onecycle", 0, {0: 0.1 / 30, 29: 0.1, 30: 0.1, 65: 0.05, 100: 0.0}),  # rises over 30% of the steps
        ("onecycle", 10, {0: 0.01, 9: 0.1, 55: 0.05}),
    ],
)
def test_schedules_follow_their_trajectory(schedule, warmup_steps, expected):
    for step, lr in expected.items():
        assert scheduled_lr(schedule, 0.1, step, total_steps=100, warmup_steps=warmup_steps) == pytest.approx(lr, abs=1e-12)


def _steps_per_epoch(data, batch_size=64):
    return math.ceil(len(data.x_train) / batch_size)


@pytest.mark.parametrize(("schedule", "warmup_epochs"), [("constant", 1), ("cosine", 0), ("onecycle", 0)])
def test_the_optimizer_steps_with_the_scheduled_lr(digits, schedule, warmup_epochs):
    recorder = Recorder()
    recipe = TrialRecipe(epochs=3, lr=0.01, schedule=schedule, warmup_epochs=warmup_epochs)
    train_trial(recipe, digits, recorder)
    steps = _steps_per_epoch(digits)
    for epoch, (metrics, _) in enumerate(recorder.reports, start=1):  # "lr": the epoch's last step's
        expected = scheduled_lr(schedule, 0.01, epoch * steps - 1, 3 * steps, warmup_epochs * steps)
        assert metrics["lr"] == pytest.approx(expected)


def test_resume_continues_the_schedule(digits):
    recipe = TrialRecipe(epochs=3, schedule="cosine", warmup_epochs=1)
    whole = Recorder()
    train_trial(recipe, digits, whole)
    resumed = Recorder()
    train_trial(recipe, digits, resumed, resume=whole.reports[0][1]["trained"])
    assert [m["lr"] for m, _ in resumed.reports] == pytest.approx([m["lr"] for m, _ in whole.reports[1:]])
    assert [m["val_loss"] for m, _ in resumed.reports] == pytest.approx([m["val_loss"] for m, _ in whole.reports[1:]])


def test_clipping_bounds_every_step(digits):
    # SGD with momentum 0.9 moves the weights by at most lr * clip_norm / (1 - 0.9) per step when
    # every gradient's norm is clipped to clip_norm
    lr, clip_norm = 0.1, 1e-4
    recipe = TrialRecipe(epochs=1, optimizer="sgd", lr=lr, schedule="constant", clip_norm=clip_norm)
    initial, _, _, _ = build_trial_model(recipe, digits)
    before = torch.cat([p.detach().flatten() for p in initial.parameters()])
    recorder = Recorder()
    train_trial(recipe, digits, recorder)
    trained = recorder.reports[-1][1]["trained"]["model"]
    after = torch.cat([trained[name].flatten() for name, _ in initial.named_parameters()])
    bound = _steps_per_epoch(digits) * lr * clip_norm / (1 - 0.9)
    assert 0 < (after - before).norm() <= bound
    unclipped = Recorder()
    train_trial(TrialRecipe(epochs=1, optimizer="sgd", lr=lr, schedule="constant"), digits, unclipped)
    moved = torch.cat([unclipped.reports[-1][1]["trained"]["model"][n].flatten() for n, _ in initial.named_parameters()])
    assert (moved - before).norm() > 100 * bound  # the bound is the clipping's doing


def test_a_trial_stops_once_it_reaches_the_target_and_says_so(digits):
    recorder = Recorder()
    final = train_trial(TrialRecipe(epochs=5, target_accuracy=0.5), digits, recorder)
    assert final["reached_target"] == 1 and final["epochs_trained"] == 1
    assert [m["epoch"] for m, _ in recorder.reports] == [1]  # the epoch, reported once with the final figures
    assert final["val_accuracy"] >= 0.5 and final["test_accuracy"] > 0.5
    assert recorder.reports[-1][1]["trained"]["epoch"] == 1


def test_a_trial_that_misses_the_target_trains_every_epoch_and_says_so(digits):
    final = train_trial(TrialRecipe(epochs=2, target_accuracy=1.0, lr=1e-5), digits, Recorder())
    assert final["reached_target"] == 0 and final["epochs_trained"] == 2


def test_communication_knobs_on_one_worker_do_nothing_and_say_so(digits):
    recorder = Recorder()
    final = train_trial(TrialRecipe(epochs=1, hidden=(16,), choices={"sync_every": 8}), digits, recorder)
    notes = recorder.reports[-1][0]["notes"]
    assert notes["sync_every_inactive"] == "sync8 does nothing on 1 worker: there is nothing to synchronise"
    assert "comm_bytes_per_step" not in final and final["world_size"] == 1


class _UnreadableStream:
    def batches(self, batch_size, epoch=0):
        raise AssertionError("the training stream was read while timing")


def _streamed(data, train):
    return StreamedDataset(
        data.name, train, TensorBatches(data.x_val, data.y_val), TensorBatches(data.x_test, data.y_test),
        len(data.y_train), len(data.y_val), len(data.y_test), data.num_classes,
        data.x_train[:256], data.y_train[:256], data.x_test[:256], data.y_test[:256],
        data.train_input_variance(), data.transforms,
    )  # fmt: skip


def test_a_streamed_trials_training_steps_are_rebuilt_on_its_sample_without_reading_the_stream(digits, tmp_path):
    # the quiet phase's task holds every CPU: a Ray Data stream read inside it would wait for ever
    recipe = TrialRecipe(epochs=1, hidden=(16,), batch_size=64)
    recorder = Recorder()
    streamed = _streamed(digits, TensorBatches(digits.x_train, digits.y_train))
    train_trial(recipe, streamed, recorder)
    _, _, path = _trained_model(recipe, streamed, recorder, tmp_path)
    run_steps = training_steps(recipe, _streamed(digits, _UnreadableStream()), path, steps=5)
    run_steps()
    run_steps()  # again: each call trains its steps afresh
