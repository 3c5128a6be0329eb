"""A streaming csv source: a directory or glob of csv files (or given split paths), checked from
each file's first line and the first rows of the first file only.

The columns are those of the in-memory `csv` source: a header line naming them (the label column
`data.label_column`, default "label") or none (the label is the last column), separated by commas,
semicolons or tabs, every feature a number. Rows are not counted without reading them: `n_rows`
is estimated from the files' sizes and the first rows' bytes, and the labels' range from the first
rows; the sweep's first pass over the data (`orchestrator.sweep.streaming`) counts both.
"""

import csv
import os

from orchestrator.config.streamed_source import (
    PROBE_ROWS,
    READ_TASK_ROWS,
    SourceError,
    StreamedSource,
    feature_layout,
    num_classes_of,
    probe_label_max,
    resolve_files,
    source_name,
)
from trainers.data import is_csv_header

CSV_SUFFIXES = (".csv", ".tsv", ".txt")
"""The file endings a directory's csv files are found by."""
CSV_BLOCK_BYTES = 1 << 20
"""Bytes of a csv file pyarrow parses at a time (a block of rows each)."""
_PROBE_BYTES = 1 << 16
_DELIMITERS = ",;\t"


def inspect_csv_files(data: dict, keys: dict, seed: int) -> StreamedSource:
    """Check a directory or glob of csv files from each file's first line and the first file's
    first rows.

    Args:
        data: the spec's `data` section as a dict.
        keys: the `data` keys naming each split's files (`streamed_source.split_keys`).
        seed: the split's seed (`train.seed`).

    Raises:
        SourceError: no file matches, a file is not UTF-8 text, its columns are separated by
            spaces, its header differs from the first file's, the label column is missing or not
            integer, a feature is not numeric, or a first label is negative or past
            `data.num_classes`.

    Example:
        >>> inspect_csv_files({"source": "csv", "path": "rows/"}, {"train": "path"}, seed=0)  # doctest: +SKIP
    """
    import pyarrow.csv as pacsv

    files = {split: resolve_files(key, data[key], CSV_SUFFIXES, "csv") for split, key in keys.items()}
    first = files["train"][0]
    delimiter, first_line = _layout(first)
    header = is_csv_header(first_line)
    if data.get("label_column") and not header:
        raise SourceError(f"{first}: data.label_column={data['label_column']!r} needs a header line, but the file has none")
    for path in (path for paths in files.values() for path in paths if header and path != first):
        line = _layout(path)[1]
        if line != first_line:
            raise SourceError(f"{path}: its header {line} differs from {first}'s {first_line}")
    options = read_options(header, len(first_line), delimiter, block_bytes=_PROBE_BYTES)
    try:
        reader = pacsv.open_csv(first, **options)
        probe = reader.read_next_batch()
    except (OSError, ValueError, StopIteration) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise SourceError(f"data.{keys['train']}: {first}: cannot read as csv: {error}") from None
    label_column = (data.get("label_column") or "label") if header else probe.schema.names[-1]
    features, input_shape = feature_layout(first, probe.schema, label_column)
    label_max = probe_label_max(probe.column(label_column).to_numpy(zero_copy_only=False)[:PROBE_ROWS], first)
    bytes_per_row = min(_PROBE_BYTES, os.path.getsize(first)) / probe.num_rows
    sizes = {split: sum(os.path.getsize(path) for path in paths) for split, paths in files.items()}
    files_per_task = max(1, round(READ_TASK_ROWS * bytes_per_row * sum(map(len, files.values())) / max(1, sum(sizes.values()))))
    return StreamedSource(
        name=source_name(data),
        format="csv",
        files=files,
        split_from_seed=keys == {"train": "path"},
        label_column=label_column,
        feature_columns=features,
        input_shape=input_shape,
        num_classes=num_classes_of(data, label_max, first),
        n_rows={split: max(1, round(size / bytes_per_row)) for split, size in sizes.items()},
        units={split: [{"path": path} for path in paths] for split, paths in files.items()},
        units_per_task=files_per_task,
        size_bytes=round(sum(sizes.values()) / bytes_per_row) * len(features) * 4,
        counted_at_start=True,
        csv_delimiter=delimiter,
        csv_header=header,
        val_fraction=data.get("val_fraction", 0.1),
        test_fraction=data.get("test_fraction", 0.2),
        seed=seed,
    )


def read_options(header: bool, n_columns: int, delimiter: str, block_bytes: int = CSV_BLOCK_BYTES, column_types=None) -> dict:
    """`pyarrow.csv.open_csv`'s options for a source's files.

    Args:
        header: whether the first line names the columns (else they are named "1", "2", ...).
        n_columns: the files' columns.
        delimiter: the column separator.
        block_bytes: bytes parsed at a time.
        column_types: {column: arrow type}, else pyarrow infers each column's type.

    Example:
        >>> sorted(read_options(True, 3, ","))
        ['convert_options', 'parse_options', 'read_options']
    """
    import pyarrow.csv as pacsv

    names = None if header else [str(index + 1) for index in range(n_columns)]
    return {
        "read_options": pacsv.ReadOptions(block_size=block_bytes, column_names=names, encoding="utf-8"),
        "parse_options": pacsv.ParseOptions(delimiter=delimiter),
        "convert_options": pacsv.ConvertOptions(column_types=column_types or {}, include_columns=list(column_types or ())),
    }


def _layout(path):
    # the delimiter and the first line's cells, from the file's first bytes
    try:
        with open(path, encoding="utf-8-sig") as file:
            text = file.read(_PROBE_BYTES)
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError(f"{path}: cannot read as csv: {error}") from None
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise SourceError(f"{path}: no rows")
    try:
        delimiter = csv.Sniffer().sniff("\n".join(lines[:20]), delimiters=_DELIMITERS).delimiter
    except csv.Error:
        delimiter = next((candidate for candidate in _DELIMITERS if candidate in lines[0]), None)
    if delimiter is None:
        raise SourceError(f"{path}: columns separated by spaces do not stream; separate them with commas, semicolons or tabs")
    return delimiter, next(csv.reader([lines[0]], delimiter=delimiter))

