"""orchestrator.tracking.filters: a value with a quote in it finds its run in a real MLflow store."""

import pytest
from mlflow.tracking import MlflowClient

from orchestrator.tracking.filters import quoted


@pytest.mark.parametrize("value", ["plain", "name'x", 'say "hi"', "/tmp/a b/c-1"])
def test_quoted_values_match_exactly_in_a_real_store(tmp_path, new_mlflow_store, value):
    client = MlflowClient(new_mlflow_store(tmp_path / "mlflow.db"))
    experiment = client.create_experiment("e")
    wanted = client.create_run(experiment, tags={"t": value}).info.run_id
    client.create_run(experiment, tags={"t": value + "x"})
    runs = client.search_runs([experiment], filter_string=f"tags.t = {quoted(value)}")
    assert [run.info.run_id for run in runs] == [wanted]


def test_a_value_with_both_quotes_cannot_be_quoted():
    with pytest.raises(ValueError, match="holds both"):
        quoted("it's \"odd\"")
