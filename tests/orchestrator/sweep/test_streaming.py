"""Streaming a parquet source with Ray Data (a real local Ray): the seeded split, the statistics
computed once, and the disjoint shards the workers of a trial read."""

import threading

import numpy as np
import pytest
import ray
import torch

from orchestrator.config.parquet import inspect_parquet
from orchestrator.sweep.streaming import open_streamed, split_dataset, trial_dataset
from tests.orchestrator.parquet_files import write_digits_parquet


@pytest.fixture(scope="module")
def local_ray():
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)  # never a cluster running beside it
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def source(tmp_path_factory, local_ray):
    path = tmp_path_factory.mktemp("parquet") / "digits.parquet"
    x, y = write_digits_parquet(path)
    return inspect_parquet({"path": str(path)}, seed=3), x, y


def _rows(batches):
    return [tuple(row) + (int(label),) for x, y in batches for row, label in zip(x.reshape(len(y), -1).tolist(), y)]


@pytest.mark.slow
def test_the_seeded_split_is_disjoint_complete_repeatable_and_standardised_on_train(source):
    source, x, y = source
    data = open_streamed(source)
    splits = {split: _rows(data.split_batches(split, 500)) for split in ("train", "val", "test")}
    assert [len(rows) for rows in splits.values()] == [data.n_train, data.n_val, data.n_test]
    assert sum(len(rows) for rows in splits.values()) == len(y)
    # digits has a few repeated rows: compare as multisets
    everything = sorted(sum(splits.values(), []))
    assert everything == sorted(_rows([(x, y)]))
    assert sorted(_rows(data.split_batches("val", 64))) == sorted(splits["val"])  # the same rows on every pass
    train = np.array([row[:-1] for row in splits["train"]], dtype=np.float32)
    standardise = data.transforms[0]
    np.testing.assert_allclose(standardise.mean.numpy(), train.mean(axis=0), atol=1e-4)
    spread = train.std(axis=0)
    np.testing.assert_allclose(standardise.std.numpy(), np.where(spread < 1e-8, 1.0, spread), rtol=1e-3)
    assert data.train_input_variance().tolist() == (spread > 0).astype(float).tolist()
    assert 0.05 < data.n_val / len(y) < 0.15 and 0.15 < data.n_test / len(y) < 0.25


@pytest.mark.slow
def test_the_two_shards_of_an_equal_streaming_split_are_disjoint_and_cover_the_training_split(source):
    # what Ray Train's DataConfig does for `datasets_to_split=["train"]`: streaming_split(n, equal=True),
    # each shard read by its own worker at the same time (here: two threads)
    source, _, _ = source
    train = split_dataset(source, "train")
    shards = train.streaming_split(2, equal=True)
    seen = [[], []]

    def read(index):
        seen[index] = _rows((b["x"].numpy(), b["y"].numpy()) for b in shards[index].iter_torch_batches(batch_size=64))

    readers = [threading.Thread(target=read, args=(index,)) for index in (0, 1)]
    for reader in readers:
        reader.start()
    for reader in readers:
        reader.join()
    everything = _rows((b["x"], b["y"]) for b in train.iter_batches(batch_size=500, batch_format="numpy"))
    assert len(seen[0]) == len(seen[1]) >= len(everything) // 2 - 1
    remaining = list(everything)
    for row in seen[0] + seen[1]:
        remaining.remove(row)  # every row read once at most: the shards are disjoint
    assert len(remaining) <= 1


@pytest.mark.slow
def test_a_trial_reads_its_training_split_ahead_whole_every_epoch_reshuffled_and_stops_when_closed(source):
    source, _, _ = source
    data = open_streamed(source)
    stored = sorted(_rows(data.split_batches("train", 500)))
    with trial_dataset(data, seed=5, epochs=range(1, 3)) as trial:  # a trial resumed at epoch 1
        assert trial.val is data.val and trial.test is data.test
        with pytest.raises(ValueError, match="epoch 0 is not one this trial reads"):
            trial.split_batches("train", 64, 0)
        epochs = [list(trial.split_batches("train", 64, epoch)) for epoch in (1, 2)]
    for batches in epochs:
        assert all(x.dtype == torch.float32 and len(y) == 64 for x, y in batches[:-1]) and 0 < len(batches[-1][1]) <= 64
        assert sorted(_rows(batches)) == stored
    assert _rows(epochs[0]) != _rows(epochs[1])  # each epoch its own order
    with trial_dataset(data, seed=5, epochs=range(1, 3)) as again:
        assert _rows(again.split_batches("train", 64, 1)) == _rows(epochs[0])  # the same order for the same seed
    with trial_dataset(data, seed=5, epochs=range(10)) as stopped_early:
        next(iter(stopped_early.split_batches("train", 64, 0)))
    assert not stopped_early.train._reader.is_alive()  # closing stopped the reader with nine epochs unread


STREAMED_SPEC = """\
name: it-streamed
data: {{source: parquet, path: {path}, label_column: label}}
model: {{kind: mlp, hidden: [32]}}
train: {{epochs: 2, batch_size: 64, seed: 1}}
space:
  workers: {{grid: [1, 2]}}
search: {{algorithm: grid, num_samples: 1, metric: val_accuracy, mode: max}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 2}}
deploy: {{rounds: 3}}
"""


@pytest.mark.slow
def test_a_streamed_sweep_trains_one_and_two_worker_trials_to_the_end(tmp_path):
    from tests.orchestrator.conftest import run_sweep
    from orchestrator.tracking.tags import MODE_TAG

    write_digits_parquet(tmp_path / "digits.parquet", list_column=True)
    _, _, _, parents, children = run_sweep(STREAMED_SPEC.format(path=tmp_path / "digits.parquet"), tmp_path, "it-streamed")
    assert parents[0].info.status == "FINISHED"
    by_mode = {child.data.tags[MODE_TAG]: child.data.metrics for child in children}
    assert set(by_mode) == {"baseline", "w2"}
    for metrics in by_mode.values():
        assert 0.3 < metrics["test_accuracy"] <= 1 and metrics["train_samples_per_s"] > 0
    two_workers = by_mode["w2"]
    assert two_workers["world_size"] == 2 and two_workers["ddp_ranks_trained"] == 2
    assert two_workers["ddp_replica_checksum_spread"] == 0  # own shards, averaged gradients
