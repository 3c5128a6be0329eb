"""A parquet source streamed with Ray Data: the splits, the sweep's statistics, each worker's shard.

`open_streamed` turns the pre-flight's `ParquetSource` into a `trainers.streamed.StreamedDataset`
whose splits are lazy Ray Datasets (read afresh every epoch, never materialised): given split files
are read as they are; one `data.path` is split row by row by a seeded hash of each row's values,
so every pass assigns a row to the same split. The standardisation's means and deviations (and
the variance feature selection ranks by) are computed once, by a Ray Data pass over the training
split, and go into the exported graph as for the in-memory sources. A worker of an N-worker trial
reads its own shard (`worker_dataset`, `ray.train.get_dataset_shard`); validation and test are
streamed whole to each worker.
"""

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.data
import ray.train
import torch

from orchestrator.config.parquet import SPLITS, ParquetSource
from orchestrator.config.schema import SpecError
from trainers.preprocess import Standardise
from trainers.streamed import StreamedDataset

logger = logging.getLogger(__name__)

DATA_TASK_CPUS = 0
"""CPUs a Ray Data read or map task reserves. Trials hold the node's CPUs (a 1-worker trial its
worker's): data tasks that waited for a free CPU would wait forever, so they reserve none and
share the trials' cores."""
SAMPLE_ROWS = 256
"""Rows of the training and test splits that travel with the data set (examples, calibration, latency)."""
DATA_TASK_CONCURRENCY = 2
"""Ray Data tasks of one read at a time: tasks that reserve no CPU would otherwise each start a worker process."""
READ_BATCH_ROWS = 4096
"""Rows fetched from Ray Data at a time; training batches are sliced from them (same sizes, same order)."""
SHUFFLE_BUFFER_ROWS = 2048
"""Training rows a worker shuffles locally each epoch (Ray Data's `local_shuffle_buffer_size`)."""
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


@dataclass
class RayBatches:
    """A `trainers.streamed.BatchSource` over a Ray Dataset or a worker's `DataIterator` shard.

    Attributes:
        data: a `ray.data.Dataset` (1-worker trials iterate it directly) or a `DataIterator`.
        shuffle_seed: None keeps the stored order; else each epoch shuffles locally, seeded
            with it and the epoch.
    """

    data: Any
    shuffle_seed: int | None = None

    def batches(self, batch_size: int, epoch: int = 0):
        """(rows float32, labels int64) tensors, `batch_size` rows at a time, streamed."""
        shuffle = {} if self.shuffle_seed is None else {
            "local_shuffle_buffer_size": max(SHUFFLE_BUFFER_ROWS, batch_size),
            "local_shuffle_seed": self.shuffle_seed * 100_003 + epoch,
        }  # fmt: skip
        # Ray Data's per-batch cost (~3 ms here) is paid per READ_BATCH_ROWS rows, not per training batch
        chunks = self.data.iter_torch_batches(batch_size=max(batch_size, READ_BATCH_ROWS), device="cpu", **shuffle)
        x, y = None, None
        for chunk in chunks:
            x = chunk["x"] if x is None else torch.cat([x, chunk["x"]])
            y = chunk["y"] if y is None else torch.cat([y, chunk["y"]])
            whole = len(y) - len(y) % batch_size
            for start in range(0, whole, batch_size):
                yield x[start : start + batch_size], y[start : start + batch_size]
            x, y = (x[whole:], y[whole:]) if whole < len(y) else (None, None)
        if y is not None:
            yield x, y


def sweep_data(data):
    """The data set the trials read: a `ParquetSource` opened for streaming (`open_streamed`; Ray
    must be connected), any other data set as it is.

    Example:
        >>> data = sweep_data(load_data(spec, spec_path))  # doctest: +SKIP
    """
    return open_streamed(data) if isinstance(data, ParquetSource) else data


def open_streamed(source: ParquetSource) -> StreamedDataset:
    """The sweep's streamed data set: lazy Ray Datasets of each split, statistics computed once.

    Args:
        source: the pre-flight's `ParquetSource`.

    Returns:
        A StreamedDataset whose `train`, `val` and `test` are `RayBatches` over whole splits, with
        the training split's standardisation as its transform.

    Example:
        >>> data = open_streamed(inspect_parquet({"path": "rows.parquet"}, seed=0))  # doctest: +SKIP
        >>> data.n_train + data.n_val + data.n_test  # doctest: +SKIP
        1000
    """
    # Ray Data logs its progress at INFO on its own logger: as quiet as the rest of Ray (-v shows both)
    logging.getLogger("ray.data").setLevel(logging.getLogger("ray").getEffectiveLevel())
    datasets = {split: split_dataset(source, split) for split in SPLITS}
    counts, mean, std = _statistics(source)
    constant = std < 1e-8
    variance = (~constant).astype(np.float32)  # standardised: 1 where a feature varies, 0 where it is constant
    std[constant] = 1.0
    x_train, y_train = _first_rows(datasets["train"])
    x_test, y_test = _first_rows(datasets["test"])
    data = StreamedDataset(
        source.name,
        RayBatches(datasets["train"], source.seed),
        RayBatches(datasets["val"]),
        RayBatches(datasets["test"]),
        *counts,
        source.num_classes,
        x_train,
        y_train,
        x_test,
        y_test,
        torch.from_numpy(variance.reshape(-1)),
        (Standardise(torch.from_numpy(mean.reshape(source.input_shape)), torch.from_numpy(std.reshape(source.input_shape))),),
    )
    logger.info("streamed %s: %d train / %d val / %d test rows", source.name, *counts)
    return data


def split_dataset(source: ParquetSource, split: str) -> ray.data.Dataset:
    """One split as a lazy Ray Dataset of {"x": float32 rows, "y": int64 labels}.

    Args:
        source: the parquet source.
        split: "train", "val" or "test".

    Example:
        >>> split_dataset(source, "val").take_batch(2)["x"].shape  # doctest: +SKIP
        (2, 784)
    """
    dataset = _read(source, "train" if source.split_from_seed else split, _model_rows, fn_args=(split,))
    dataset.context.execution_options.preserve_order = True  # the same batches on every run of a seed
    return dataset


def worker_dataset(data: StreamedDataset, seed: int) -> StreamedDataset:
    """A Ray Train worker's view of the sweep's data set: its own shard of the training split, the
    whole validation and test splits (see `train_datasets`).

    Args:
        data: the sweep's StreamedDataset.
        seed: the trial's seed (the local shuffle's).

    Example:
        >>> data = worker_dataset(ray.get(data_ref[0]), recipe.seed)  # doctest: +SKIP
    """
    shards = {split: ray.train.get_dataset_shard(split) for split in SPLITS}
    return data.with_sources(RayBatches(shards["train"], seed), RayBatches(shards["val"]), RayBatches(shards["test"]))


def train_datasets(data: StreamedDataset) -> dict:
    """What `TorchTrainer` takes for a streamed data set: `datasets` and a `dataset_config` that
    splits only the training split among the workers.

    Example:
        >>> TorchTrainer(_train_worker, **train_datasets(data), ...)  # doctest: +SKIP
    """
    return {
        "datasets": {split: getattr(data, split).data for split in SPLITS},
        "dataset_config": ray.train.DataConfig(datasets_to_split=["train"]),
    }


def _read(source, split, fn, **options):
    # row groups as the input items, each read by a task of ours (`fn`), so no read or list task
    # reserves a CPU (read_parquet's file listing does)
    items = [{"path": path, "group": group} for path, group in source.row_groups[split]]
    return ray.data.from_items(items).map_batches(
        fn, fn_args=(source, *options.pop("fn_args", ())), batch_size=1, batch_format="pyarrow",
        num_cpus=DATA_TASK_CPUS, concurrency=DATA_TASK_CONCURRENCY, **options
    )


def _row_group(item, source):
    import pyarrow.parquet as pq

    path, group = item.column("path")[0].as_py(), item.column("group")[0].as_py()
    with pq.ParquetFile(path) as file:
        return _arrays(file.read_row_group(group, columns=[source.label_column, *source.feature_columns]), source)


def _model_rows(item, source, split):
    x, y = _row_group(item, source)
    if source.split_from_seed:
        keep = _split_of_rows(x, y, source) == SPLITS.index(split)
        x, y = x[keep], y[keep]
    return {"x": x.reshape(len(y), *source.input_shape), "y": y}


def _arrays(table, source):
    labels = table.column(source.label_column).to_numpy().astype(np.int64)
    if source.list_column:
        column = table.column(source.feature_columns[0]).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        return values.reshape(len(labels), -1), labels
    columns = [table.column(name).to_numpy(zero_copy_only=False) for name in source.feature_columns]
    return np.stack(columns, axis=1).astype(np.float32), labels


def _split_of_rows(x, y, source):
    # a seeded hash of each row's bytes, so a row lands in the same split on every pass
    words = np.ascontiguousarray(np.concatenate([x, y[:, None].astype(np.float32)], axis=1)).view(np.uint32)
    state = np.full(len(y), np.uint64(source.seed) * _HASH_MULTIPLIER + np.uint64(1), dtype=np.uint64)
    for column in range(words.shape[1]):
        state ^= words[:, column].astype(np.uint64)
        state *= _HASH_MULTIPLIER
        state ^= state >> np.uint64(29)
    fraction = (state >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.where(fraction < source.val_fraction, 1, np.where(fraction < source.val_fraction + source.test_fraction, 2, 0))


def _statistics(source):
    # one Ray Data pass: per-block row counts of each split and the training rows' sums; the
    # driver adds up one small row per block
    partials = _read(source, "train", _partial_sums)
    counts, total, squares = np.zeros(len(SPLITS), np.int64), 0.0, 0.0
    for batch in partials.iter_batches(batch_format="numpy", batch_size=None):
        counts += batch["counts"].sum(axis=0)
        total = total + batch["sum"].sum(axis=0)
        squares = squares + batch["squares"].sum(axis=0)
    if not source.split_from_seed:
        counts = np.array([counts[0], source.n_rows["val"], source.n_rows["test"]])
    if min(counts) < 1:
        raise SpecError(f"data: {source.name}: a split has no rows ({dict(zip(SPLITS, counts.tolist()))})")
    mean = total / counts[0]
    std = np.sqrt(np.maximum(squares / counts[0] - mean**2, 0.0))
    return counts.tolist(), mean.astype(np.float32), std.astype(np.float32)


def _partial_sums(item, source):
    x, y = _row_group(item, source)
    split = _split_of_rows(x, y, source) if source.split_from_seed else np.zeros(len(y), np.int64)
    train = x[split == 0].astype(np.float64)
    return {
        "counts": np.bincount(split, minlength=len(SPLITS))[None],
        "sum": train.sum(axis=0)[None],
        "squares": (train**2).sum(axis=0)[None],
    }


def _first_rows(dataset):
    batch = dataset.take_batch(SAMPLE_ROWS, batch_format="numpy")
    return torch.from_numpy(np.array(batch["x"])), torch.from_numpy(np.array(batch["y"]))
