import pytest

from trainers.techniques import label_string, techniques_from_choices
from trainers.techniques.sync_every import SyncEvery


@pytest.mark.parametrize("bad", [0, 2.0, True, "8"])
def test_bad_periods_name_the_field(bad):
    with pytest.raises(ValueError, match="SyncEvery.sync_every"):
        SyncEvery(bad)


def test_one_is_ddp_itself_and_off():
    assert not SyncEvery(1).active and SyncEvery(1).label() == ""
    assert label_string(techniques_from_choices({"sync_every": 8})) == "sync8"
