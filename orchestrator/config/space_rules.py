"""The rules of a spec's `space`: sampling forms, ranges, technique values, and what each search
algorithm accepts.
"""

import math

from orchestrator.config.schema import SAMPLING_FORMS, _cut, _did_you_mean, _is_number, _show


def domain_of(value: object) -> tuple[str, list]:
    """Split one `space` entry into its sampling form and values.

    Args:
        value: a fixed value, or a one-key mapping such as {"choice": [...]}.

    Returns:
        (form, values): form is "fixed" (values = [value]) or one of SAMPLING_FORMS.

    Example:
        >>> domain_of({"loguniform": [1e-5, 1e-2]})
        ('loguniform', [1e-05, 0.01])
    """
    if isinstance(value, dict):
        ((form, values),) = value.items()
        return form, list(values)
    return "fixed", [value]


def _target_problems(spec):
    if "time_to_target_s" not in spec.search.metrics or spec.train.target_accuracy is not None:
        return []
    return [
        "search.metric: time_to_target_s needs train.target_accuracy (e.g. 0.88): without it the target is "
        "the baseline's final accuracy minus a point, known only once the sweep is done; or draw the front "
        "afterwards: accelsweep report SWEEP --objectives test_accuracy,time_to_target_s"
    ]


def _start_from_problems(spec):
    """The space's values that cannot start from the baseline's weights (`train.start_from:
    baseline`): a data-phase technique changes the model's inputs (feature selection), so the
    baseline's first layer does not fit its trials."""
    if spec.train.start_from != "baseline":
        return []
    from trainers.techniques import off_value, phase_order

    problems = []
    for technique in phase_order("data"):
        key = technique.key
        changing = [value for value in _values(spec.space, key) if value != off_value(key)]
        if changing:
            problems.append(
                f"train.start_from: baseline cannot start the trials of space.{key}={_show(changing[0])} from the "
                f"baseline's weights: {key} changes the model's inputs, so the baseline's first layer does not "
                f"fit them; sweep {key} in a spec with start_from: scratch"
            )
    return problems


def _scheduler_problems(spec):
    search = spec.search
    max_t = search.max_t or spec.train.epochs
    if search.scheduler != "asha" or search.grace_period <= max_t:
        return []
    bound = f"search.max_t ({max_t})" if search.max_t else f"train.epochs ({max_t}), ASHA's max_t when search.max_t is unset"
    return [f"search.grace_period: {search.grace_period} is more than {bound}: ASHA lets every trial train grace_period epochs"]


def _communication_problems(spec):
    """The space's communication knobs that cannot take effect: gradient compression together with
    parameter averaging, or either of them where every trial has one worker."""
    space = spec.space
    compresses = any(value != "none" for value in _values(space, "grad_compression"))
    averages = any(_is_number(value) and value > 1 for value in _values(space, "sync_every"))
    problems = []
    if compresses and averages:
        problems.append(
            "space.grad_compression and space.sync_every: gradient compression compresses DDP's per-step gradient "
            "all-reduce, which sync_every > 1 replaces by a parameter average every k steps (which torch does not "
            "compress): they cannot compose; sweep them in separate specs, or keep one at its off value (none, 1)"
        )
    most_workers = max((v for v in _values(space, "workers") if _is_number(v)), default=spec.resources.workers_per_trial)
    if most_workers < 2:
        problems += [
            f"space.{key}: needs trials with workers >= 2 (space.workers or resources.workers_per_trial): "
            "a 1-worker trial has nothing to synchronise"
            for key, active in (("grad_compression", compresses), ("sync_every", averages))
            if active
        ]
    if "powersgd_rank" in space and "powersgd" not in _values(space, "grad_compression"):
        problems.append("space.powersgd_rank: sets PowerSGD's rank, but space.grad_compression never takes powersgd")
    return problems


def _values(space, key):
    return domain_of(space[key])[1] if key in space else []


def _space_problems(space, algorithm):
    if not space:
        return []
    from trainers.techniques import OPTION_KEYS, TECHNIQUES

    space_keys = (*TECHNIQUES, *OPTION_KEYS, "workers")
    problems = []
    for key, value in space.items():
        where = f"space.{_cut(str(key))}"
        if key not in space_keys:
            problems.append(f"{where}: unknown key{_did_you_mean(str(key), space_keys)}; valid keys: {', '.join(space_keys)}")
            continue
        problem = _domain_problem(key, value, where)
        if problem is None:
            problem = _algorithm_problem(algorithm, key, value, where)
        if problem:
            problems.append(problem)
    return problems


def _domain_problem(key, value, where):
    if isinstance(value, dict):
        forms = ", ".join(SAMPLING_FORMS)
        if len(value) != 1:
            return f"{where}: give exactly one sampling form ({forms}), got {_cut(', '.join(map(str, value))) or 'none'}"
        if next(iter(value)) not in SAMPLING_FORMS:
            form = str(next(iter(value)))
            return f"{where}: unknown sampling form{_did_you_mean(form, SAMPLING_FORMS)}; use a fixed value or one of {forms}"
        form, values = next(iter(value.items()))
        where = f"{where}.{form}"
        if key == "workers" and form in ("uniform", "loguniform"):
            return f"{where}: workers are counted: use a fixed value, choice, grid or randint"
        if not isinstance(values, list) or not values:
            return f"{where}: expected a non-empty list, got {_show(values)}"
        if form in ("uniform", "loguniform", "randint"):
            return _range_problem(key, form, values, where)
        for index, item in enumerate(values):
            problem = _value_problem(key, item)
            if problem:
                return f"{where}[{index}]: {problem}"
        return None
    problem = _value_problem(key, value)
    return f"{where}: {problem}" if problem else None


def _range_problem(key, form, values, where):
    if len(values) != 2 or not all(_is_number(v) for v in values):
        return f"{where}: expected [low, high] numbers, got {_show(values)}"
    low, high = values
    if not low < high:
        return f"{where}: low must be below high, got {_show(values)}"
    if form == "loguniform" and low <= 0:
        return f"{where}: loguniform needs low > 0, got {_show(low)}"
    if form == "randint" and not all(isinstance(v, int) for v in values):
        return f"{where}: randint needs integers, got {_show(values)}"
    samples = range(low, high + 1) if form == "randint" and high - low <= 1000 else values
    for sample in samples:
        problem = _value_problem(key, sample)
        if problem:
            return f"{where}: the range admits {_show(sample)}, which is invalid: {problem}"
    return None


def _value_problem(key, value):
    from trainers.techniques import OPTION_KEYS, TECHNIQUES

    if isinstance(value, float) and not math.isfinite(value):
        return f"must be a finite number, got {_show(value)}"
    if key == "workers":
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"workers must be an integer >= 1, got {_show(value)}"
        return None
    try:
        TECHNIQUES[OPTION_KEYS[key]](**{key: value}) if key in OPTION_KEYS else TECHNIQUES[key](value)
    except (TypeError, ValueError, OverflowError) as error:
        return _cut(str(error))
    return None


def _algorithm_problem(algorithm, key, value, where):
    from trainers.techniques import TECHNIQUES, off_value

    form, values = domain_of(value)
    if algorithm == "grid" and form not in ("fixed", "choice", "grid"):
        return f"{where}: algorithm grid needs fixed values or lists (choice/grid), got {form}"
    if algorithm == "optuna" and form == "grid":
        return f"{where}: algorithm optuna samples, it does not enumerate: use choice instead of grid"
    if algorithm == "optuna" and form == "choice" and key in TECHNIQUES:
        off = off_value(key)
        if off not in values:
            return (
                f"{where}.choice: algorithm optuna runs the dense fp32 baseline as its first trial, "
                f"so the choices must include its value {_show(off).replace('None', 'null')}"
            )
    return None
