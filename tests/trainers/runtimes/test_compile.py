import pytest
import torch

from tests.trainers.runtimes.toys import export_inputs, mlp
from trainers.runtimes import export_to, max_abs_diff


@pytest.mark.slow
def test_compiled_model_matches_eager_and_stores_the_same_bytes():
    inputs = export_inputs(mlp())
    compiled = export_to("compile", inputs)
    assert compiled.runtime == "compile" and compiled.compile_seconds > 0
    assert max_abs_diff(compiled, inputs.eager, inputs.example) < 1e-5
    assert compiled.stored_bytes() == inputs.eager.stored_bytes()
    assert compiled.parameter_count() == inputs.eager.parameter_count()
    assert isinstance(compiled(inputs.example), torch.Tensor)
