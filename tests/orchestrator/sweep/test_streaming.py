"""Streaming sources with Ray Data (a real local Ray): the seeded split of parquet, csv and image
files, the statistics computed once, the bad rows the first pass finds, and the disjoint shards
the workers of a trial read."""

import threading

import numpy as np
import pytest
import torch

from orchestrator.config.schema import SpecError
from orchestrator.config.preflight import inspect_source
from orchestrator.sweep.streaming import open_streamed, split_dataset, trial_dataset
from tests.orchestrator.conftest import started_local_ray
from tests.orchestrator.streamed_files import write_digits_csv, write_digits_images, write_digits_parquet


@pytest.fixture(scope="module")
def local_ray():
    with started_local_ray(2):
        yield


@pytest.fixture(scope="module")
def source(tmp_path_factory, local_ray):
    path = tmp_path_factory.mktemp("parquet") / "digits.parquet"
    x, y = write_digits_parquet(path)
    return inspect_source({"source": "parquet", "path": str(path)}, seed=3), x, y


def _written(tmp_path, source):
    # digits written in each format, and the rows as they read back (images: pixels 0-240)
    if source == "parquet":
        x, y = write_digits_parquet(tmp_path / "digits.parquet")
        return {"source": "parquet", "path": str(tmp_path / "digits.parquet")}, x, y
    if source == "csv":
        x, y = write_digits_csv(tmp_path / "rows")
        return {"source": "csv", "path": str(tmp_path / "rows")}, x, y
    pixels, y = write_digits_images(tmp_path / "images")
    return {"source": "images", "path": str(tmp_path / "images")}, pixels.reshape(len(y), -1).astype(np.float32), y


@pytest.fixture(params=["parquet", "csv", "images"])
def each_source(request, tmp_path, local_ray):
    data, x, y = _written(tmp_path, request.param)
    return inspect_source(data, seed=3), x, y


def _rows(batches):
    return [tuple(row) + (int(label),) for x, y in batches for row, label in zip(x.reshape(len(y), -1).tolist(), y)]


@pytest.mark.slow
def test_the_seeded_split_is_disjoint_complete_repeatable_and_standardised_on_train(each_source):
    source, x, y = each_source
    data = open_streamed(source, "spec.yaml")
    assert data.num_classes == 10  # csv: counted by the first pass (its first rows hold labels 0-7)
    splits = {split: _rows(data.split_batches(split, 500)) for split in ("train", "val", "test")}
    assert [len(rows) for rows in splits.values()] == [data.n_train, data.n_val, data.n_test]
    assert sum(len(rows) for rows in splits.values()) == len(y)
    # digits has a few repeated rows: compare as multisets
    everything = sorted(sum(splits.values(), []))
    assert everything == sorted(_rows([(x, y)]))
    assert sorted(_rows(data.split_batches("val", 64))) == sorted(splits["val"])  # the same rows on every pass
    train = np.array([row[:-1] for row in splits["train"]], dtype=np.float32)
    standardise = data.transforms[0]
    np.testing.assert_allclose(standardise.mean.numpy().reshape(-1), train.mean(axis=0), rtol=1e-5, atol=1e-4)
    spread = train.std(axis=0)
    np.testing.assert_allclose(standardise.std.numpy().reshape(-1), np.where(spread < 1e-8, 1.0, spread), rtol=1e-3)
    assert data.train_input_variance().tolist() == (spread > 0).astype(float).tolist()
    assert 0.05 < data.n_val / len(y) < 0.15 and 0.15 < data.n_test / len(y) < 0.25


def _with_cell(path, line, column, value):
    lines = path.read_text().splitlines()
    cells = lines[line - 1].split(",")
    cells[column] = value
    lines[line - 1] = ",".join(cells)
    path.write_text("\n".join(lines) + "\n")


def _a_text_cell(tmp_path):
    write_digits_csv(tmp_path)
    _with_cell(tmp_path / "part-2.csv", 301, 5, "x")
    return {"source": "csv", "path": str(tmp_path)}, "part-2.csv: cannot read: In CSV column #5: Row #301: CSV conversion error to float: invalid value 'x'"


def _an_empty_cell(tmp_path):
    write_digits_csv(tmp_path)
    _with_cell(tmp_path / "part-1.csv", 40, 7, "")
    return {"source": "csv", "path": str(tmp_path)}, "part-1.csv: a feature is not a finite number (an empty cell, nan or inf)"


def _an_empty_label(tmp_path):
    write_digits_csv(tmp_path)
    _with_cell(tmp_path / "part-0.csv", 500, 64, "")
    return {"source": "csv", "path": str(tmp_path)}, "part-0.csv: cannot read: column 'label': a label is empty"


def _a_label_past_num_classes(tmp_path):
    write_digits_csv(tmp_path)  # the first rows' labels are 0-7: only the first pass sees the 9s
    return {"source": "csv", "path": str(tmp_path), "num_classes": 9}, "data: csv:", "label 9 is past data.num_classes=9 (labels run 0 to 8)"


def _an_image_past_the_probed_ones(tmp_path):
    write_digits_images(tmp_path)
    broken = sorted((tmp_path / "c5").iterdir())[3]
    broken.write_bytes(b"not a png")
    return {"source": "images", "path": str(tmp_path)}, f"c5/{broken.name}: cannot decode as an image"


@pytest.mark.slow
@pytest.mark.parametrize("broken", [_a_text_cell, _an_empty_cell, _an_empty_label, _a_label_past_num_classes, _an_image_past_the_probed_ones], ids=lambda f: f.__name__.strip("_"))
def test_bad_rows_the_first_pass_reads_are_a_spec_error_naming_the_file(tmp_path, local_ray, broken):
    data, *expected = broken(tmp_path)
    source = inspect_source(data, seed=0)  # the metadata and first rows pass
    with pytest.raises(SpecError) as raised:
        open_streamed(source, "spec.yaml")
    message = str(raised.value)
    assert message.startswith("spec.yaml: data: ") and "\n" not in message, message
    for text in expected:
        assert text in message, message


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
    data = open_streamed(source, "spec.yaml")
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
data: {{source: images, path: {path}}}
model: {{kind: cnn, channels: [8]}}
train: {{epochs: 2, batch_size: 64, seed: 1}}
space:
  workers: {{grid: [1, 2]}}
search: {{algorithm: grid, num_samples: 1, metric: val_accuracy, mode: max}}
resources: {{workers_per_trial: 1, cpus_per_worker: 1, max_concurrent_trials: 2}}
deploy: {{rounds: 3}}
"""


@pytest.mark.slow
def test_a_streamed_sweep_trains_one_and_two_worker_trials_to_the_end(tmp_path):
    # image folders into a CNN here; the cluster test streams parquet across two nodes
    from tests.orchestrator.conftest import run_sweep
    from orchestrator.tracking.tags import MODE_TAG

    write_digits_images(tmp_path / "images")
    _, _, _, parents, children = run_sweep(STREAMED_SPEC.format(path=tmp_path / "images"), tmp_path, "it-streamed")
    assert parents[0].info.status == "FINISHED"
    by_mode = {child.data.tags[MODE_TAG]: child.data.metrics for child in children}
    assert set(by_mode) == {"baseline", "w2"}
    for metrics in by_mode.values():
        assert 0.3 < metrics["test_accuracy"] <= 1 and metrics["train_samples_per_s"] > 0
    two_workers = by_mode["w2"]
    assert two_workers["world_size"] == 2 and two_workers["ddp_ranks_trained"] == 2
    assert two_workers["ddp_replica_checksum_spread"] == 0  # own shards, averaged gradients
