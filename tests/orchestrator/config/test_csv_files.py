"""A directory of csv files streams: checked from each file's first line and the first rows, the
bad file and column named; rows and classes are estimates until the sweep counts them."""

import pytest

from orchestrator.config.schema import DataSpec
from orchestrator.config.preflight import inspect_source
from orchestrator.config.streamed_source import SourceError
from tests.orchestrator.streamed_files import write_digits_csv


def _inspect(path, **data):
    return inspect_source({"source": "csv", "path": str(path), **data}, seed=0)


def test_a_directory_or_a_glob_streams_and_a_single_file_loads_whole(tmp_path):
    write_digits_csv(tmp_path / "rows")
    assert DataSpec(source="csv", path=str(tmp_path / "rows")).streams
    assert DataSpec(source="csv", path=str(tmp_path / "rows" / "*.csv")).streams
    assert not DataSpec(source="csv", path=str(tmp_path / "rows" / "part-0.csv")).streams
    assert DataSpec(source="csv", train_path="a/", val_path="b/", test_path="c/").streams


@pytest.mark.parametrize("delimiter", [",", ";", "\t"])
def test_the_columns_and_an_estimate_of_the_rows_come_from_the_first_rows(tmp_path, delimiter):
    write_digits_csv(tmp_path, delimiter=delimiter)
    source = _inspect(tmp_path)
    assert (source.format, source.csv_delimiter, source.csv_header) == ("csv", delimiter, True)
    assert source.feature_columns == tuple(f"p{i}" for i in range(64)) and source.input_shape == (64,)
    assert source.counted_at_start and 0.9 * 1797 < source.n_rows["train"] < 1.1 * 1797
    assert source.num_classes == 8  # the first rows hold labels 0-7: a lower bound, counted at the start
    assert [unit["path"] for unit in source.units["train"]] == [str(tmp_path / f"part-{i}.csv") for i in range(3)]


def test_files_without_a_header_take_the_last_column_as_the_label(tmp_path):
    write_digits_csv(tmp_path, header=False)
    source = _inspect(tmp_path)
    assert not source.csv_header and source.label_column == "65" and len(source.feature_columns) == 64
    with pytest.raises(SourceError, match=r"part-0.csv: data.label_column='label' needs a header line, but the file has none"):
        _inspect(tmp_path, label_column="label")


def test_a_file_whose_header_differs_is_named(tmp_path):
    write_digits_csv(tmp_path)
    (tmp_path / "part-9.csv").write_text("p0,p1,label\n1,2,0\n")
    with pytest.raises(SourceError, match=r"part-9.csv: its header \['p0', 'p1', 'label'\] differs from .*part-0.csv's"):
        _inspect(tmp_path)


def test_a_text_column_a_missing_label_and_spaces_are_named_with_the_file(tmp_path):
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.csv").write_text("p0,colour,label\n1,red,0\n2,blue,1\n")
    with pytest.raises(SourceError, match=r"a.csv: column 'colour' is string; features must be numeric"):
        _inspect(tmp_path / "text")
    with pytest.raises(SourceError, match=r"a.csv: data.label_column='target' is not a column; columns: p0, colour, label"):
        _inspect(tmp_path / "text", label_column="target")
    (tmp_path / "spaces").mkdir()
    (tmp_path / "spaces" / "s.csv").write_text("1 2 0\n3 4 1\n")
    with pytest.raises(SourceError, match=r"s.csv: columns separated by spaces do not stream"):
        _inspect(tmp_path / "spaces")


def test_a_first_label_past_num_classes_or_negative_is_named(tmp_path):
    write_digits_csv(tmp_path)
    with pytest.raises(SourceError, match=r"part-0.csv: label 7 is past data.num_classes=5 \(labels run 0 to 4\)"):
        _inspect(tmp_path, num_classes=5)
    (tmp_path / "neg").mkdir()
    (tmp_path / "neg" / "n.csv").write_text("p0,label\n1,0\n2,-1\n")
    with pytest.raises(SourceError, match=r"n.csv: label -1 is negative"):
        _inspect(tmp_path / "neg")


def test_an_empty_directory_is_named(tmp_path):
    with pytest.raises(SourceError, match=r"data.path '.*' matches no csv file"):
        _inspect(tmp_path)


def test_validate_says_the_counts_are_estimates(accelsweep, write_spec, tmp_path):
    write_digits_csv(tmp_path / "rows")
    write_spec({"name": "c", "data": {"source": "csv", "path": str(tmp_path / "rows")}, "space": {}})
    result = accelsweep("validate", "spec.yaml")
    assert result.returncode == 0, result.stderr
    assert "trials of mlp on csv:rows (about " in result.stdout and "input 64, at least 8 classes)" in result.stdout
