"""A parquet source is checked from its footers and first rows: the bad file and column are named."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from orchestrator.config.preflight import inspect_source
from orchestrator.config.streamed_source import SourceError
from tests.orchestrator.streamed_files import write_digits_parquet


def test_columns_and_list_layouts_give_the_same_shape_classes_and_rows(tmp_path):
    write_digits_parquet(tmp_path / "cols.parquet")
    write_digits_parquet(tmp_path / "list.parquet", list_column=True)
    columns = inspect_source({"source": "parquet", "path": str(tmp_path / "cols.parquet")}, seed=0)
    listed = inspect_source({"source": "parquet", "path": str(tmp_path / "list.parquet")}, seed=0)
    assert (columns.input_shape, columns.num_classes, columns.n_rows) == ((64,), 10, {"train": 1797})
    assert (listed.input_shape, listed.num_classes, listed.n_rows) == ((64,), 10, {"train": 1797})
    assert not columns.list_column and listed.list_column
    assert len(columns.units["train"]) == 6 and columns.size_bytes > 0  # from the footer


def test_a_directory_or_glob_finds_every_file_and_given_splits_keep_theirs(tmp_path):
    for index, rows in enumerate((slice(0, 900), slice(900, None))):
        write_digits_parquet(tmp_path / f"part-{index}.parquet", rows=rows)
    assert inspect_source({"source": "parquet", "path": str(tmp_path)}, seed=0).n_rows == {"train": 1797}
    assert len(inspect_source({"source": "parquet", "path": str(tmp_path / "part-*.parquet")}, seed=0).files["train"]) == 2
    paths = {"train_path": str(tmp_path / "part-0.parquet"), "val_path": str(tmp_path / "part-1.parquet"),
             "test_path": str(tmp_path / "part-1.parquet")}  # fmt: skip
    given = inspect_source({"source": "parquet", **paths}, seed=0)
    assert not given.split_from_seed and (given.n_train, given.n_val, given.n_test) == (900, 897, 897)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(SourceError, match=r"data.path '.*nothing.parquet' matches no parquet file"):
        inspect_source({"source": "parquet", "path": str(tmp_path / "nothing.parquet")}, seed=0)


def test_a_file_that_is_not_parquet_is_named(tmp_path):
    (tmp_path / "bad.parquet").write_text("label,p0\n1,2\n")
    with pytest.raises(SourceError, match=r"bad.parquet: not a readable parquet file"):
        inspect_source({"source": "parquet", "path": str(tmp_path / "bad.parquet")}, seed=0)


def test_a_text_feature_column_is_named_with_its_file(tmp_path):
    pq.write_table(pa.table({"p0": [1.0, 2.0], "colour": ["red", "blue"], "label": [0, 1]}), tmp_path / "t.parquet")
    with pytest.raises(SourceError, match=r"t.parquet: column 'colour' is string; features must be numeric"):
        inspect_source({"source": "parquet", "path": str(tmp_path / "t.parquet")}, seed=0)


def test_a_missing_label_column_lists_the_columns(tmp_path):
    write_digits_parquet(tmp_path / "d.parquet", rows=slice(0, 50))
    with pytest.raises(SourceError, match=r"data.label_column='target' is not a column; columns: p0, p1"):
        inspect_source({"source": "parquet", "path": str(tmp_path / "d.parquet"), "label_column": "target"}, seed=0)


def test_files_with_other_columns_are_named(tmp_path):
    write_digits_parquet(tmp_path / "a.parquet", rows=slice(0, 50))
    pq.write_table(pa.table({"p0": [1.0], "label": [0]}), tmp_path / "b.parquet")
    with pytest.raises(SourceError, match=r"b.parquet: its columns \['p0', 'label'\] differ"):
        inspect_source({"source": "parquet", "path": str(tmp_path)}, seed=0)


def test_a_negative_label_is_found_in_the_row_group_statistics(tmp_path):
    labels = [0, 1] * 20 + [-3]
    pq.write_table(pa.table({"p0": [0.5] * 41, "label": labels}), tmp_path / "n.parquet", row_group_size=20)
    with pytest.raises(SourceError, match=r"n.parquet: label -3 is negative \(row group 2\)"):
        inspect_source({"source": "parquet", "path": str(tmp_path / "n.parquet")}, seed=0)


def test_validate_names_the_bad_column_in_one_error_line_and_exits_2(accelsweep, write_spec, tmp_path):
    pq.write_table(pa.table({"p0": [1.0, 2.0], "colour": ["red", "blue"], "label": [0, 1]}), tmp_path / "t.parquet")
    write_spec({"name": "t", "data": {"source": "parquet", "path": str(tmp_path / "t.parquet")}})
    result = accelsweep("validate", "spec.yaml")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: spec.yaml: data: {tmp_path / 't.parquet'}: column 'colour' is string; features must be "
        "numeric columns, or one fixed-size list column"
    ]
