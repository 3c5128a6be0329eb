"""A data set read in batches from somewhere else (Ray Data, during a sweep), never held whole.

The training loop reads a `StreamedDataset`'s splits through `BatchSource`s: anything whose
`batches(batch_size, epoch)` yields (raw rows, labels) tensors, afresh on every call. Where the
batches come from (a Ray Data shard, files, a test's list of tensors) the loop does not know.
A few rows of the training and test splits travel with it, for what needs rows at hand: an input
example, calibration rows, the latency sample.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from trainers.data import RawRows

if TYPE_CHECKING:
    import torch
    from torch import nn


class BatchSource(Protocol):
    """One split's rows, in batches, read afresh on every call."""

    def batches(self, batch_size: int, epoch: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """(raw rows float32 (B, *input_shape), labels int64 (B,)) tensors; `epoch` may seed an order."""
        ...


@dataclass
class TensorBatches:
    """A `BatchSource` over tensors in memory, in their order (for tests and small splits).

    Example:
        >>> import torch
        >>> [len(y) for _, y in TensorBatches(torch.zeros(5, 2), torch.zeros(5)).batches(2)]
        [2, 2, 1]
    """

    x: torch.Tensor
    y: torch.Tensor

    def batches(self, batch_size: int, epoch: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The rows in order, `batch_size` at a time."""
        for start in range(0, len(self.y), batch_size):
            yield self.x[start : start + batch_size], self.y[start : start + batch_size]


@dataclass
class StreamedDataset(RawRows):
    """Splits read as batch streams; the same `preprocess()` and `with_transform` as `Dataset`.

    Attributes:
        name: the data set's name.
        train, val, test: each split's `BatchSource` (train: this worker's shard of it).
        n_train, n_val, n_test: rows in each whole split.
        num_classes: the number of classes.
        x_train, y_train: the first rows of the training split (input examples, calibration).
        x_test, y_test: the first rows of the test split (the latency sample).
        input_variance: the variance of each flattened model input over the training split, under
            the data set's own preprocessing (computed once per sweep; feature selection ranks by it).
        transforms: raw rows -> model inputs, as in `Dataset`.

    Example:
        >>> import torch
        >>> from trainers.preprocess import Scale
        >>> rows = TensorBatches(torch.full((4, 3), 2.0), torch.zeros(4, dtype=torch.long))
        >>> ds = StreamedDataset("toy", rows, rows, rows, 4, 4, 4, 2, rows.x, rows.y, rows.x, rows.y,
        ...                      torch.zeros(3), (Scale(2.0),))
        >>> ds.model_input_shape, [x.max().item() for x, _ in ds.split_batches("val", 3)]
        ((3,), [2.0, 2.0])
    """

    name: str
    train: BatchSource
    val: BatchSource
    test: BatchSource
    n_train: int
    n_val: int
    n_test: int
    num_classes: int
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    input_variance: torch.Tensor
    transforms: tuple[nn.Module, ...] = ()

    def split_batches(self, split: str, batch_size: int, epoch: int = 0) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """One split's raw rows and labels, streamed `batch_size` rows at a time.

        Args:
            split: "train", "val" or "test".
            batch_size: rows per batch.
            epoch: passed to the source (it may seed the order).
        """
        return getattr(self, split).batches(batch_size, epoch)

    def train_input_variance(self) -> torch.Tensor:
        """`input_variance` (the whole training split's, computed when the sweep started)."""
        return self.input_variance

    def with_sources(self, train: BatchSource, val: BatchSource, test: BatchSource) -> StreamedDataset:
        """The same data set read from other sources (a worker's own shard of each split).

        Example:
            >>> shard = ds.with_sources(train_shard, val_stream, test_stream)  # doctest: +SKIP
        """
        return dataclasses.replace(self, train=train, val=val, test=test)
