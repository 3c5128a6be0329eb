import pytest

from trainers.techniques import OPTION_KEYS, techniques_from_choices
from trainers.techniques.grad_compression import GradCompression


@pytest.mark.parametrize("bad", [{"grad_compression": "int8"}, {"powersgd_rank": 0}, {"powersgd_rank": 2.5}, {"powersgd_rank": True}])
def test_bad_values_name_the_field(bad):
    with pytest.raises(ValueError, match="GradCompression."):
        GradCompression(**bad)


def test_off_labels_and_the_rank_option_from_the_space():
    assert not GradCompression().active and GradCompression().label() == ""
    assert OPTION_KEYS["powersgd_rank"] == "grad_compression"
    configs = techniques_from_choices({"grad_compression": "powersgd", "powersgd_rank": 8})
    assert configs["grad_compression"] == GradCompression("powersgd", powersgd_rank=8)
    assert configs["grad_compression"].label() == "psgd8"
