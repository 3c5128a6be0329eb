import gzip
import os
import subprocess
import sys
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch

from trainers.data import DataError, Dataset, data_summary, load_dataset


def _write_idx(path, array, magic):
    header = magic.to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def _write_idx_directory(directory, suffix="", n_train=20, n_test=6, labels_high=10):
    rng = np.random.default_rng(0)
    arrays = {}
    for prefix, count in (("train", n_train), ("t10k", n_test)):
        arrays[prefix] = (rng.integers(0, 256, (count, 4, 5)), rng.integers(0, labels_high, count))
        _write_idx(directory / f"{prefix}-images-idx3-ubyte{suffix}", arrays[prefix][0], 2051)
        _write_idx(directory / f"{prefix}-labels-idx1-ubyte{suffix}", arrays[prefix][1], 2049)
    return arrays


def _write_csv(path, header, rows):
    lines = ([",".join(header)] if header else []) + [",".join(str(cell) for cell in row) for row in rows]
    path.write_text("\n".join(lines) + "\n")


def _labelled_rows(count=30):
    return [[i % 3, float(i), (i * 7) % 11] for i in range(count)]


def test_digits_keep_stored_pixels_and_the_model_reads_them_in_unit_range():
    ds = load_dataset("digits", val_fraction=0.1, test_fraction=0.2)
    assert ds.input_shape == ds.model_input_shape == (1, 8, 8)
    assert ds.num_classes == 10
    assert ds.x_train.dtype == torch.float32 and ds.y_train.dtype == torch.int64
    assert ds.x_train.min() == 0 and ds.x_train.max() == 16 and torch.equal(ds.x_train, ds.x_train.round())
    model_inputs = ds.preprocessed()
    assert model_inputs.transforms == () and torch.equal(model_inputs.y_test, ds.y_test)
    for raw, scaled in ((ds.x_train, model_inputs.x_train), (ds.x_test, model_inputs.x_test)):
        assert torch.equal(scaled, raw / 16)
        assert torch.equal(ds.preprocess()(raw), scaled)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (1258, 180, 359)


def test_split_follows_seed():
    first, again, other = (load_dataset("digits", seed=seed) for seed in (0, 0, 1))
    assert torch.equal(first.y_test, again.y_test)
    assert not torch.equal(first.y_test, other.y_test)


def test_digits_label_beyond_num_classes_is_named():
    with pytest.raises(DataError, match=r"digits: example \d+: label 5 out of range \[0, 5\)"):
        load_dataset("digits", num_classes=5)


def test_synthetic_has_requested_size_and_default_ten_classes():
    ds = load_dataset("synthetic", n_samples=200, n_features=12, seed=3)
    assert ds.input_shape == (12,)
    assert ds.num_classes == 10
    assert len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 200
    assert torch.allclose(ds.preprocessed().x_train.mean(0), torch.zeros(12), atol=1e-5)
    assert torch.equal(ds.x_train, load_dataset("synthetic", n_samples=200, n_features=12, seed=3).x_train)


def test_synthetic_impossible_settings_raise_data_error():
    with pytest.raises(DataError, match="n_features=2"):
        load_dataset("synthetic", n_features=2, num_classes=10)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_idx_keeps_t10k_as_test_with_stored_pixels_and_the_model_reads_them_scaled(tmp_path, suffix):
    arrays = _write_idx_directory(tmp_path, suffix)
    ds = load_dataset("idx", str(tmp_path), val_fraction=0.1)
    test_images, test_labels = arrays["t10k"]
    assert ds.input_shape == (1, 4, 5)
    assert torch.equal(ds.x_test, torch.tensor(test_images[:, None], dtype=torch.float32))
    assert torch.equal(ds.preprocessed().x_test, torch.tensor(test_images[:, None], dtype=torch.float32) / 255)
    assert torch.equal(ds.y_test, torch.tensor(test_labels))
    assert (len(ds.y_train), len(ds.y_val)) == (18, 2)
    assert ds.name == f"idx:{tmp_path.name}"


def test_idx_wrong_magic_names_file_found_and_expected(tmp_path):
    _write_idx_directory(tmp_path)
    _write_idx(tmp_path / "train-images-idx3-ubyte", np.zeros(20), 2049)
    with pytest.raises(DataError, match=r"train-images-idx3-ubyte: magic number 2049, expected 2051"):
        load_dataset("idx", str(tmp_path))


def test_idx_size_that_disagrees_with_header_is_rejected(tmp_path):
    _write_idx_directory(tmp_path)
    path = tmp_path / "t10k-images-idx3-ubyte"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte: header says dimensions \(6, 4, 5\) \(136 bytes\) but the file has 133 bytes"):
        load_dataset("idx", str(tmp_path))
    path.write_bytes(path.read_bytes() + bytes(10))  # more than the header says: read no further
    with pytest.raises(DataError, match=r"\(6, 4, 5\) \(136 bytes\) but the file has more"):
        load_dataset("idx", str(tmp_path))


def test_idx_image_and_label_counts_must_match(tmp_path):
    _write_idx_directory(tmp_path)
    _write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros(19), 2049)
    with pytest.raises(DataError, match="has 20 images but .*train-labels-idx1-ubyte has 19 labels"):
        load_dataset("idx", str(tmp_path))


def test_idx_missing_file_is_named(tmp_path):
    _write_idx_directory(tmp_path)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DataError, match=r"no t10k-labels-idx1-ubyte or t10k-labels-idx1-ubyte.gz"):
        load_dataset("idx", str(tmp_path))


def test_idx_corrupt_gzip_is_a_data_error(tmp_path):
    _write_idx_directory(tmp_path, ".gz")
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(b"not gzip at all")
    with pytest.raises(DataError, match="train-images-idx3-ubyte.gz: cannot read"):
        load_dataset("idx", str(tmp_path))


def test_idx_label_out_of_range_names_labels_file(tmp_path):
    _write_idx_directory(tmp_path, labels_high=12)
    with pytest.raises(DataError, match=r"labels-idx1-ubyte: example \d+: label 1[01] out of range \[0, 10\)"):
        load_dataset("idx", str(tmp_path), num_classes=10)


def test_csv_label_column_named_label_and_train_only_standardisation(tmp_path):
    path = tmp_path / "data.csv"
    _write_csv(path, ["a", "label", "b"], [[a, label, b] for label, a, b in _labelled_rows()])
    raw = load_dataset("csv", str(path))
    assert raw.input_shape == (2,)
    assert raw.num_classes == 3
    # the rows stay as written (column a is 0..29); the model reads them standardised
    assert sorted(torch.cat([raw.x_train[:, 0], raw.x_val[:, 0], raw.x_test[:, 0]]).tolist()) == list(range(30))
    ds = raw.preprocessed()
    assert torch.allclose(ds.x_train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(ds.x_train.std(0, correction=0), torch.ones(2), atol=1e-5)
    # one shared affine map for all splits keeps column a's values evenly spaced
    column_a = torch.cat([ds.x_train[:, 0], ds.x_val[:, 0], ds.x_test[:, 0]])
    steps = column_a.sort().values.diff()
    assert torch.allclose(steps, steps[0].expand_as(steps), rtol=1e-4)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        row_index = ((x[:, 0] - column_a.min()) / steps[0]).round().long()
        assert torch.equal(row_index % 3, y)


def test_csv_without_header_takes_last_column_as_label(tmp_path):
    path = tmp_path / "data.csv"
    _write_csv(path, None, [[a, b, label] for label, a, b in _labelled_rows()])
    ds = load_dataset("csv", str(path))
    assert ds.input_shape == (2,)
    assert sorted(torch.cat([ds.y_train, ds.y_val, ds.y_test]).tolist()) == sorted(i % 3 for i in range(30))


def test_csv_label_column_by_name(tmp_path):
    path = tmp_path / "data.csv"
    _write_csv(path, ["target", "a", "b"], _labelled_rows())
    ds = load_dataset("csv", str(path), label_column="target")
    assert ds.num_classes == 3
    with pytest.raises(DataError, match="label_column='missing' is not a column; columns: target, a, b"):
        load_dataset("csv", str(path), label_column="missing")


def test_csv_ragged_row_names_file_and_line(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("a,b,label\n1,2,0\n3,4\n")
    with pytest.raises(DataError, match=r"data.csv: line 3 has 2 columns, expected 3"):
        load_dataset("csv", str(path))


@pytest.mark.parametrize("cell", ["abc", "nan"])
def test_csv_bad_cell_names_file_line_and_column(tmp_path, cell):
    path = tmp_path / "data.csv"
    path.write_text(f"a,b,label\n1,2,0\n3,{cell},1\n")
    with pytest.raises(DataError, match=rf"data.csv: line 3, column b: '{cell}' is not a finite number"):
        load_dataset("csv", str(path))


@pytest.mark.parametrize(
    ("label", "message"),
    [
        ("1.5", "label 1.5 is not an integer"),
        ("-1", "label -1 is negative"),
        ("1e20", r"label 1e\+20 is beyond 999,999, the largest class index"),  # int64 would take it silently
    ],
)
def test_csv_bad_label_is_named_with_its_line_and_column(tmp_path, label, message):
    path = tmp_path / "data.csv"
    _write_csv(path, ["a", "label"], [[i, i % 2] for i in range(29)] + [[29, label]])
    with pytest.raises(DataError, match=f"data.csv: line 31, column label: {message}"):
        load_dataset("csv", str(path))


def test_csv_label_column_without_header_is_named_by_number(tmp_path):
    path = tmp_path / "data.csv"
    _write_csv(path, None, [[i, i % 2] for i in range(29)] + [[29, 2.5]])
    with pytest.raises(DataError, match="data.csv: line 30, column 2: label 2.5 is not an integer"):
        load_dataset("csv", str(path))


def test_csv_with_a_byte_order_mark_keeps_its_header_and_label_column(tmp_path):
    path = tmp_path / "excel.csv"
    _write_csv(path, ["\ufefflabel", "a", "b"], [[label, a, b] for label, a, b in _labelled_rows()])
    ds = load_dataset("csv", str(path))
    assert (ds.num_classes, ds.input_shape) == (3, (2,))
    _write_csv(path, None, [[a, b, label] for label, a, b in _labelled_rows()])
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # no header: the first cell is still a number
    ds = load_dataset("csv", str(path))
    assert (ds.num_classes, ds.input_shape) == (3, (2,))


def test_npz_complex_values_are_refused(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.ones((30, 2)) * (1 + 2j), y=np.arange(30) % 2)
    with pytest.raises(DataError, match=r"data.npz: array 'x' must be real numbers with shape \(N, ...\), got complex128"):
        load_dataset("npz", str(path))
    np.savez(path, x=np.ones((30, 2)), y=(np.arange(30) % 2).astype(np.complex64))
    with pytest.raises(DataError, match="data.npz array 'y': labels must be real numbers, got dtype complex64"):
        load_dataset("npz", str(path))


def test_npz_single_set_is_split_and_standardised(tmp_path):
    path = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x=rng.normal(5.0, 3.0, (40, 2, 3)), y=np.arange(40) % 4)
    ds = load_dataset("npz", str(path))
    assert ds.input_shape == (2, 3)
    assert (len(ds.y_train), len(ds.y_val), len(ds.y_test)) == (28, 4, 8)
    assert torch.allclose(ds.preprocessed().x_train.mean(0), torch.zeros(2, 3), atol=1e-5)


def test_npz_with_test_split_keeps_it(tmp_path):
    path = tmp_path / "data.npz"
    y_test = np.array([2, 0, 1, 1, 0])
    np.savez(path, x_train=np.random.default_rng(0).normal(size=(20, 3)), y_train=np.arange(20) % 3,
             x_test=np.zeros((5, 3)), y_test=y_test)
    ds = load_dataset("npz", str(path))
    assert torch.equal(ds.y_test, torch.tensor(y_test))
    assert (len(ds.y_train), len(ds.y_val)) == (18, 2)


def test_npz_without_expected_arrays_lists_what_it_found(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, features=np.zeros((4, 2)), y=np.zeros(4))
    with pytest.raises(DataError, match=r"found \['features', 'y'\]"):
        load_dataset("npz", str(path))


def test_npz_length_mismatch_and_bad_file(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.zeros((4, 2)), y=np.zeros(3))
    with pytest.raises(DataError, match="'x' has 4 examples but 'y' has 3"):
        load_dataset("npz", str(path))
    path.write_bytes(b"plain text, not a zip")
    with pytest.raises(DataError, match="data.npz: not an .npz archive"):
        load_dataset("npz", str(path))
    np.save(tmp_path / "single.npy", np.zeros(3))
    with pytest.raises(DataError, match="single.npy: not an .npz archive"):
        load_dataset("npz", str(tmp_path / "single.npy"))


def test_single_class_and_too_few_examples_are_rejected(tmp_path):
    path = tmp_path / "data.npz"
    np.savez(path, x=np.arange(30.0).reshape(10, 3), y=np.zeros(10))
    with pytest.raises(DataError, match="found only 1 class"):
        load_dataset("npz", str(path))
    np.savez(path, x=np.arange(9.0).reshape(3, 3), y=np.arange(3))
    with pytest.raises(DataError, match="3 examples are too few to split"):
        load_dataset("npz", str(path))


def _write_reviews(path, count=30):
    lines = [
        f"pos\tI like this apple {i}" if i % 2 else f"neg\tbanana banana was bad {i}" for i in range(count)
    ]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_text_string_labels_sorted_and_words_hashed_stably(tmp_path):
    path = tmp_path / "reviews.txt"
    _write_reviews(path)
    ds = load_dataset("text", str(path), text_features=64)
    assert ds.input_shape == (64,)
    assert ds.num_classes == 2
    banana = zlib.crc32(b"banana") % 64
    negative = ds.y_train == 0  # "neg" sorts before "pos"
    assert ds.x_train[negative, banana].min() > ds.x_train[~negative, banana].max()


def test_text_tokens_are_int64_hashed_ids_padded_with_zero(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text("pos\tGood good film\nneg\tbad\npos\tone two three four five six\n" * 4, encoding="utf-8")
    ds = load_dataset("text", str(path), text_encoding="tokens", text_length=4, text_features=50)
    rows = torch.cat([ds.x_train, ds.x_val, ds.x_test])
    assert rows.dtype == torch.int64 and rows.shape == (12, 4) and ds.transforms == ()
    assert int(rows.min()) == 0 and int(rows.max()) <= 49
    good = zlib.crc32(b"good") % 49 + 1
    first_four = tuple(zlib.crc32(word) % 49 + 1 for word in (b"one", b"two", b"three", b"four"))  # six cut to four
    expected = {(good, good, zlib.crc32(b"film") % 49 + 1, 0), (zlib.crc32(b"bad") % 49 + 1, 0, 0, 0), first_four}
    assert {tuple(row.tolist()) for row in rows} == expected
    with pytest.raises(DataError, match="text_encoding='ids' is unknown"):
        load_dataset("text", str(path), text_encoding="ids")


def test_text_integer_labels_checked_against_num_classes(tmp_path):
    path = tmp_path / "numbers.txt"
    path.write_text("".join(f"{i % 12}\tword {i}\n" for i in range(30)))
    with pytest.raises(DataError, match=r"numbers.txt: line 1[12]: label 1[01] out of range \[0, 10\)"):
        load_dataset("text", str(path), num_classes=10)


def test_text_malformed_line_and_bad_encoding_name_the_line(tmp_path):
    path = tmp_path / "reviews.txt"
    path.write_text("pos\tgood\nno tab here\n")
    with pytest.raises(DataError, match="reviews.txt: line 2 is not 'label<TAB>text'"):
        load_dataset("text", str(path))
    path.write_bytes(b"pos\tgood\nneg\tbad\npos\t\xff\n")
    with pytest.raises(DataError, match="reviews.txt: line 3 is not valid UTF-8"):
        load_dataset("text", str(path))


def test_unknown_source_lists_valid_sources():
    with pytest.raises(DataError, match="valid sources: digits, idx, csv, npz, text, synthetic"):
        load_dataset("parquet")


def test_missing_path_is_reported(tmp_path):
    with pytest.raises(DataError, match=r"data.path '.*nowhere.csv' does not exist"):
        load_dataset("csv", str(tmp_path / "nowhere.csv"))
    with pytest.raises(DataError, match="data.path is required for source 'text'"):
        load_dataset("text")


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"val_fraction": 0.0}, "val_fraction=0.0 must be in"),
        ({"test_fraction": 1.5}, "test_fraction=1.5 must be in"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must be < 1"),
        ({"num_classes": 1}, "num_classes=1 must be from 2 to 1,000,000"),
        ({"n_samples": 0}, "n_samples=0 must be at least 1"),
    ],
)
def test_bad_arguments_name_the_field(arguments, message):
    with pytest.raises(DataError, match=message):
        load_dataset("synthetic", **arguments)


def test_data_summary_describes_the_dataset():
    ds = load_dataset("digits")
    assert isinstance(ds, Dataset)
    assert data_summary(ds) == {
        "name": "digits",
        "n_train": 1258,
        "n_val": 180,
        "n_test": 359,
        "input_shape": "1x8x8",
        "num_classes": 10,
    }


@pytest.mark.parametrize(
    ("separator", "described"),
    [(",", "commas"), (";", "semicolons"), ("\t", "tabs"), (" ", "whitespace"), ("   ", "whitespace")],
)
def test_csv_delimiter_is_sniffed_and_said(tmp_path, caplog, separator, described):
    path = tmp_path / "train.txt"
    path.write_text("".join(separator.join(str(cell) for cell in row) + "\n" for row in _labelled_rows()))
    with caplog.at_level("INFO", logger="trainers.data"):
        ds = load_dataset("csv", str(path))
    assert ds.input_shape == (2,) and ds.num_classes == 11  # the last column is the label
    assert f"columns separated by {described}, no header line" in caplog.text


def test_csv_whitespace_file_with_label_last_as_numpy_savetxt_writes_it(tmp_path, caplog):
    rows = np.array([[14.23, 1.71, i % 3] for i in range(30)])
    path = tmp_path / "train.txt"
    np.savetxt(path, rows, fmt="%.2f")
    with caplog.at_level("INFO", logger="trainers.data"):
        ds = load_dataset("csv", str(path))
    assert ds.num_classes == 3 and len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 30
    assert "whitespace, no header line" in caplog.text


def test_csv_header_is_detected_with_semicolons(tmp_path, caplog):
    path = tmp_path / "data.csv"
    path.write_text("a;b;label\n" + "".join(f"{i};{i * 2};{i % 2}\n" for i in range(20)))
    with caplog.at_level("INFO", logger="trainers.data"):
        ds = load_dataset("csv", str(path))
    assert ds.input_shape == (2,) and ds.num_classes == 2
    assert "semicolons, first line is a header" in caplog.text


@pytest.mark.parametrize("source", ["csv", "npz", "text"])
def test_a_fifo_is_refused_at_once_without_being_opened(tmp_path, source):
    fifo = tmp_path / "data.fifo"
    os.mkfifo(fifo)
    started = time.monotonic()
    with pytest.raises(DataError, match=r"data.path '.*data.fifo' is a FIFO, not a regular file"):
        load_dataset(source, str(fifo))
    assert time.monotonic() - started < 5  # the "under a second", with room for a loaded machine


@pytest.mark.parametrize("source", ["csv", "npz", "text"])
def test_a_device_or_directory_is_not_a_data_file(tmp_path, source):
    with pytest.raises(DataError, match="'/dev/zero' is a character device, not a regular file"):
        load_dataset(source, "/dev/zero")
    with pytest.raises(DataError, match="is a directory, not a regular file"):
        load_dataset(source, str(tmp_path))


def test_an_idx_path_must_be_a_directory(tmp_path):
    path = tmp_path / "file"
    path.write_text("")
    with pytest.raises(DataError, match="is not a directory of IDX files"):
        load_dataset("idx", str(path))


def test_sizes_beyond_memory_are_refused_with_the_figure(tmp_path):
    with pytest.raises(DataError, match=r"data.n_samples=10000000000 x data.n_features=32 needs ~2.6 TB; the limit is"):
        load_dataset("synthetic", n_samples=10**10)
    path = tmp_path / "texts.tsv"
    path.write_text("".join(f"{i % 2}\tsome words {i}\n" for i in range(50)))
    with pytest.raises(DataError, match=r"data.text_features=10000000000 for 50 lines needs ~2.0 TB"):
        load_dataset("text", str(path), text_features=10**10)


_LOAD_UNDER_RLIMIT_AS = """
import resource, sys
from trainers.data import DataError, load_dataset
with open("/proc/self/status") as status:
    used = next(int(line.split()[1]) * 1024 for line in status if line.startswith("VmSize:"))
resource.setrlimit(resource.RLIMIT_AS, (used + 200_000_000, resource.RLIM_INFINITY))
try:
    load_dataset("idx", sys.argv[1])
except DataError as error:
    print(error)
"""


def test_a_gzip_bomb_is_refused_against_what_the_process_may_allocate(tmp_path):
    """A process allowed 200 MB more (RLIMIT_AS, as a cgroup or `ulimit -v` would) reading 400 MB:
    one DataError naming the file, not a MemoryError, though the machine has room for it."""
    _write_idx_directory(tmp_path, ".gz")
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(bomb, "wb", compresslevel=1) as file:
        header = (2051).to_bytes(4, "big") + b"".join(size.to_bytes(4, "big") for size in (20_000_000, 4, 5))
        file.write(header)
        for _ in range(400):
            file.write(bytes(1_000_000))
    completed = subprocess.run([sys.executable, "-c", _LOAD_UNDER_RLIMIT_AS, str(tmp_path)], capture_output=True,
                               text=True, timeout=120, cwd=Path(__file__).resolve().parents[2])
    assert completed.returncode == 0, completed.stderr[-2000:]
    assert "train-images-idx3-ubyte.gz: its header's dimensions (20000000, 4, 5) needs ~400.0 MB" in completed.stdout
    assert "(what this process's RLIMIT_AS leaves)" in completed.stdout, completed.stdout
