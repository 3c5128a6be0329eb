"""The Ray Data tasks that read a streamed source's files (parquet row groups, csv files, image
files): rows for training, sums for the statistics. A module of its own, importing neither torch
nor Ray Train, so that the worker processes running these tasks do not load them (hundreds of MB
each).
"""

import contextlib
import math

import numpy as np
import ray.data

from orchestrator.config.streamed_source import SPLITS, SourceError, StreamedSource

DATA_TASK_CPUS = 0
"""CPUs a Ray Data read or map task reserves. Trials hold the node's CPUs (a 1-worker trial its
worker's): data tasks that waited for a free CPU would wait forever, so they reserve none and
share the trials' cores."""

DATA_TASK_CONCURRENCY = 2
"""Ray Data tasks of one read at a time: tasks that reserve no CPU would otherwise each start a worker process."""

SLICE_ROWS = 4096
"""Rows a read task converts at a time and yields as one block (fewer for examples larger than
SLICE_BYTES / SLICE_ROWS)."""
SLICE_BYTES = 32 * 2**20
"""The most bytes of float32 features one block holds (large images: fewer rows a block)."""
_HASH_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def read(source: StreamedSource, split: str, fn, **options) -> ray.data.Dataset:
    """A lazy Ray Dataset of `fn` applied to one split's read units, `source.units_per_task` a task.

    Args:
        source: the streamed source.
        split: the split whose files are read ("train" holds every file of a seeded split).
        fn: `model_rows` or `partial_sums`, called as fn(items, source, *fn_args).
        options: `fn_args` and any other `map_batches` option.

    Example:
        >>> sums = read(source, "train", partial_sums)  # doctest: +SKIP
    """
    # the read units as the input items, each read by a task of ours (`fn`), so no read or list
    # task reserves a CPU (read_parquet's file listing does)
    return ray.data.from_items(source.units[split]).map_batches(
        fn, fn_args=(source, *options.pop("fn_args", ())), batch_size=source.units_per_task, batch_format="pyarrow",
        num_cpus=DATA_TASK_CPUS, compute=ray.data.TaskPoolStrategy(size=DATA_TASK_CONCURRENCY), **options
    )


def slice_rows(source: StreamedSource) -> int:
    """Rows one block holds: SLICE_ROWS, fewer where that many examples pass SLICE_BYTES as float32.

    Example:
        >>> slice_rows(source)  # doctest: +SKIP
        4096
    """
    return min(SLICE_ROWS, max(1, SLICE_BYTES // (4 * math.prod(source.input_shape))))


def model_rows(item, source: StreamedSource, split: str):
    """A read task's rows of `split`, a block per slice: {"x": features (stored type if 4 bytes or
    less, else float32) shaped as one example, "y": int64 labels}.

    Example:
        >>> read(source, "val", model_rows, fn_args=("val",))  # doctest: +SKIP
    """
    for _, x, y in _slices(item, source):
        if source.split_from_seed:
            keep = _split_of_rows(x, y, source) == SPLITS.index(split)
            x, y = x[keep], y[keep]
        yield {"x": x.reshape(len(y), *source.input_shape), "y": y}


def partial_sums(item, source: StreamedSource):
    """A block per slice of a read task's rows: its row counts of each split (all under "train"
    for a given split's files), its training rows' feature sums and sums of squares, and its
    labels' range.

    Raises:
        SourceError: a feature is not a finite number (the file is named).

    Example:
        >>> read(source, "train", partial_sums)  # doctest: +SKIP
    """
    for path, x, y in _slices(item, source):
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            raise SourceError(f"{path}: a feature is not a finite number (an empty cell, nan or inf)")
        split = _split_of_rows(x, y, source) if source.split_from_seed else np.zeros(len(y), np.int64)
        train = x[split == 0].astype(np.float64)
        yield {
            "counts": np.bincount(split, minlength=len(SPLITS))[None],
            "sum": train.sum(axis=0)[None],
            "squares": (train**2).sum(axis=0)[None],
            "label_min": np.array([y.min(initial=0)]),
            "label_max": np.array([y.max(initial=0)]),
        }


def _slices(item, source):
    # a task's read units a slice at a time, (file, features, labels): a task holds one slice
    # converted, not its files whole (a 16,384-row group of 784 float64 features is 100 MB as read)
    readers = {"parquet": _parquet_slices, "csv": _csv_slices, "images": _image_slices}
    return readers[source.format](item, source)


def _parquet_slices(item, source):
    import pyarrow as pa
    import pyarrow.parquet as pq

    columns = [source.label_column, *source.feature_columns]
    for path, group in zip(item.column("path").to_pylist(), item.column("group").to_pylist()):
        with _named(path), pq.ParquetFile(path) as file:
            for batch in file.iter_batches(batch_size=slice_rows(source), row_groups=[group], columns=columns):
                yield path, *_arrays(pa.Table.from_batches([batch]), source)


def _csv_slices(item, source):
    # pyarrow parses a block of bytes at a time; blocks are gathered into slices of rows
    import pyarrow as pa
    import pyarrow.csv as pacsv

    from orchestrator.config.csv_files import read_options

    types = {source.label_column: pa.int64(), **{name: pa.float32() for name in source.feature_columns}}
    options = read_options(source.csv_header, len(types), source.csv_delimiter, column_types=types)
    rows = slice_rows(source)
    for path in item.column("path").to_pylist():
        with _named(path):
            gathered, gathered_rows = [], 0
            for batch in pacsv.open_csv(path, **options):
                gathered.append(batch)
                gathered_rows += len(batch)
                if gathered_rows >= rows:
                    yield path, *_arrays(pa.Table.from_batches(gathered), source)
                    gathered, gathered_rows = [], 0
            if gathered:
                yield path, *_arrays(pa.Table.from_batches(gathered), source)


def _image_slices(item, source):
    from orchestrator.config.image_folders import decode_image

    paths, labels = item.column("path").to_pylist(), item.column("label").to_pylist()
    rows = slice_rows(source)
    for start in range(0, len(paths), rows):
        pixels = [decode_image(path, source.image_mode, source.input_shape[1:]).reshape(-1) for path in paths[start : start + rows]]
        yield paths[start], np.stack(pixels), np.array(labels[start : start + rows], np.int64)


@contextlib.contextmanager
def _named(path):
    # a file's read error, raised with the file named (pyarrow's messages name the column and row)
    try:
        yield
    except SourceError:
        raise
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise SourceError(f"{path}: cannot read: {error}") from None


def _arrays(table, source):
    # features travel in their stored type where it is 4 bytes or less (uint8 pixels: a quarter
    # of float32's bytes through the object store), else as float32; batches are float32
    if table.column(source.label_column).null_count:
        raise ValueError(f"column {source.label_column!r}: a label is empty")
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
