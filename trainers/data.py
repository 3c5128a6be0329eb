"""Load a data set into train/validation/test tensors, with clear errors for bad files.

Sources: scikit-learn's shipped ``digits``, MNIST-format ``idx`` directories (Fashion-MNIST from
Debian's ``dataset-fashion-mnist`` lives in ``/usr/share/datasets/fashion-mnist/``), numeric
``csv``, ``npz`` arrays, tab-separated ``text`` and ``synthetic`` classification data. Nothing is
downloaded.
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import io
import logging
import math
import re
import stat
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainers.sizes import too_large

if TYPE_CHECKING:  # torch and scikit-learn load when data is loaded: `SOURCES` stays cheap to import
    import torch
    from torch import nn

logger = logging.getLogger(__name__)

SOURCES = ("digits", "idx", "csv", "npz", "text", "synthetic")
STREAMING_SOURCES = ("parquet", "images")
"""Sources read by Ray Data during the sweep, never loaded whole (`orchestrator.sweep.streaming`);
`csv` streams too when its path is a directory or a glob."""
TEXT_ENCODINGS = ("bag", "tokens")
_FILE_SOURCES = ("idx", "csv", "npz", "text")
_STANDARDISED_SOURCES = ("csv", "npz", "text", "synthetic")
_PIXEL_MAXIMA = {"digits": 16.0, "idx": 255.0}  # images are scaled from their stored range to [0, 1]
_IDX_IMAGES_MAGIC = 2051  # unsigned bytes, 3 dimensions
_IDX_LABELS_MAGIC = 2049  # unsigned bytes, 1 dimension
_WORD = re.compile(r"\w+")
MAX_CLASSES = 1_000_000
"""Labels run from 0 to classes - 1: a label past this is a wrong column or a corrupt file, not a class."""
_CSV_DELIMITERS = {",": "commas", ";": "semicolons", "\t": "tabs"}
_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class DataError(ValueError):
    """Bad or missing data; the message names the file and what is wrong."""


class RawRows:
    """What every data set shares: raw rows in, `transforms` to the model's inputs.

    A subclass holds `x_train` (its training rows, or a sample of them), `x_test` (its test rows,
    or the first of them), `num_classes` and `transforms`, and says how to read a split in
    batches (`split_batches`) and the variance of its training inputs (`train_input_variance`).
    """

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one raw example (what a deployable takes), without the batch dimension."""
        return tuple(self.x_train.shape[1:])

    @property
    def model_input_shape(self) -> tuple[int, ...]:
        """Shape of one example after `transforms` (what the model reads), without the batch dimension."""
        return tuple(self.model_inputs(self.x_train[:1]).shape[1:])

    def preprocess(self) -> nn.Sequential:
        """The transforms as one module, raw rows in, model inputs out (identity when there are none).

        Example:
            >>> ds = load_dataset("digits")
            >>> ds.preprocess()(ds.x_test).equal(ds.preprocessed().x_test)
            True
        """
        from torch import nn

        return nn.Sequential(*self.transforms)

    def with_transform(self, transform: nn.Module):
        """The same raw rows, read through one more transform after the existing ones.

        Args:
            transform: maps the current model inputs to new ones (e.g. selects features).

        Returns:
            A new data set of the same kind sharing the split tensors.

        Example:
            >>> import torch
            >>> from trainers.techniques.feature_select import SelectFeatures
            >>> ds = load_dataset("digits")
            >>> selected = ds.with_transform(SelectFeatures(torch.tensor([0, 5])))
            >>> selected.model_input_shape
            (2,)
        """
        return dataclasses.replace(self, transforms=(*self.transforms, transform))

    def model_inputs(self, x):
        """Raw rows run through the transforms, without gradients: what the model reads.

        Args:
            x: raw rows (N, *input_shape).

        Example:
            >>> ds = load_dataset("digits")
            >>> ds.model_inputs(ds.x_test).equal(ds.preprocessed().x_test)
            True
        """
        import torch

        with torch.no_grad():
            return self.preprocess()(x)


@dataclass
class Dataset(RawRows):
    """Train/validation/test splits as the user stores them, and how the model reads them.

    Features are float32 (N, *input_shape) holding the values as stored (pixels 0-255, a CSV's
    columns as written), or int64 token ids (text with the "tokens" encoding): what a deployable takes. Labels are int64 (N,). `transforms` turn raw
    rows into the model's inputs, in order: the data set's own preprocessing (scaling or
    standardisation, see `trainers.preprocess`), then each data-phase technique's input transform
    (feature selection). Training reads `preprocessed()`; a deployable carries `preprocess()`.

    Example:
        >>> ds = load_dataset("digits")
        >>> float(ds.x_train.max()), float(ds.preprocessed().x_train.max())
        (16.0, 1.0)
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    transforms: tuple[nn.Module, ...] = ()

    @property
    def n_train(self) -> int:
        """Rows in the training split."""
        return len(self.y_train)

    @property
    def n_val(self) -> int:
        """Rows in the validation split."""
        return len(self.y_val)

    @property
    def n_test(self) -> int:
        """Rows in the test split."""
        return len(self.y_test)

    def split_batches(self, split: str, batch_size: int):
        """One split's raw rows and labels in order, `batch_size` rows at a time.

        Args:
            split: "train", "val" or "test".
            batch_size: rows per batch (the last batch may hold fewer).

        Example:
            >>> [len(y) for _, y in load_dataset("digits").split_batches("val", 100)]
            [100, 80]
        """
        x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
        for start in range(0, len(y), batch_size):
            yield x[start : start + batch_size], y[start : start + batch_size]

    def train_input_variance(self):
        """The variance of each flattened model input over the training split (what feature
        selection ranks features by).

        Example:
            >>> load_dataset("digits").train_input_variance().shape
            torch.Size([64])
        """
        return self.model_inputs(self.x_train).flatten(1).var(dim=0, correction=0)

    def preprocessed(self) -> Dataset:
        """Every split run through the transforms once: the tensors training reads (no per-step cost).

        Returns:
            A Dataset of model inputs, with no transforms left.

        Example:
            >>> load_dataset("digits").preprocessed().x_train.max()
            tensor(1.)
        """
        return dataclasses.replace(
            self,
            x_train=self.model_inputs(self.x_train),
            x_val=self.model_inputs(self.x_val),
            x_test=self.model_inputs(self.x_test),
            transforms=(),
        )


def load_dataset(
    source: str,
    path: str | None = None,
    *,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
    label_column: str | None = None,
    num_classes: int | None = None,
    text_features: int = 1024,
    text_encoding: str = "bag",
    text_length: int = 64,
    n_samples: int = 2000,
    n_features: int = 32,
) -> Dataset:
    """Load a data set and split it into train, validation and test tensors.

    Sets without their own test split are split by a permutation seeded with ``seed``; ``idx``
    files and ``npz`` files with ``x_train``/``x_test`` keep their test split and carve the
    validation split from their training split. The splits hold the values as stored; the
    Dataset's `transforms` say how the model reads them: images (digits, idx) scaled to [0, 1],
    csv, npz, text and synthetic features standardised with the training split's mean and
    standard deviation.

    Args:
        source: one of "digits", "idx", "csv", "npz", "text", "synthetic".
        path: file (csv, npz, text) or directory (idx); unused for digits and synthetic.
        val_fraction: fraction of the (training) examples held out for validation, in (0, 1).
        test_fraction: fraction of all examples held out for testing, in (0, 1); unused where
            the files hold their own test split.
        seed: seed of the split permutation and of the synthetic data.
        label_column: csv only: name of the label column in the header row; default "label"
            if the header has it, else the last column.
        num_classes: number of classes; default the largest label + 1 (10 for synthetic).
        text_features: text only: dimension of the hashed bag of words, or the size of the hashed
            vocabulary of token ids (id 0 is padding, words hash to 1 .. text_features - 1).
        text_encoding: text only: "bag" (log counts of hashed words, float32, standardised) or
            "tokens" (the first `text_length` words as int64 token ids, 0-padded, not
            standardised: for models that embed them, nn.Embedding/nn.EmbeddingBag).
        text_length: text only, tokens: token ids per row.
        n_samples: synthetic only: number of examples.
        n_features: synthetic only: number of features.

    Returns:
        The Dataset.

    Raises:
        DataError: for a bad argument, a missing file or bad file contents.

    Example:
        >>> ds = load_dataset("digits", seed=0)
        >>> ds.input_shape, ds.num_classes
        ((1, 8, 8), 10)
    """
    _check_arguments(source, val_fraction, test_fraction, num_classes, text_features, n_samples, n_features)
    if text_encoding not in TEXT_ENCODINGS:
        raise DataError(f"data.text_encoding={text_encoding!r} is unknown; valid: {', '.join(TEXT_ENCODINGS)}")
    if text_length < 1:
        raise DataError(f"data.text_length={text_length!r} must be at least 1")
    tokens = source == "text" and text_encoding == "tokens"
    if source in _FILE_SOURCES:
        if path is None:
            raise DataError(f"data.path is required for source {source!r}")
        _check_path(Path(path), directory=source == "idx")
        name = f"{source}:{Path(path).name}"
    else:
        name = source
    if source == "digits":
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = digits.images.astype(np.float32)[:, None]
        arrays = [images, _as_labels(digits.target, num_classes, name)]
    elif source == "synthetic":
        arrays = _make_synthetic(n_samples, n_features, num_classes or 10, seed)
    elif source == "idx":
        arrays = _read_idx_directory(Path(path), num_classes)
    elif source == "csv":
        arrays = _read_csv(Path(path), label_column, num_classes)
    elif source == "npz":
        arrays = _read_npz(Path(path), num_classes)
    else:
        arrays = _read_text(Path(path), text_features, num_classes, text_length if tokens else None)

    where = path or source
    if len(arrays) == 2:
        parts = _split(*arrays, (val_fraction, test_fraction), seed, where)
    else:
        x_train, y_train, x_test, y_test = arrays
        parts = [*_split(x_train, y_train, (val_fraction,), seed, where), (x_test, y_test)]
    class_count = num_classes or max(int(y.max()) for _, y in parts) + 1
    if class_count < 2:
        raise DataError(f"{name}: found only {class_count} class; a classifier needs at least 2")
    import torch  # after every check of the arguments and files: a bad path is answered at once

    from trainers.preprocess import Scale, standardisation

    if tokens:
        transforms = ()  # token ids are read as they are
    elif source in _STANDARDISED_SOURCES:
        transforms = (standardisation(parts[0][0]),)
    else:
        transforms = (Scale(_PIXEL_MAXIMA[source]),)
    tensors = [torch.from_numpy(np.ascontiguousarray(array)) for part in parts for array in part]
    dataset = Dataset(name, *tensors, num_classes=class_count, transforms=transforms)
    logger.info("loaded data set %s", data_summary(dataset))
    return dataset


def data_summary(ds) -> dict[str, str | int]:
    """Describe a data set in a few flat fields, for logging and run parameters.

    Args:
        ds: a Dataset, a `trainers.streamed.StreamedDataset`, or anything with their `name`,
            `n_train`, `n_val`, `n_test`, `input_shape` and `num_classes`.

    Returns:
        name, split sizes, input shape (as "1x28x28") and number of classes.

    Example:
        >>> data_summary(load_dataset("digits"))["input_shape"]
        '1x8x8'
    """
    return {
        "name": ds.name,
        "n_train": ds.n_train,
        "n_val": ds.n_val,
        "n_test": ds.n_test,
        "input_shape": "x".join(str(size) for size in ds.input_shape),
        "num_classes": ds.num_classes,
    }


def _check_arguments(source, val_fraction, test_fraction, num_classes, text_features, n_samples, n_features):
    if source not in SOURCES:
        raise DataError(f"data.source={source!r} is unknown; valid sources: {', '.join(SOURCES)}")
    for field, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 < fraction < 1:
            raise DataError(f"data.{field}={fraction!r} must be in (0, 1)")
    if val_fraction + test_fraction >= 1:
        raise DataError(
            f"data.val_fraction + data.test_fraction = {val_fraction + test_fraction} must be < 1"
        )
    if num_classes is not None and not 2 <= num_classes <= MAX_CLASSES:
        raise DataError(f"data.num_classes={num_classes!r} must be from 2 to {MAX_CLASSES:,}")
    counts = {"text_features": text_features, "n_samples": n_samples, "n_features": n_features}
    for field, count in counts.items():
        if count < 1:
            raise DataError(f"data.{field}={count!r} must be at least 1")
    if source == "synthetic":
        _check_fits(n_samples * n_features * 8, f"data.n_samples={n_samples} x data.n_features={n_features}")


def _check_fits(n_bytes, what):
    problem = too_large(n_bytes)
    if problem:
        raise DataError(f"{what} {problem}")


def _check_path(path, directory):
    # stat, never open: opening a FIFO blocks, and reading a device never ends
    try:
        info = path.stat()
    except FileNotFoundError:
        raise DataError(f"data.path {str(path)!r} does not exist") from None
    except OSError as error:
        raise DataError(f"data.path {str(path)!r} cannot be read: {error.strerror or error}") from None
    if directory:
        if not stat.S_ISDIR(info.st_mode):
            raise DataError(f"data.path {str(path)!r} is not a directory of IDX files")
        return
    if not stat.S_ISREG(info.st_mode):
        kind = next((kind for is_kind, kind in _FILE_KINDS if is_kind(info.st_mode)), "not a regular file")
        raise DataError(f"data.path {str(path)!r} is {kind}, not a regular file")
    _check_fits(info.st_size, f"{path}: reading its {info.st_size:,} bytes")


def _as_labels(y, num_classes, where, locate=None):
    # `locate(i)` names example i's place in the file ("line 7, column label"); default its position
    locate = locate or (lambda index: f"example {index + 1}")
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one-dimensional, got shape {y.shape}")
    if len(y) == 0:
        raise DataError(f"{where}: no examples")
    if not np.issubdtype(y.dtype, np.number) or np.issubdtype(y.dtype, np.complexfloating):
        raise DataError(f"{where}: labels must be real numbers, got dtype {y.dtype}")
    if np.issubdtype(y.dtype, np.floating):
        not_integer = ~np.isfinite(y) | (y != np.round(y))
        if not_integer.any():
            index = int(not_integer.argmax())
            raise DataError(f"{where}: {locate(index)}: label {_show_label(y[index])} is not an integer")
    upper = MAX_CLASSES if num_classes is None else num_classes
    out_of_range = (y < 0) | (y >= upper)
    if out_of_range.any():
        index = int(out_of_range.argmax())
        if y[index] < 0:
            problem = "is negative"
        elif num_classes is None:
            problem = f"is beyond {MAX_CLASSES - 1:,}, the largest class index (labels are 0 .. classes - 1)"
        else:
            problem = f"out of range [0, {num_classes})"
        raise DataError(f"{where}: {locate(index)}: label {_show_label(y[index])} {problem}")
    return y.astype(np.int64)


def _show_label(value):
    value = float(value)
    if value.is_integer():
        return str(int(value)) if abs(value) < 2**53 else f"{value:g}"
    return repr(value)


def _split(x, y, fractions, seed, where):
    sizes = [round(len(y) * fraction) for fraction in fractions]
    n_train = len(y) - sum(sizes)
    if n_train < 1 or min(sizes) < 1:
        raise DataError(f"{where}: {len(y)} examples are too few to split off fractions {fractions}")
    order = np.random.default_rng(seed).permutation(len(y))
    boundaries = np.cumsum([n_train, *sizes])[:-1]
    return [(x[indices], y[indices]) for indices in np.split(order, boundaries)]


def _make_synthetic(n_samples, n_features, num_classes, seed):
    from sklearn.datasets import make_classification

    try:
        x, y = make_classification(
            n_samples=n_samples,
            n_features=n_features,
            n_informative=max(1, n_features // 2),
            n_redundant=0,
            n_classes=num_classes,
            n_clusters_per_class=1,
            random_state=seed,
        )
    except ValueError as error:
        raise DataError(
            f"synthetic data with n_samples={n_samples}, n_features={n_features}, "
            f"num_classes={num_classes}: {error}"
        ) from error
    return x.astype(np.float32), y.astype(np.int64)


def _read_idx_directory(directory, num_classes):
    splits = []
    for prefix in ("train", "t10k"):
        images_path = _find_idx_file(directory, f"{prefix}-images-idx3-ubyte")
        labels_path = _find_idx_file(directory, f"{prefix}-labels-idx1-ubyte")
        images = _read_idx(images_path, _IDX_IMAGES_MAGIC)
        labels = _as_labels(_read_idx(labels_path, _IDX_LABELS_MAGIC), num_classes, labels_path)
        if len(images) != len(labels):
            raise DataError(
                f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels"
            )
        splits += [images.astype(np.float32)[:, None], labels]
    if splits[0].shape[1:] != splits[2].shape[1:]:
        raise DataError(
            f"{directory}: train images are {splits[0].shape[2:]} but t10k images are {splits[2].shape[2:]}"
        )
    return splits


def _find_idx_file(directory, name):
    for candidate in (directory / name, directory / f"{name}.gz"):
        if candidate.is_file():
            return candidate
    raise DataError(f"data.path {str(directory)!r} has no {name} or {name}.gz")


def _read_idx(path, expected_magic):
    _check_path(path, directory=False)
    try:
        with gzip.open(path) if path.suffix == ".gz" else path.open("rb") as file:
            return _read_idx_stream(path, file, expected_magic)
    except (OSError, EOFError, zlib.error) as error:
        raise DataError(f"{path}: cannot read: {error}") from error


def _read_idx_stream(path, file, expected_magic):
    # read as the header says, into one buffer of that size: a small .gz can unpack to terabytes
    head = file.read(4)
    if len(head) < 4:
        raise DataError(f"{path}: {len(head)} bytes is too short for an IDX header")
    magic = int.from_bytes(head, "big")
    if magic != expected_magic:
        raise DataError(f"{path}: magic number {magic}, expected {expected_magic}")
    n_dims = magic & 0xFF
    header_size = 4 + 4 * n_dims
    sizes = file.read(4 * n_dims)
    if len(sizes) < 4 * n_dims:
        raise DataError(f"{path}: {4 + len(sizes)} bytes is too short for an IDX header of {header_size} bytes")
    dims = tuple(int.from_bytes(sizes[4 * i : 4 * i + 4], "big") for i in range(n_dims))
    expected_size = header_size + math.prod(dims)
    _check_fits(expected_size, f"{path}: its header's dimensions {dims}")
    body = bytearray(math.prod(dims))
    view, filled = memoryview(body), 0
    while filled < len(body) and (count := file.readinto(view[filled:])):
        filled += count
    if filled < len(body) or file.read(1):
        found = f"{header_size + filled} bytes" if filled < len(body) else "more"
        raise DataError(f"{path}: header says dimensions {dims} ({expected_size} bytes) but the file has {found}")
    return np.frombuffer(body, np.uint8).reshape(dims)


def _read_csv(path, label_column, num_classes):
    try:
        text = path.read_text(encoding="utf-8-sig")  # a byte-order mark (Excel's "CSV UTF-8") is no part of the header
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{path}: cannot read: {error}") from error
    delimiter = _sniff_delimiter(text)
    try:
        rows, line_numbers = _csv_rows(text, delimiter)
    except csv.Error as error:
        raise DataError(f"{path}: cannot read: {error}") from error
    header = rows[0] if rows and is_csv_header(rows[0]) else None
    logger.info(
        "%s: columns separated by %s, %s",
        path,
        _CSV_DELIMITERS.get(delimiter, "whitespace"),
        "first line is a header" if header else "no header line",
    )
    if header is not None:
        rows, line_numbers = rows[1:], line_numbers[1:]
    if not rows:
        raise DataError(f"{path}: no data rows")
    width = len(header or rows[0])
    for row, line in zip(rows, line_numbers):
        if len(row) != width:
            raise DataError(f"{path}: line {line} has {len(row)} columns, expected {width}")
    label_index = _label_index(path, header, label_column)
    try:
        table = np.array(rows).astype(np.float64)
    except ValueError:
        table = None
    if table is None or not np.isfinite(table).all():
        row_index, column_index, cell = next(
            (row_index, column_index, cell)
            for row_index, row in enumerate(rows)
            for column_index, cell in enumerate(row)
            if not _is_finite_number(cell)
        )
        column = header[column_index] if header else str(column_index + 1)
        raise DataError(
            f"{path}: line {line_numbers[row_index]}, column {column}: {cell!r} is not a finite number"
        )
    features = np.delete(table, label_index, axis=1).astype(np.float32)
    column = header[label_index] if header else str(label_index % width + 1)
    return features, _as_labels(table[:, label_index], num_classes, path, lambda row: f"line {line_numbers[row]}, column {column}")


def _sniff_delimiter(text):
    # None: columns separated by runs of spaces (as in numpy.savetxt's output). The sniffer needs
    # consistent lines; a ragged file falls back to the first delimiter its first line holds
    try:
        return csv.Sniffer().sniff(text[:65536], delimiters="".join(_CSV_DELIMITERS)).delimiter
    except csv.Error:
        first_line = next((line for line in text.splitlines() if line.strip()), "")
        return next((delimiter for delimiter in _CSV_DELIMITERS if delimiter in first_line), None)


def _csv_rows(text, delimiter):
    rows, line_numbers = [], []
    if delimiter is None:
        for number, line in enumerate(text.splitlines(), start=1):
            if line.split():
                rows.append(line.split())
                line_numbers.append(number)
        return rows, line_numbers
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    for row in reader:
        if any(cell.strip() for cell in row):
            rows.append(row)
            line_numbers.append(reader.line_num)
    return rows, line_numbers


def _label_index(path, header, label_column):
    if label_column is None:
        return header.index("label") if header is not None and "label" in header else -1
    if header is None:
        raise DataError(
            f"{path}: data.label_column={label_column!r} needs a header row, but the file has none"
        )
    if label_column not in header:
        raise DataError(
            f"{path}: data.label_column={label_column!r} is not a column; columns: {', '.join(header)}"
        )
    return header.index(label_column)


def is_csv_header(cells: list[str]) -> bool:
    """Whether a csv file's first line names its columns: none of its cells is a number.

    Args:
        cells: the first line's cells.

    Example:
        >>> is_csv_header(["p0", "label"]), is_csv_header(["0.5", "3"])
        (True, False)
    """
    return not any(_is_number(cell) for cell in cells)


def _is_number(cell):
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _is_finite_number(cell):
    return _is_number(cell) and math.isfinite(float(cell))


def _read_npz(path, num_classes):
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an .npz archive (as written by numpy.savez)")
    try:
        with zipfile.ZipFile(path) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except (OSError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read as .npz: {error}") from error
    _check_fits(unpacked, f"{path}: unpacking its arrays")
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {key: archive[key] for key in archive.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as error:
        raise DataError(f"{path}: cannot read as .npz: {error}") from error
    for keys in (("x", "y"), ("x_train", "y_train", "x_test", "y_test")):
        if set(keys) <= set(arrays):
            break
    else:
        raise DataError(
            f"{path}: expected arrays 'x','y' or 'x_train','y_train','x_test','y_test'; "
            f"found {sorted(arrays)}"
        )
    result = []
    for x_key, y_key in zip(keys[::2], keys[1::2]):
        x, y = arrays[x_key], arrays[y_key]
        real = np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)
        if not (real or x.dtype == bool) or x.ndim < 2:
            raise DataError(
                f"{path}: array {x_key!r} must be real numbers with shape (N, ...), got {x.dtype} {x.shape}"
            )
        if not np.isfinite(x).all():
            raise DataError(f"{path}: array {x_key!r} contains NaN or infinite values")
        if len(x) != len(y):
            raise DataError(f"{path}: {x_key!r} has {len(x)} examples but {y_key!r} has {len(y)}")
        result += [x.astype(np.float32), _as_labels(y, num_classes, f"{path} array {y_key!r}")]
    if len(result) == 4 and result[0].shape[1:] != result[2].shape[1:]:
        raise DataError(
            f"{path}: 'x_train' examples are {result[0].shape[1:]} "
            f"but 'x_test' examples are {result[2].shape[1:]}"
        )
    return result


def _read_text(path, text_features, num_classes, token_length):
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise DataError(f"{path}: cannot read: {error}") from error
    try:
        content = raw.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        line = raw[: error.start].count(b"\n") + 1
        raise DataError(f"{path}: line {line} is not valid UTF-8") from error
    labels, texts, line_numbers = [], [], []
    for line_number, line in enumerate(content.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        label, tab, text = line.partition("\t")
        if not tab or not label.strip():
            raise DataError(f"{path}: line {line_number} is not 'label<TAB>text': {line[:60]!r}")
        labels.append(label.strip())
        line_numbers.append(line_number)
        texts.append(text)
    if not labels:
        raise DataError(f"{path}: no examples")
    if token_length is not None:
        return _hashed_token_ids(texts, text_features, token_length), _text_labels(path, labels, line_numbers, num_classes)
    _check_fits(len(texts) * text_features * 4, f"data.text_features={text_features} for {len(texts):,} lines")
    return _hashed_bag_of_words(texts, text_features), _text_labels(path, labels, line_numbers, num_classes)


def _text_labels(path, labels, line_numbers, num_classes):
    if all(re.fullmatch(r"-?\d+", label) for label in labels):
        numbers = [int(label) if len(label) < 19 else float(label) for label in labels]  # int64 holds 18 digits
        return _as_labels(np.array(numbers), num_classes, path, lambda row: f"line {line_numbers[row]}")
    class_names = sorted(set(labels))
    if num_classes is not None and len(class_names) > num_classes:
        raise DataError(f"{path}: {len(class_names)} distinct labels but data.num_classes={num_classes}")
    logger.info("%s: class indices follow the sorted labels %s", path, class_names)
    index_of = {name: index for index, name in enumerate(class_names)}
    return np.array([index_of[label] for label in labels], dtype=np.int64)


def _hashed_token_ids(texts, text_features, length):
    if text_features < 2:
        raise DataError(f"data.text_features={text_features} must be at least 2 for token ids (0 is padding)")
    ids = np.zeros((len(texts), length), dtype=np.int64)
    for row, text in enumerate(texts):
        words = _WORD.findall(text.lower())[:length]
        ids[row, : len(words)] = [zlib.crc32(word.encode("utf-8")) % (text_features - 1) + 1 for word in words]
    return ids


def _hashed_bag_of_words(texts, text_features):
    rows, columns = [], []
    for row, text in enumerate(texts):
        words = _WORD.findall(text.lower())
        rows += [row] * len(words)
        columns += [zlib.crc32(word.encode("utf-8")) % text_features for word in words]
    counts = np.zeros((len(texts), text_features), dtype=np.float32)
    np.add.at(counts, (rows, columns), 1.0)
    return np.log1p(counts)
