"""An images source is a folder per class: checked from its listing and a few images, the bad
folder or file named."""

import pytest

from orchestrator.config.schema import DataSpec
from orchestrator.config.preflight import inspect_source
from orchestrator.config.streamed_source import SourceError
from tests.orchestrator.streamed_files import write_digits_images


def _inspect(path, **data):
    return inspect_source({"source": "images", "path": str(path), **data}, seed=0)


@pytest.mark.parametrize("mode, channels", [("L", 1), ("RGB", 3)])
def test_each_class_folder_is_a_label_and_an_example_is_channels_by_height_by_width(tmp_path, mode, channels):
    _, labels = write_digits_images(tmp_path, mode=mode, rows=slice(0, 200))
    (tmp_path / "c3" / "notes.txt").write_text("not an image")
    source = _inspect(tmp_path)
    assert source.class_names == tuple(f"c{label}" for label in range(10)) and source.num_classes == 10
    assert (source.input_shape, source.image_mode) == ((channels, 8, 8), mode)
    assert sum(source.n_rows.values()) == 200 and not source.counted_at_start
    units = [unit for split in ("train", "val", "test") for unit in source.units[split]]
    assert sorted(unit["label"] for unit in units) == sorted(labels.tolist())
    assert all(unit["path"].endswith(".png") for unit in units)
    assert _inspect(tmp_path, image_size=[16, 12]).input_shape == (channels, 16, 12)


def test_the_seeded_split_is_of_files_by_path_the_same_for_a_seed_wherever_the_folder_is(tmp_path):
    write_digits_images(tmp_path / "a")
    split = _inspect(tmp_path / "a")
    assert not split.split_from_seed  # split here, from the listing: a read decodes its own split's images only
    assert split.n_train + split.n_val + split.n_test == 1797 and 0.05 < split.n_val / 1797 < 0.15 and 0.15 < split.n_test / 1797 < 0.25
    (tmp_path / "a").rename(tmp_path / "b")
    moved = _inspect(tmp_path / "b")
    assert [unit["path"].replace("/b/", "/a/") for unit in moved.units["val"]] == [unit["path"] for unit in split.units["val"]]
    other_seed = inspect_source({"source": "images", "path": str(tmp_path / "b")}, seed=1)
    assert other_seed.units["val"] != moved.units["val"]


def test_given_splits_share_the_training_folders_labels_and_an_unknown_class_is_named(tmp_path):
    write_digits_images(tmp_path / "train", rows=slice(0, 300))
    write_digits_images(tmp_path / "val", rows=slice(300, 400))
    write_digits_images(tmp_path / "test", rows=slice(400, 500))
    paths = {"train_path": str(tmp_path / "train"), "val_path": str(tmp_path / "val"), "test_path": str(tmp_path / "test")}
    source = inspect_source({"source": "images", **paths}, seed=0)
    assert (source.n_train, source.n_val, source.n_test) == (300, 100, 100) and not source.split_from_seed
    (tmp_path / "val" / "zebra").mkdir()
    (tmp_path / "train" / "c0" / "0.png").replace(tmp_path / "val" / "zebra" / "0.png")
    with pytest.raises(SourceError, match=r"data.val_path: class folder 'zebra' is not one of data.train_path's: c0, c1"):
        inspect_source({"source": "images", **paths}, seed=0)


def test_a_path_that_is_not_a_folder_or_holds_one_class_is_refused(tmp_path):
    with pytest.raises(SourceError, match=r"data.path '.*nothing' is not a folder \(source 'images' reads a folder per class\)"):
        _inspect(tmp_path / "nothing")
    write_digits_images(tmp_path / "one", rows=slice(0, 1))
    with pytest.raises(SourceError, match=r"found 1 class folder holding images; a classifier needs at least 2"):
        _inspect(tmp_path / "one")


def test_an_image_that_cannot_be_decoded_is_named(tmp_path):
    write_digits_images(tmp_path, rows=slice(0, 30))
    (tmp_path / "c0" / "0.png").write_bytes(b"not a png")
    with pytest.raises(SourceError, match=r"c0/0.png: cannot decode as an image"):
        _inspect(tmp_path)


def test_image_size_is_two_sizes_and_only_for_images():
    with pytest.raises(ValueError, match=r"give \[height, width\], two integers >= 1, got \[8\]"):
        DataSpec(source="images", path="x", image_size=[8])
    with pytest.raises(ValueError, match=r"image_size is for source 'images', not 'parquet'"):
        DataSpec(source="parquet", path="x", image_size=[8, 8])
