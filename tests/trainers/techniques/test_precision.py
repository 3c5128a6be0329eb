import pytest
import torch

from trainers.techniques.precision import Precision, autocast, grad_scaler


def test_values_are_checked_and_named():
    with pytest.raises(ValueError, match="Precision.precision.*'fp8'"):
        Precision("fp8")
    assert not Precision().active and Precision().label() == ""
    assert Precision("bf16").label() == "bf16"


@pytest.mark.parametrize("name, dtype", [("bf16", torch.bfloat16), ("fp16", torch.float16)])
def test_autocast_runs_matmuls_in_the_lower_precision(name, dtype):
    layer = torch.nn.Linear(8, 8)
    with autocast(Precision(name), torch.device("cpu")):
        assert layer(torch.randn(2, 8)).dtype == dtype
    with autocast(Precision("fp32"), torch.device("cpu")):
        assert layer(torch.randn(2, 8)).dtype == torch.float32


def test_only_fp16_scales_gradients():
    assert grad_scaler(Precision("fp16"), torch.device("cpu")).is_enabled()
    assert not grad_scaler(Precision("bf16"), torch.device("cpu")).is_enabled()
