"""The Ray Data tasks that read a parquet source's row groups: rows for training, sums for the
statistics. A module of its own, importing neither torch nor Ray Train, so that the worker
processes running these tasks do not load them (hundreds of MB each).
"""

import numpy as np
import ray.data

from orchestrator.config.parquet import SPLITS, ParquetSource

DATA_TASK_CPUS = 0
"""CPUs a Ray Data read or map task reserves. Trials hold the node's CPUs (a 1-worker trial its
worker's): data tasks that waited for a free CPU would wait forever, so they reserve none and
share the trials' cores."""

DATA_TASK_CONCURRENCY = 2
"""Ray Data tasks of one read at a time: tasks that reserve no CPU would otherwise each start a worker process."""

READ_TASK_ROWS = 16_384
"""Rows (whole row groups) one Ray Data read task reads: its scheduling gap (~30 ms here) is paid per task."""
SLICE_ROWS = 4096
"""Rows a read task converts at a time and yields as one block."""
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def read(source: ParquetSource, split: str, fn, **options) -> ray.data.Dataset:
    """A lazy Ray Dataset of `fn` applied to one split's row groups, READ_TASK_ROWS rows a task.

    Args:
        source: the parquet source.
        split: the split whose files are read ("train" holds every file of a seeded split).
        fn: `model_rows` or `partial_sums`, called as fn(items, source, *fn_args).
        options: `fn_args` and any other `map_batches` option.

    Example:
        >>> sums = read(source, "train", partial_sums)  # doctest: +SKIP
    """
    # row groups as the input items, each read by a task of ours (`fn`), so no read or list task
    # reserves a CPU (read_parquet's file listing does)
    items = [{"path": path, "group": group} for path, group in source.row_groups[split]]
    rows_per_group = sum(source.n_rows.values()) / max(1, sum(len(groups) for groups in source.row_groups.values()))
    return ray.data.from_items(items).map_batches(
        fn, fn_args=(source, *options.pop("fn_args", ())), batch_size=max(1, round(READ_TASK_ROWS / rows_per_group)), batch_format="pyarrow",
        num_cpus=DATA_TASK_CPUS, concurrency=DATA_TASK_CONCURRENCY, **options
    )


def _slices(item, source):
    # a task's row groups SLICE_ROWS rows at a time: a task holds one slice converted, not its
    # row groups whole (a 16,384-row group of 784 float64 features is 100 MB as read)
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [source.label_column, *source.feature_columns]
    for path, group in zip(item.column("path").to_pylist(), item.column("group").to_pylist()):
        with pq.ParquetFile(path) as file:
            for batch in file.iter_batches(batch_size=SLICE_ROWS, row_groups=[group], columns=columns):
                yield _arrays(pa.Table.from_batches([batch]), source)


def model_rows(item, source: ParquetSource, split: str):
    """A read task's rows of `split`, a block per slice: {"x": features (stored type if 4 bytes or
    less, else float32) shaped as one example, "y": int64 labels}.

    Example:
        >>> read(source, "val", model_rows, fn_args=("val",))  # doctest: +SKIP
    """
    for x, y in _slices(item, source):
        if source.split_from_seed:
            keep = _split_of_rows(x, y, source) == SPLITS.index(split)
            x, y = x[keep], y[keep]
        yield {"x": x.reshape(len(y), *source.input_shape), "y": y}


def _arrays(table, source):
    # features travel in their stored type where it is 4 bytes or less (uint8 pixels: a quarter
    # of float32's bytes through the object store), else as float32; batches are float32
    labels = table.column(source.label_column).to_numpy().astype(np.int64)
    if source.list_column:
        column = table.column(source.feature_columns[0]).combine_chunks()
        values = column.flatten().to_numpy(zero_copy_only=False).reshape(len(labels), -1)
    else:
        values = np.stack([table.column(name).to_numpy(zero_copy_only=False) for name in source.feature_columns], axis=1)
    return values.astype(np.float32, copy=False) if values.dtype.itemsize > 4 else values, labels


def _split_of_rows(x, y, source):
    # a seeded hash of each row's bytes, 8 at a time, so a row lands in the same split on every pass
    row_bytes = np.ascontiguousarray(x).reshape(len(y), -1).view(np.uint8)
    padded = np.zeros((len(y), -(-row_bytes.shape[1] // 8) * 8 + 8), np.uint8)
    padded[:, : row_bytes.shape[1]] = row_bytes
    padded[:, -8:] = y.astype("<i8")[:, None].view(np.uint8)
    words = padded.view(np.uint64)
    state = np.full(len(y), np.uint64(source.seed) * _HASH_MULTIPLIER + np.uint64(1), dtype=np.uint64)
    for column in range(words.shape[1]):
        state ^= words[:, column]
        state *= _HASH_MULTIPLIER
        state ^= state >> np.uint64(29)
    fraction = (state >> np.uint64(11)).astype(np.float64) / 2.0**53
    return np.where(fraction < source.val_fraction, 1, np.where(fraction < source.val_fraction + source.test_fraction, 2, 0))


def partial_sums(item, source: ParquetSource):
    """A block per slice of a read task's rows: its row counts of each split, and its training
    rows' feature sums and sums of squares.

    Example:
        >>> read(source, "train", partial_sums)  # doctest: +SKIP
    """
    for x, y in _slices(item, source):
        yield _sums_of_slice(x, y, source)


def _sums_of_slice(x, y, source):
    split = _split_of_rows(x, y, source) if source.split_from_seed else np.zeros(len(y), np.int64)
    train = x[split == 0].astype(np.float64)
    return {
        "counts": np.bincount(split, minlength=len(SPLITS))[None],
        "sum": train.sum(axis=0)[None],
        "squares": (train**2).sum(axis=0)[None],
    }
