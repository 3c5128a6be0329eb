import dataclasses
import os

import pytest
import torch
from torch import nn

from tests.trainers.runtimes.toys import export_inputs, mlp
from trainers.deployable import EagerDeployable
from trainers.runtimes import RuntimeUnavailable, export_to, max_abs_diff


class DataDependent(nn.Module):
    def forward(self, x):
        return x if x.sum() > 0 else -x


@pytest.mark.slow
def test_aotinductor_package_matches_eager_and_stores_the_package(tmp_path):
    inputs = export_inputs(mlp())
    deployable = export_to("aotinductor", inputs)
    assert max_abs_diff(deployable, inputs.eager, inputs.calibration) < 1e-5
    assert deployable(inputs.calibration[:1]).shape == (1, 10)  # the batch dimension is dynamic
    path = deployable.save(str(tmp_path))
    assert os.path.getsize(path) == deployable.stored_bytes()
    assert deployable.parameter_count() == inputs.eager.parameter_count()
    reloaded = torch._inductor.aoti_load_package(path)
    assert torch.equal(reloaded(inputs.example), deployable(inputs.example))


def test_a_module_torch_export_cannot_capture_is_unavailable_with_the_reason():
    inputs = export_inputs(mlp())
    data_dependent = dataclasses.replace(inputs, eager=EagerDeployable(DataDependent()))
    with pytest.raises(RuntimeUnavailable, match="AOTInductor build failed: .*"):
        export_to("aotinductor", data_dependent)
