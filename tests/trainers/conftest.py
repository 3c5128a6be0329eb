"""Fixtures shared by the trainers tests."""

import pytest

from trainers.checkpoints import save_atomically
from trainers.data import load_dataset
from trainers.loop import TrialRecipe, train_trial


@pytest.fixture(scope="session")
def baseline_mlp(tmp_path_factory):
    """A dense digits MLP (hidden 64) trained for 2 epochs: (its recipe, its trained.pt), the start
    weights of the tests of `TrialRecipe.start_from`."""
    recipe = TrialRecipe(hidden=(64,), epochs=2)
    kept = {}
    train_trial(recipe, load_dataset("digits"), lambda metrics, checkpoint: kept.update(checkpoint or {}))
    path = str(tmp_path_factory.mktemp("baseline") / "trained.pt")
    save_atomically(kept["trained"], path)
    return recipe, path
