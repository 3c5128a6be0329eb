"""orchestrator.config.recipe: a trial's recipe and label from a spec and its choices."""

import dataclasses

from orchestrator.config.loading import parse_spec
from orchestrator.config.recipe import recipe_for, trial_label, workers_of
from orchestrator.config.schema import TrainSpec
from trainers.loop import TrialRecipe


def test_every_train_key_reaches_the_recipe_by_its_own_name():
    recipe_fields = {field.name for field in dataclasses.fields(TrialRecipe)}
    assert set(TrainSpec.model_fields) <= recipe_fields
    spec = parse_spec({"name": "t", "data": {"source": "digits"},
                       "train": {"epochs": 3, "schedule": "cosine", "clip_norm": 1.5, "target_accuracy": 0.9,
                                 "start_from": "baseline"}})  # fmt: skip
    recipe = recipe_for(spec, {"rank": 8, "workers": 2})
    assert {key: getattr(recipe, key) for key in TrainSpec.model_fields} == spec.train.model_dump()
    assert recipe.choices == {"rank": 8}


def test_the_label_reads_the_recipe_and_names_extra_workers():
    spec = parse_spec({"name": "t", "data": {"source": "digits"}})
    assert trial_label(spec, {"rank": 16, "quant_bits": 8, "workers": 2}) == "r16-q8-w2"
    assert trial_label(spec, {"rank": None, "workers": 2}) == "w2"
    assert trial_label(spec, {"rank": None}) == "baseline"
    assert workers_of(spec, {}) == 1
