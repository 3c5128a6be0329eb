"""A stored sweep of three really trained trials, as `TrialLogger` stores them, for the quiet phase's tests."""

import pytest
import yaml

from orchestrator.config.loading import parse_spec
from orchestrator.quiet import measurement
from orchestrator.sweep.search import baseline_choices
from orchestrator.tracking import store, trial_runs
from tests.orchestrator.stored_sweep import trained_trial
from trainers.data import load_dataset

SPEC = {
    "name": "benchdemo",
    "data": {"source": "digits"},
    "model": {"kind": "mlp", "hidden": [32]},
    "train": {"epochs": 1},
    "space": {"quant_bits": {"choice": [32, 8]}, "dropout": {"choice": [0.0, 0.1]}},
    "deploy": {"runtimes": ["onnxruntime", "eager"], "batch_sizes": [1, 16], "rounds": 3},
    "tracking": {"experiment": "benchdemo"},
}
TRIALS = [("t0", None), ("t1", {"quant_bits": 8, "dropout": 0.0}), ("t2", {"quant_bits": 32, "dropout": 0.1})]


@pytest.fixture(scope="module")
def stored_trials(tmp_path_factory, new_mlflow_store):
    """A sweep of SPEC with the baseline and two trials that really trained, stored in a new sqlite
    store: (client, parent run id, `measurement.trials_to_measure`'s list, spec, data)."""
    root = tmp_path_factory.mktemp("bench")
    client = store.connect(new_mlflow_store(root / "mlflow.db"))
    client.create_experiment("benchdemo", artifact_location=(root / "artifacts").as_uri())
    spec = parse_spec(SPEC)
    parent_id = store.start_sweep_run(client, spec, yaml.safe_dump(SPEC), str(root / "results"))
    data = load_dataset("digits")
    runs = trial_runs.TrialRuns(client, parent_id, spec.name)
    for trial_id, choices in TRIALS:
        trained_trial(runs, spec, data, trial_id, choices or baseline_choices(spec), root / trial_id)
    return client, parent_id, measurement.trials_to_measure(client, client.get_run(parent_id)), spec, data
