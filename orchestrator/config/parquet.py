"""A streaming parquet source, checked from its files' footers and a few rows only.

`inspect_parquet` resolves the split paths (a file, a directory or a glob each), reads every
file's footer (schema, row counts, the label column's min/max statistics) and the first few rows
of the first file, and names the file and column at fault; its size is estimated from the footers.
A Ray Data task reads whole row groups (`READ_TASK_ROWS` rows or so).
"""

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


def inspect_parquet(data: dict, keys: dict, seed: int) -> StreamedSource:
    """Check a parquet source from its footers and first rows, without reading the data set.

    Args:
        data: the spec's `data` section as a dict.
        keys: the `data` keys naming each split's files (`streamed_source.split_keys`).
        seed: the split's seed (`train.seed`).

    Raises:
        SourceError: no file matches, a file is not parquet, schemas differ, the label column
            is missing or not integer, a feature column is not numeric, or a label is negative
            or past `data.num_classes`.

    Example:
        >>> inspect_parquet({"source": "parquet", "path": "rows/"}, {"train": "path"}, seed=0)  # doctest: +SKIP
    """
    import pyarrow.parquet as pq

    files = {split: resolve_files(key, data[key], (".parquet",), "parquet") for split, key in keys.items()}
    label_column = data.get("label_column") or "label"
    footers = {path: _footer(pq, key, path) for split, key in keys.items() for path in files[split]}
    first = files["train"][0]
    schema = footers[first].schema.to_arrow_schema()
    for path, footer in footers.items():
        if not footer.schema.to_arrow_schema().equals(schema):
            raise SourceError(f"{path}: its columns {footer.schema.names} differ from {first}'s {schema.names}")
    features, input_shape = feature_layout(first, schema, label_column)
    label_max = _check_labels(pq, first, footers, label_column, features)
    n_rows = {split: sum(footers[path].num_rows for path in paths) for split, paths in files.items()}
    groups = sum(footer.num_row_groups for footer in footers.values())
    return StreamedSource(
        name=source_name(data),
        format="parquet",
        files=files,
        split_from_seed=keys == {"train": "path"},
        label_column=label_column,
        feature_columns=features,
        input_shape=input_shape,
        num_classes=num_classes_of(data, label_max, first),
        n_rows=n_rows,
        units={split: [{"path": path, "group": group} for path in paths for group in range(footers[path].num_row_groups)] for split, paths in files.items()},
        units_per_task=max(1, round(READ_TASK_ROWS / (sum(n_rows.values()) / max(1, groups)))),
        size_bytes=sum(_uncompressed_bytes(footer) for footer in footers.values()),
        val_fraction=data.get("val_fraction", 0.1),
        test_fraction=data.get("test_fraction", 0.2),
        seed=seed,
    )


def _footer(pq, key, path):
    try:
        return pq.read_metadata(path)
    except (OSError, ValueError) as error:  # pyarrow's ArrowInvalid is a ValueError
        raise SourceError(f"data.{key}: {path}: not a readable parquet file: {error}") from None


def _check_labels(pq, first, footers, label_column, features):
    table = next(pq.ParquetFile(first).iter_batches(batch_size=PROBE_ROWS, columns=[label_column, *features]))
    label_max = probe_label_max(table.column(label_column).to_numpy(zero_copy_only=False), first)
    for path, footer in footers.items():
        column = footer.schema.names.index(label_column)
        for group in range(footer.num_row_groups):
            stats = footer.row_group(group).column(column).statistics
            if stats is None or not stats.has_min_max:
                continue
            if stats.min < 0:
                raise SourceError(f"{path}: label {stats.min} is negative (row group {group})")
            label_max = max(label_max, int(stats.max))
    return label_max


def _uncompressed_bytes(footer):
    return sum(footer.row_group(group).total_byte_size for group in range(footer.num_row_groups))
