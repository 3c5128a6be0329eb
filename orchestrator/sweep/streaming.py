"""A streamed source (parquet, csv files, image folders) read with Ray Data: the splits, the
sweep's statistics, each worker's shard.

`open_streamed` turns the pre-flight's `StreamedSource` into a `trainers.streamed.StreamedDataset`
whose splits are lazy Ray Datasets (read afresh every epoch, never materialised): given split files
are read as they are; one `data.path` is split row by row by a seeded hash of each row's values,
so every pass assigns a row to the same split. The standardisation's means and deviations (and
the variance feature selection ranks by) are computed once, by a Ray Data pass over the training
split (which also counts the rows and finds the labels' range, where the metadata cannot), and go
into the exported graph as for the in-memory sources. A worker of an N-worker trial
reads its own shard (`trial_dataset`, `ray.train.get_dataset_shard`); validation and test are
streamed whole to each worker.
"""

import contextlib
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
import ray.data
import ray.train
import torch

from orchestrator.config.schema import SpecError
from orchestrator.config.streamed_source import SPLITS, SourceError, StreamedSource
from orchestrator.sweep import source_reads
from trainers.preprocess import Standardise
from trainers.streamed import StreamedDataset

logger = logging.getLogger(__name__)

SAMPLE_ROWS = 256
"""Rows of the training and test splits that travel with the data set (examples, calibration, latency)."""
READ_OBJECT_STORE_BYTES = 256 * 2**20
"""Object-store bytes one read of a split (a trial's, a worker's) may hold in blocks in flight."""
PREFETCH_BLOCKS = 2
"""Blocks (`source_reads.slice_rows` rows each, fewer where a split keeps part of them) a trial's
training split holds read ahead of its training loop."""
SHUFFLE_BUFFER_ROWS = 2048
"""Training rows (at least; whole blocks) a trial shuffles together each epoch."""


@dataclass
class RayBatches:
    """A `trainers.streamed.BatchSource` over a Ray Dataset (a validation or test split, or the
    sweep's whole training split), read afresh on every call.

    Attributes:
        data: the `ray.data.Dataset` (or any object with `iter_torch_batches`).
        shuffle_seed: None keeps the stored order; else each epoch shuffles locally, seeded
            with it and the epoch.
    """

    data: Any
    shuffle_seed: int | None = None

    def batches(self, batch_size: int, epoch: int = 0):
        """(rows float32, labels int64) tensors, `batch_size` rows at a time, streamed."""
        return _batches_of(self.data.iter_torch_batches(batch_size=None, device="cpu"), batch_size, self.shuffle_seed, epoch)


class PrefetchedEpochs:
    """A `trainers.streamed.BatchSource` over a training split (a 1-worker trial's Ray Dataset, or
    a worker's `DataIterator` shard), read ahead by a thread: the trial's epochs in turn, up to
    PREFETCH_BLOCKS blocks ahead, so an epoch's first blocks are read while the model is built or
    the last epoch is validated, not on its first step. `close()` (or the end of its `with` block)
    stops it.

    Args:
        data: the Dataset or `DataIterator`.
        shuffle_seed: each epoch's local shuffle is seeded with it and the epoch.
        epochs: the epochs the trial trains, in order (a resumed trial's start at its checkpoint).

    Example:
        >>> with PrefetchedEpochs(split_dataset(source, "train"), 0, range(3)) as train:  # doctest: +SKIP
        ...     first_epoch = list(train.batches(64, 0))
    """

    def __init__(self, data, shuffle_seed: int, epochs: range):
        self.shuffle_seed, self.epochs = shuffle_seed, epochs
        self._read_blocks: queue.Queue = queue.Queue(PREFETCH_BLOCKS)
        self._closed = threading.Event()
        self._reader = threading.Thread(target=self._read, args=(data,), name="accelsweep-prefetch", daemon=True)
        self._reader.start()

    def batches(self, batch_size: int, epoch: int = 0):
        """One epoch's (rows float32, labels int64) tensors, `batch_size` rows at a time."""
        if epoch not in self.epochs:
            raise ValueError(f"epoch {epoch} is not one this trial reads ({self.epochs})")
        return _batches_of(self._blocks(epoch), batch_size, self.shuffle_seed, epoch)

    def close(self) -> None:
        """Stop reading ahead (a trial that stops early leaves its later epochs unread)."""
        self._closed.set()
        self._reader.join()

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()

    def _read(self, data):
        try:
            for epoch in self.epochs:
                for block in data.iter_torch_batches(batch_size=None, device="cpu"):
                    if not self._put((epoch, block)):
                        return
                if not self._put((epoch, None)):  # the epoch's end
                    return
        except Exception as error:  # raised where the trial reads
            self._put((None, error))

    def _put(self, item):
        while not self._closed.is_set():
            try:
                self._read_blocks.put(item, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def _blocks(self, epoch):
        while True:
            read_epoch, block = self._read_blocks.get()
            if read_epoch is None:
                raise block
            if read_epoch > epoch:
                raise RuntimeError(f"epoch {epoch} was asked for after epoch {read_epoch} was read")
            if read_epoch == epoch:
                if block is None:
                    return
                yield block
            # an earlier epoch's rest, left by a reader that stopped: skipped


def _batches_of(blocks, batch_size, shuffle_seed, epoch):
    # whole blocks from Ray Data, shuffled and sliced here, seeded per epoch: faster than Ray's
    # re-batching and local shuffle (benchmarks/README.md)
    generator = None if shuffle_seed is None else torch.Generator().manual_seed(shuffle_seed * 100_003 + epoch)
    buffer_rows = batch_size if generator is None else max(batch_size, SHUFFLE_BUFFER_ROWS)
    x, y = torch.empty(0), torch.empty(0, dtype=torch.int64)
    for block in blocks:
        x, y = torch.cat([x, block["x"]]) if len(y) else block["x"], torch.cat([y, block["y"]])
        if len(y) >= buffer_rows:
            x, y = _shuffled(x, y, generator)
            whole = len(y) - len(y) % batch_size
            yield from _slices(x[:whole], y[:whole], batch_size)
            x, y = x[whole:], y[whole:]
    yield from _slices(*_shuffled(x, y, generator), batch_size)


def _shuffled(x, y, generator):
    if generator is None:
        return x, y
    order = torch.randperm(len(y), generator=generator)
    return x[order], y[order]


def _slices(x, y, batch_size):
    for start in range(0, len(y), batch_size):
        yield x[start : start + batch_size].float(), y[start : start + batch_size]


def sweep_data(data, spec_path: str):
    """The data set the trials read: a `StreamedSource` opened for streaming (`open_streamed`; Ray
    must be connected), any other data set as it is.

    Example:
        >>> data = sweep_data(load_data(spec, spec_path), spec_path)  # doctest: +SKIP
    """
    return open_streamed(data, spec_path) if isinstance(data, StreamedSource) else data


def open_streamed(source: StreamedSource, spec_path: str) -> StreamedDataset:
    """The sweep's streamed data set: lazy Ray Datasets of each split, statistics computed once.

    Args:
        source: the pre-flight's `StreamedSource`.
        spec_path: the spec's file, named in messages.

    Returns:
        A StreamedDataset whose `train`, `val` and `test` are `RayBatches` over whole splits, with
        the training split's standardisation as its transform.

    Raises:
        SpecError: a file cannot be read, a feature is not a finite number, a label is negative
            or past `data.num_classes`, or a split has no rows (the file or split is named).

    Example:
        >>> data = open_streamed(inspect_source({"source": "parquet", "path": "rows.parquet"}, seed=0), "spec.yaml")  # doctest: +SKIP
        >>> data.n_train + data.n_val + data.n_test  # doctest: +SKIP
        1000
    """
    # Ray Data logs its progress at INFO on its own logger, and a failed read task's traceback at
    # ERROR (the error itself reaches the user as one line, from here): -v shows both
    verbose = logging.getLogger("ray").getEffectiveLevel() <= logging.INFO
    logging.getLogger("ray.data").setLevel(logging.INFO if verbose else logging.CRITICAL)
    datasets = {split: split_dataset(source, split) for split in SPLITS}
    counts, mean, std, num_classes = _statistics(source, spec_path)
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
        num_classes,
        x_train,
        y_train,
        x_test,
        y_test,
        torch.from_numpy(variance.reshape(-1)),
        (Standardise(torch.from_numpy(mean.reshape(source.input_shape)), torch.from_numpy(std.reshape(source.input_shape))),),
    )
    logger.info("streamed %s: %d train / %d val / %d test rows", source.name, *counts)
    return data


def split_dataset(source: StreamedSource, split: str) -> ray.data.Dataset:
    """One split as a lazy Ray Dataset of {"x": rows (float32, or their stored type where it is
    4 bytes or less), "y": int64 labels}.

    Args:
        source: the streamed source.
        split: "train", "val" or "test".

    Example:
        >>> split_dataset(source, "val").take_batch(2)["x"].shape  # doctest: +SKIP
        (2, 784)
    """
    dataset = source_reads.read(source, "train" if source.split_from_seed else split, source_reads.model_rows, fn_args=(split,))
    options = dataset.context.execution_options
    options.preserve_order = True  # the same batches on every run of a seed
    # Ray Data's own bound is a share of the object store (GBs here) per read: blocks in flight
    # are what a read holds, so hold a few
    options.resource_limits = ray.data.ExecutionResources.for_limits(object_store_memory=READ_OBJECT_STORE_BYTES)
    return dataset


@contextlib.contextmanager
def trial_dataset(data: StreamedDataset, seed: int, epochs: range, in_worker_group: bool = False):
    """A trial's view of the sweep's data set, open while the trial trains: its training split
    read ahead (`PrefetchedEpochs`). A 1-worker trial reads the training split's Ray Dataset
    itself (Ray Data's executor runs in its process and starts at once, where a `streaming_split`
    of one would first start a coordinator actor, ~3 s here); a Ray Train worker
    (`in_worker_group`) reads its own shard and the whole validation and test splits from
    `ray.train.get_dataset_shard` (see `train_datasets`).

    Args:
        data: the sweep's StreamedDataset.
        seed: the trial's seed (the local shuffle's).
        epochs: the epochs the trial trains.
        in_worker_group: whether this is a worker of an N-worker trial.

    Example:
        >>> with trial_dataset(ray.get(data_ref[0]), recipe.seed, range(recipe.epochs)) as data:  # doctest: +SKIP
        ...     train_trial(recipe, data, report)
    """
    train, val, test = data.train.data, data.val, data.test
    if in_worker_group:
        shards = {split: ray.train.get_dataset_shard(split) for split in SPLITS}
        train, val, test = shards["train"], RayBatches(shards["val"]), RayBatches(shards["test"])
    with PrefetchedEpochs(train, seed, epochs) as read_ahead:
        yield data.with_sources(read_ahead, val, test)


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


def _statistics(source, spec_path):
    # one Ray Data pass: per-block row counts of each split, the training rows' sums and the
    # labels' range; the driver adds up one small row per block. Split files whose rows the
    # metadata does not count (csv) get a counting pass of their own
    passes = {"train": _sums(source, "train", spec_path)}
    if source.counted_at_start and not source.split_from_seed:
        passes |= {split: _sums(source, split, spec_path) for split in ("val", "test")}
    where = f"{spec_path}: data: {source.name}"
    counts = passes["train"]["counts"]
    if not source.split_from_seed:
        counts = np.array([counts[0], *(passes[split]["counts"][0] if split in passes else source.n_rows[split] for split in ("val", "test"))])
    if min(counts) < 1:
        raise SpecError(f"{where}: a split has no rows ({dict(zip(SPLITS, counts.tolist()))})")
    label_min, label_max = min(sums["label_min"] for sums in passes.values()), max(sums["label_max"] for sums in passes.values())
    if label_min < 0:
        raise SpecError(f"{where}: label {label_min} is negative")
    if label_max >= source.num_classes and source.classes_from_spec:
        raise SpecError(f"{where}: label {label_max} is past data.num_classes={source.num_classes} (labels run 0 to {source.num_classes - 1})")
    num_classes = max(source.num_classes, label_max + 1)  # csv: the first rows' labels were a lower bound
    mean = passes["train"]["sum"] / counts[0]
    std = np.sqrt(np.maximum(passes["train"]["squares"] / counts[0] - mean**2, 0.0))
    return counts.tolist(), mean.astype(np.float32), std.astype(np.float32), num_classes


def _sums(source, split, spec_path):
    totals = {"counts": np.zeros(len(SPLITS), np.int64), "sum": 0.0, "squares": 0.0, "label_min": 0, "label_max": 0}
    try:
        for batch in source_reads.read(source, split, source_reads.partial_sums).iter_batches(batch_format="numpy", batch_size=None):
            totals["counts"] += batch["counts"].sum(axis=0)
            totals["sum"] = totals["sum"] + batch["sum"].sum(axis=0)
            totals["squares"] = totals["squares"] + batch["squares"].sum(axis=0)
            totals["label_min"] = min(totals["label_min"], int(batch["label_min"].min()))
            totals["label_max"] = max(totals["label_max"], int(batch["label_max"].max()))
    except Exception as error:  # a read task's SourceError comes wrapped in Ray's errors
        cause = _source_error_in(error)
        if cause is None:
            raise
        raise SpecError(f"{spec_path}: data: {str(cause).splitlines()[0]}") from None  # Ray Data appends its retry advice
    return totals


def _source_error_in(error):
    # Ray wraps a task's exception (RayTaskError, itself an instance of the exception's type, and
    # Ray Data's UserCodeException): the deepest SourceError along the chain of causes, if any
    found, seen = None, set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        found = error if isinstance(error, SourceError) else found
        error = getattr(error, "cause", None) or error.__cause__ or error.__context__
    return found


def _first_rows(dataset):
    batch = dataset.take_batch(SAMPLE_ROWS, batch_format="numpy")
    return torch.from_numpy(np.array(batch["x"], dtype=np.float32)), torch.from_numpy(np.array(batch["y"]))
