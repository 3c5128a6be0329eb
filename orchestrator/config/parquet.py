"""A streaming parquet source, checked from file metadata and a few rows only.

`inspect_parquet` resolves `data.path` (a file, a directory or a glob; or `train_path`, `val_path`
and `test_path` each), reads every file's footer (schema, row counts, the label column's min/max
statistics) and the first few rows of the first file, and names the file and column at fault. It
never reads the data set: Ray Data streams it during the sweep (`orchestrator.sweep.streaming`),
so a data set larger than memory is not refused; its size is estimated from the footers.
"""

import glob
import logging
import os
from dataclasses import dataclass

logger = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
PROBE_ROWS = 8
"""Rows read from the first file to check the labels and the feature layout."""


class ParquetError(ValueError):
    """A parquet source that cannot stream; the message names the file, the key and the column."""


@dataclass(frozen=True)
class ParquetSource:
    """What the sweep streams, as found in the files' metadata.

    Attributes:
        name: the data set's name ("parquet:" and the path's last part).
        files: the files of each split by name ("train", "val", "test"); with one `data.path`,
            all files under "train" and `split_from_seed` True (rows are assigned by a seeded hash).
        split_from_seed: whether the splits are made from the seed rather than given.
        label_column: the label column.
        feature_columns: numeric feature columns in order, or the one fixed-size list column.
        input_shape: one raw example's shape.
        num_classes: from the spec, else the label statistics' maximum + 1.
        n_rows: rows in each split's files (with `split_from_seed`: all rows under "train").
        row_groups: each split's (file, row group index) pairs, the units Ray Data reads.
        size_bytes: the files' uncompressed size, from their footers.
        val_fraction, test_fraction, seed: the split made from the seed.

    Example:
        >>> source = inspect_parquet({"path": "data/"}, seed=0)  # doctest: +SKIP
        >>> source.input_shape, source.num_classes  # doctest: +SKIP
        ((784,), 10)
    """

    name: str
    files: dict
    split_from_seed: bool
    label_column: str
    feature_columns: tuple
    input_shape: tuple
    num_classes: int
    n_rows: dict
    row_groups: dict
    size_bytes: int
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    @property
    def n_val(self) -> int:
        """Validation rows: the file's count, or (split from the seed) the expected count."""
        return self.n_rows["val"] if not self.split_from_seed else round(self.n_rows["train"] * self.val_fraction)

    @property
    def n_test(self) -> int:
        """Test rows: the file's count, or (split from the seed) the expected count."""
        return self.n_rows["test"] if not self.split_from_seed else round(self.n_rows["train"] * self.test_fraction)

    @property
    def n_train(self) -> int:
        """Training rows: the file's count, or (split from the seed) the expected count."""
        return self.n_rows["train"] - (self.n_val + self.n_test if self.split_from_seed else 0)

    @property
    def list_column(self) -> bool:
        """Whether the features are one fixed-size list column (images) rather than scalar columns."""
        return self.input_shape != (len(self.feature_columns),)


def inspect_parquet(data: dict, seed: int) -> ParquetSource:
    """Check a parquet source from its footers and first rows, without reading the data set.

    Args:
        data: the spec's `data` section as a dict (path or train_path/val_path/test_path,
            label_column, num_classes, val_fraction, test_fraction).
        seed: the split's seed (`train.seed`).

    Returns:
        The ParquetSource.

    Raises:
        ParquetError: no file matches, a file is not parquet, schemas differ, the label column
            is missing or not integer, a feature column is not numeric, or a label is negative.

    Example:
        >>> inspect_parquet({"path": "no/such/dir"}, seed=0)
        Traceback (most recent call last):
        ...
        orchestrator.config.parquet.ParquetError: data.path 'no/such/dir' matches no parquet file
    """
    import pyarrow.parquet as pq

    given = [split for split in SPLITS if data.get(f"{split}_path")]
    if given and data.get("path"):
        raise ParquetError("give either data.path (split from the seed) or data.train_path, val_path and test_path")
    if given and len(given) < len(SPLITS):
        missing = ", ".join(f"data.{split}_path" for split in SPLITS if split not in given)
        raise ParquetError(f"{missing} missing: give all three split paths, or data.path alone")
    if not given and not data.get("path"):
        raise ParquetError("data.path (or data.train_path, val_path and test_path) is required for source 'parquet'")
    keys = {split: f"{split}_path" for split in SPLITS} if given else {"train": "path"}
    files = {split: _resolve(key, data[key]) for split, key in keys.items()}
    label_column = data.get("label_column") or "label"
    footers = {path: _footer(pq, key, path) for split, key in keys.items() for path in files[split]}
    first = files["train"][0]
    schema = footers[first].schema.to_arrow_schema()
    for path, footer in footers.items():
        if not footer.schema.to_arrow_schema().equals(schema):
            raise ParquetError(f"{path}: its columns {footer.schema.names} differ from {first}'s {schema.names}")
    features, input_shape = _features(first, schema, label_column)
    label_max = _check_labels(pq, first, footers, label_column, features)
    num_classes = data.get("num_classes") or label_max + 1
    if num_classes < 2:
        raise ParquetError(f"{first}: found only {num_classes} class; a classifier needs at least 2")
    source = ParquetSource(
        name=f"parquet:{os.path.basename(os.path.normpath(data.get('path') or data['train_path']))}",
        files=files,
        split_from_seed=not given,
        label_column=label_column,
        feature_columns=features,
        input_shape=input_shape,
        num_classes=num_classes,
        n_rows={split: sum(footers[path].num_rows for path in paths) for split, paths in files.items()},
        row_groups={split: [(path, group) for path in paths for group in range(footers[path].num_row_groups)] for split, paths in files.items()},
        size_bytes=sum(_uncompressed_bytes(footer) for footer in footers.values()),
        val_fraction=data.get("val_fraction", 0.1),
        test_fraction=data.get("test_fraction", 0.2),
        seed=seed,
    )
    logger.info("parquet source %s: %s rows, ~%d bytes uncompressed, streamed", source.name, source.n_rows, source.size_bytes)
    return source


def _resolve(key, path):
    if os.path.isdir(path):
        found = sorted(glob.glob(os.path.join(path, "**", "*.parquet"), recursive=True))
    elif glob.has_magic(path):
        found = sorted(name for name in glob.glob(path, recursive=True) if os.path.isfile(name))
    else:
        found = [path] if os.path.isfile(path) else []
    if not found:
        raise ParquetError(f"data.{key} {path!r} matches no parquet file")
    return found


def _footer(pq, key, path):
    try:
        return pq.read_metadata(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise ParquetError(f"data.{key}: {path}: not a readable parquet file: {error}") from None


def _features(path, schema, label_column):
    import pyarrow as pa

    if label_column not in schema.names:
        raise ParquetError(f"{path}: data.label_column={label_column!r} is not a column; columns: {', '.join(schema.names)}")
    if not pa.types.is_integer(schema.field(label_column).type):
        raise ParquetError(f"{path}: label column {label_column!r} is {schema.field(label_column).type}, expected integers")
    fields = [field for field in schema if field.name != label_column]
    if len(fields) == 1 and pa.types.is_fixed_size_list(fields[0].type):
        value_type = fields[0].type.value_type
        if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
            raise ParquetError(f"{path}: column {fields[0].name!r} holds {value_type}, expected numbers")
        return (fields[0].name,), (fields[0].type.list_size,)
    for field in fields:
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_boolean(field.type)):
            raise ParquetError(
                f"{path}: column {field.name!r} is {field.type}; features must be numeric columns, "
                "or one fixed-size list column"
            )
    if not fields:
        raise ParquetError(f"{path}: no feature columns besides the label {label_column!r}")
    return tuple(field.name for field in fields), (len(fields),)


def _check_labels(pq, first, footers, label_column, features):
    table = next(pq.ParquetFile(first).iter_batches(batch_size=PROBE_ROWS, columns=[label_column, *features]))
    labels = table.column(label_column).to_numpy(zero_copy_only=False)
    if len(labels) == 0:
        raise ParquetError(f"{first}: no rows")
    if (labels < 0).any():
        raise ParquetError(f"{first}: label {int(labels[labels < 0][0])} is negative")
    label_max = int(labels.max())
    for path, footer in footers.items():
        column = footer.schema.names.index(label_column)
        for group in range(footer.num_row_groups):
            stats = footer.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                continue
            if stats.min < 0:
                raise ParquetError(f"{path}: label {stats.min} is negative (row group {group})")
            label_max = max(label_max, int(stats.max))
    return label_max


def _uncompressed_bytes(footer):
    return sum(footer.row_group(group).total_byte_size for group in range(footer.num_row_groups))
