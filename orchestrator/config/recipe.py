"""What one trial of a spec is: its plain `TrialRecipe` for the trainers' loop, its number of
workers, and its label (the recipe at a glance, as run names and the `accelsweep.mode` tag show it).
"""

from orchestrator.config.schema import Spec
from trainers.loop import TrialRecipe
from trainers.techniques import label_string, techniques_from_choices


def recipe_for(spec: Spec, choices: dict, device: str = "cpu") -> TrialRecipe:
    """The plain recipe the trainers loop runs for one trial of `spec`. Every `train` key of the
    spec passes by its own name: a new training setting is a `TrialRecipe` field and the
    `TrainSpec` key of the same name, nothing in between.

    Args:
        spec: the sweep spec.
        choices: the trial's sampled values by space key.
        device: the device the trial's worker trains on.

    Returns:
        The trial's recipe.

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> recipe_for(spec, {"rank": 8, "workers": 2}).choices
        {'rank': 8}
    """
    return TrialRecipe(
        model_kind=spec.model.kind,
        choices={key: value for key, value in choices.items() if key != "workers"},
        **spec.train.model_dump(),  # every train key, by the name TrainSpec and TrialRecipe share
        hidden=tuple(spec.model.hidden),
        channels=tuple(spec.model.channels),
        model_options=dict(spec.model.options),
        threads=max(1, int(spec.resources.cpus_per_worker)),
        measure_threads=spec.deploy.threads,
        device=device,
        runtime=spec.deploy.runtimes[0],
        max_abs_diff=spec.deploy.max_abs_diff,
    )


def workers_of(spec: Spec, choices: dict) -> int:
    """How many data-parallel workers a trial uses: its `workers` choice, else the spec's default.

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> workers_of(spec, {"workers": 2}), workers_of(spec, {})
        (2, 1)
    """
    return int(choices.get("workers", spec.resources.workers_per_trial))


def trial_label(spec: Spec, choices: dict) -> str:
    """A trial's label: its recipe at a glance, e.g. "r16-q8-d0.1-w2"; "baseline" for the dense fp32
    one. It is the trial's run name and its `accelsweep.mode` tag (the tag keeps its name).

    Args:
        spec: the sweep spec (for the default number of workers).
        choices: the trial's sampled values by space key.

    Example:
        >>> from orchestrator.config.loading import load_spec
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> trial_label(spec, {"rank": 16, "quant_bits": 8, "workers": 2})
        'r16-q8-w2'
    """
    parts = [label_string(techniques_from_choices(choices))]
    workers = workers_of(spec, choices)
    if workers != spec.resources.workers_per_trial:
        parts.append(f"w{workers}")
    if parts[0] == "baseline" and len(parts) > 1:
        parts.pop(0)
    return "-".join(parts)
