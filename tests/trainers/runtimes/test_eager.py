from tests.trainers.runtimes.toys import export_inputs, mlp
from trainers.runtimes import export_to


def test_eager_is_the_techniques_own_export():
    inputs = export_inputs(mlp(), bits=4)
    assert export_to("eager", inputs) is inputs.eager
