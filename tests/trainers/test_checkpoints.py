import pytest
import torch

from trainers.checkpoints import CheckpointError, load_trained, save_atomically


def test_checkpoints_round_trip_through_an_atomic_write(tmp_path):
    path = tmp_path / "trained.pt"
    save_atomically({"epoch": 2, "model": {"w": torch.ones(2)}, "optimizer": {}}, str(path))
    assert load_trained(str(path))["epoch"] == 2
    assert [p.name for p in tmp_path.iterdir()] == ["trained.pt"]  # no partial file left behind


@pytest.mark.parametrize(
    "content",
    [b"", b"not a checkpoint at all", b"PK\x03\x04truncated zip"],
)
def test_a_corrupt_checkpoint_gives_a_clear_error(tmp_path, content):
    path = tmp_path / "trained.pt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match=f"checkpoint {path} cannot be read"):
        load_trained(str(path))


def test_a_checkpoint_with_code_in_it_is_refused(tmp_path):
    path = tmp_path / "trained.pt"
    torch.save({"epoch": 1, "model": {}, "optimizer": {}, "hook": print}, path)
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_trained(str(path))


def test_a_file_that_is_not_a_trial_checkpoint_is_refused(tmp_path):
    path = tmp_path / "trained.pt"
    torch.save({"weights": torch.ones(1)}, path)
    with pytest.raises(CheckpointError, match="not a trial checkpoint"):
        load_trained(str(path))
