"""A streaming source, checked from file metadata and a few rows only.

What the three streaming formats share: `parquet` files (`config.parquet`), a directory or glob
of `csv` files (`config.csv_files`) and an `images` folder per class (`config.image_folders`);
`config.preflight.inspect_source` picks the format's inspection. Each resolves the paths, reads
metadata (parquet footers, csv header lines, image headers) and a few rows, names the file and
column at fault, and never reads the data set: Ray Data streams it during the sweep
(`orchestrator.sweep.streaming`), so a data set larger than memory is not refused.
"""

import glob
import os
from dataclasses import dataclass

SPLITS = ("train", "val", "test")
PROBE_ROWS = 8
"""Rows (or images) read to check the labels and the feature layout."""
READ_TASK_ROWS = 16_384
"""Rows (whole read units: row groups, files) one Ray Data read task reads: its scheduling gap
(~30 ms here) is paid per task."""


class SourceError(ValueError):
    """A source that cannot stream; the message names the file, the key and the column."""


@dataclass(frozen=True)
class StreamedSource:
    """What the sweep streams, as found in the files' metadata.

    Attributes:
        name: the data set's name (the format, ":" and the path's last part).
        format: "parquet", "csv" or "images": which reader `orchestrator.sweep.source_reads` uses.
        files: the files of each split by name ("train", "val", "test"); with `split_from_seed`,
            all files under "train".
        split_from_seed: whether rows are assigned to splits by a seeded hash of their values as
            they are read (parquet and csv with one `data.path`); False where each split's files
            are known: given, or (images) each file's split hashed from its path at inspection.
        label_column: the label column (for images, "label": the class folder's index).
        feature_columns: numeric feature columns in order, or the one list column (images: "image").
        input_shape: one raw example's shape.
        num_classes: from the spec, else the labels found (for csv, at least: see `counted_at_start`).
        n_rows: rows in each split's files (with `split_from_seed`: all rows under "train"); for
            csv an estimate from the files' sizes.
        units: each split's read units, the items Ray Data's read tasks take (a parquet row
            group, a csv file, an image file), as dicts.
        units_per_task: read units one Ray Data task reads.
        size_bytes: the data set's size as its rows are read (uncompressed, decoded).
        classes_from_spec: whether `num_classes` is the spec's `data.num_classes`.
        counted_at_start: whether `n_rows` and `num_classes` are estimates that the sweep's first
            pass over the data replaces (csv: rows are not counted without reading them).
        csv_delimiter: csv only: the column separator.
        csv_header: csv only: whether each file's first line names the columns.
        class_names: images only: the class folders' names, in label order.
        image_mode: images only: the PIL mode every image is converted to ("L" or "RGB").
        val_fraction, test_fraction, seed: the split made from the seed.

    Example:
        >>> source = inspect_source({"source": "parquet", "path": "data/"}, seed=0)  # config.preflight  # doctest: +SKIP
        >>> source.input_shape, source.num_classes  # doctest: +SKIP
        ((784,), 10)
    """

    name: str
    format: str
    files: dict
    split_from_seed: bool
    label_column: str
    feature_columns: tuple
    input_shape: tuple
    num_classes: int
    n_rows: dict
    units: dict
    units_per_task: int
    size_bytes: int
    classes_from_spec: bool = False
    counted_at_start: bool = False
    csv_delimiter: str = ","
    csv_header: bool = True
    class_names: tuple = ()
    image_mode: str = ""
    val_fraction: float = 0.1
    test_fraction: float = 0.2
    seed: int = 0

    @property
    def n_val(self) -> int:
        """Validation rows: the files' count, or (split from the seed) the expected count."""
        return self.n_rows["val"] if not self.split_from_seed else round(self.n_rows["train"] * self.val_fraction)

    @property
    def n_test(self) -> int:
        """Test rows: the files' count, or (split from the seed) the expected count."""
        return self.n_rows["test"] if not self.split_from_seed else round(self.n_rows["train"] * self.test_fraction)

    @property
    def n_train(self) -> int:
        """Training rows: the files' count, or (split from the seed) the expected count."""
        return self.n_rows["train"] - (self.n_val + self.n_test if self.split_from_seed else 0)

    @property
    def list_column(self) -> bool:
        """Whether the features are one list column (an image) rather than scalar columns."""
        return self.input_shape != (len(self.feature_columns),)


def split_keys(data: dict) -> dict:
    """The `data` keys that name each split's files: {"train": "path"} for a split made from the
    seed, else each split's `{split}_path`.

    Raises:
        SourceError: both `path` and split paths, only some split paths, or none of either.

    Example:
        >>> split_keys({"path": "rows/"})
        {'train': 'path'}
    """
    given = [split for split in SPLITS if data.get(f"{split}_path")]
    if given and data.get("path"):
        raise SourceError("give either data.path (split from the seed) or data.train_path, val_path and test_path")
    if given and len(given) < len(SPLITS):
        missing = ", ".join(f"data.{split}_path" for split in SPLITS if split not in given)
        raise SourceError(f"{missing} missing: give all three split paths, or data.path alone")
    if not given and not data.get("path"):
        raise SourceError(f"data.path (or data.train_path, val_path and test_path) is required for source {data['source']!r}")
    return {split: f"{split}_path" for split in SPLITS} if given else {"train": "path"}


def resolve_files(key: str, path: str, suffixes: tuple, kind: str) -> list:
    """The files a `data` path names: a file, every file ending in one of `suffixes` under a
    directory (recursively), or a glob's files, sorted.

    Args:
        key: the `data` key holding the path, named in the message.
        path: the path.
        suffixes: the file endings a directory's files are taken by (lower case).
        kind: what the files are, named in the message ("parquet", "csv").

    Raises:
        SourceError: nothing matches.

    Example:
        >>> resolve_files("path", "no/such/dir", (".csv",), "csv")
        Traceback (most recent call last):
        ...
        orchestrator.config.streamed_source.SourceError: data.path 'no/such/dir' matches no csv file
    """
    if os.path.isdir(path):
        found = sorted(
            os.path.join(folder, name)
            for folder, _, names in os.walk(path)
            for name in names
            if name.lower().endswith(suffixes)
        )
    elif glob.has_magic(path):
        found = sorted(name for name in glob.glob(path, recursive=True) if os.path.isfile(name))
    else:
        found = [path] if os.path.isfile(path) else []
    if not found:
        raise SourceError(f"data.{key} {path!r} matches no {kind} file")
    return found


def source_name(data: dict) -> str:
    """The data set's name: the format and the path's last part, e.g. "csv:rows".

    Example:
        >>> source_name({"source": "csv", "path": "/data/rows/"})
        'csv:rows'
    """
    return f"{data['source']}:{os.path.basename(os.path.normpath(data.get('path') or data['train_path']))}"


def num_classes_of(data: dict, label_max: int, where: str) -> int:
    """The number of classes: `data.num_classes` when given (checked against the largest label
    seen), else the largest label + 1.

    Args:
        data: the spec's `data` section.
        label_max: the largest label seen.
        where: the file (or files) the labels come from, named in the message.

    Raises:
        SourceError: a label is past `data.num_classes`, or fewer than 2 classes.

    Example:
        >>> num_classes_of({}, 9, "rows.csv")
        10
    """
    num_classes = data.get("num_classes") or label_max + 1
    if label_max >= num_classes:
        raise SourceError(f"{where}: label {label_max} is past data.num_classes={num_classes} (labels run 0 to {num_classes - 1})")
    if num_classes < 2:
        raise SourceError(f"{where}: found only {num_classes} class; a classifier needs at least 2")
    return num_classes


def feature_layout(path: str, schema, label_column: str) -> tuple:
    """The feature columns and one example's shape, from a file's arrow schema: every column but
    the label, numeric, or one fixed-size list column of numbers (an image stored flat).

    Args:
        path: the file the schema is from, named in the message.
        schema: its `pyarrow.Schema`.
        label_column: the label column's name.

    Returns:
        (feature column names, input shape).

    Raises:
        SourceError: the label column is missing or not integer, or a feature is not numeric.

    Example:
        >>> import pyarrow as pa
        >>> feature_layout("rows.csv", pa.schema({"a": pa.float64(), "label": pa.int64()}), "label")
        (('a',), (1,))
    """
    import pyarrow as pa

    if label_column not in schema.names:
        raise SourceError(f"{path}: data.label_column={label_column!r} is not a column; columns: {', '.join(schema.names)}")
    if not pa.types.is_integer(schema.field(label_column).type):
        raise SourceError(f"{path}: label column {label_column!r} is {schema.field(label_column).type}, expected integers")
    fields = [field for field in schema if field.name != label_column]
    if len(fields) == 1 and pa.types.is_fixed_size_list(fields[0].type):
        value_type = fields[0].type.value_type
        if not (pa.types.is_integer(value_type) or pa.types.is_floating(value_type)):
            raise SourceError(f"{path}: column {fields[0].name!r} holds {value_type}, expected numbers")
        return (fields[0].name,), (fields[0].type.list_size,)
    for field in fields:
        if not (pa.types.is_integer(field.type) or pa.types.is_floating(field.type) or pa.types.is_boolean(field.type)):
            raise SourceError(
                f"{path}: column {field.name!r} is {field.type}; features must be numeric columns, "
                "or one fixed-size list column"
            )
    if not fields:
        raise SourceError(f"{path}: no feature columns besides the label {label_column!r}")
    return tuple(field.name for field in fields), (len(fields),)


def probe_label_max(labels, path: str) -> int:
    """The largest of a file's first labels, checked: some rows, none negative.

    Raises:
        SourceError: no rows, or a negative label.

    Example:
        >>> import numpy as np
        >>> probe_label_max(np.array([0, 3, 1]), "rows.csv")
        3
    """
    if len(labels) == 0:
        raise SourceError(f"{path}: no rows")
    if (labels < 0).any():
        raise SourceError(f"{path}: label {int(labels[labels < 0][0])} is negative")
    return int(labels.max())
