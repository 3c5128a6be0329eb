"""Parquet files of scikit-learn's digits for the streaming tests (no download): one column per
pixel, or one fixed-size list column, in row groups of a few hundred rows."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from sklearn.datasets import load_digits


def write_digits_parquet(path, *, list_column=False, rows=slice(None), row_group_size=300):
    """Write digits (pixels 0-16, label int64) to `path`; returns the (x, y) arrays written."""
    digits = load_digits()
    x, y = digits.data.astype(np.float32)[rows], digits.target.astype(np.int64)[rows]
    if list_column:
        columns = {"pixels": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])}
    else:
        columns = {f"p{i}": x[:, i] for i in range(x.shape[1])}
    pq.write_table(pa.table({**columns, "label": y}), path, row_group_size=row_group_size)
    return x, y
