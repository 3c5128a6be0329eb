"""Scikit-learn's digits as the streaming sources' files, for their tests (no download): parquet
(one column per pixel, or one fixed-size list column, in row groups of a few hundred rows), a
directory of csv files, and a folder of PNG images per class."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from sklearn.datasets import load_digits


def digits(rows=slice(None)):
    """The digits' pixels (float32, 0-16, 64 a row) and labels (int64)."""
    data = load_digits()
    return data.data.astype(np.float32)[rows], data.target.astype(np.int64)[rows]


def write_digits_parquet(path, *, list_column=False, rows=slice(None), row_group_size=300):
    """Write digits (pixels 0-16, label int64) to `path`; returns the (x, y) arrays written."""
    x, y = digits(rows)
    if list_column:
        columns = {"pixels": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), x.shape[1])}
    else:
        columns = {f"p{i}": x[:, i] for i in range(x.shape[1])}
    pq.write_table(pa.table({**columns, "label": y}), path, row_group_size=row_group_size)
    return x, y


def write_digits_csv(folder, *, files=3, delimiter=",", header=True):
    """Write digits as `files` csv files in `folder` (a header p0..p63,label, or none with the label
    last); returns the (x, y) arrays written."""
    folder.mkdir(parents=True, exist_ok=True)
    x, y = digits()
    for index, rows in enumerate(np.array_split(np.arange(len(y)), files)):
        lines = [delimiter.join([f"p{i}" for i in range(x.shape[1])] + ["label"])] if header else []
        lines += [delimiter.join([*(f"{value:g}" for value in x[row]), str(y[row])]) for row in rows]
        (folder / f"part-{index}.csv").write_text("\n".join(lines) + "\n")
    return x, y


def write_digits_images(folder, *, mode="L", rows=slice(None)):
    """Write digits as PNG files, a folder per class named "c0".."c9" (pixels scaled to 0-240;
    mode "RGB" repeats them in 3 channels); returns (pixels uint8 (N, C, 8, 8), labels)."""
    x, y = digits(rows)
    pixels = (x.reshape(-1, 1, 8, 8) * 15).astype(np.uint8)
    if mode == "RGB":
        pixels = np.repeat(pixels, 3, axis=1)
    for index, (image, label) in enumerate(zip(pixels, y)):
        (folder / f"c{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(image[0] if mode == "L" else image.transpose(1, 2, 0), mode).save(folder / f"c{label}" / f"{index}.png")
    return pixels, y
