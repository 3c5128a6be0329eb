"""Load and validate a sweep spec: every mistake is caught here, before anything runs, in one line
per problem naming the file, the key path and the value.
"""

import os
from pathlib import Path

import yaml
from pydantic import ValidationError

from orchestrator.config.safe_yaml import MAX_DEPTH, _nested_too_deep, _parse_yaml, _read_spec_text, _yaml_problem
from orchestrator.config.schema import Spec, SpecError, _closest, _cut, _did_you_mean, _show
from orchestrator.config.space_rules import (
    _communication_problems,
    _scheduler_problems,
    _space_problems,
    _start_from_problems,
    _target_problems,
)


def load_spec(path: str | os.PathLike) -> Spec:
    """Read and validate a spec file.

    Args:
        path: the YAML file.

    Returns:
        The validated spec.

    Raises:
        SpecError: the file is missing, not YAML, or not a valid spec; the message names the
            file, the key path and the value.

    Example:
        >>> spec = load_spec("search_spaces/quickstart.yaml")
        >>> spec.search.num_samples
        8
    """
    path = Path(path)
    try:
        text = _read_spec_text(path)
    except OSError as error:
        raise SpecError(f"{path}: cannot read the spec: {error.strerror or error}") from None
    except UnicodeDecodeError as error:
        raise SpecError(f"{path}: not UTF-8 text (byte {error.start})") from None
    try:
        raw = _parse_yaml(text)
    except yaml.MarkedYAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {_yaml_problem(error)}") from None
    except yaml.YAMLError as error:
        raise SpecError(f"{path}: not valid YAML: {_cut(' '.join(str(error).split()), 300)}") from None
    return parse_spec(raw, source=str(path))


def parse_spec(raw: object, source: str = "<spec>") -> Spec:
    """Validate an already-parsed spec (a dict, as YAML gives it).

    Args:
        raw: the spec's content.
        source: the name used in messages (usually the file).

    Returns:
        The validated spec.

    Raises:
        SpecError: with one line per problem, each naming `source`, the key path and the value.

    Example:
        >>> parse_spec({"name": "t", "data": {"source": "digits"}}).train.epochs
        5
    """
    if not isinstance(raw, dict):
        raise SpecError(f"{source}: a spec is a mapping of keys (name, data, model, ...), got {_show(raw)}")
    too_deep = _nested_too_deep(raw)
    if too_deep:
        raise SpecError(f"{source}: {too_deep}: nested more than {MAX_DEPTH} levels deep")
    try:
        spec = Spec.model_validate(raw)
    except ValidationError as error:  # the space is checked once the rest is right: it loads torch
        problems = [_describe(problem) for problem in _without_misspelt_missing_keys(error.errors())]
    else:
        problems = (
            _space_problems(spec.space, spec.search.algorithm)
            + _target_problems(spec)
            + _scheduler_problems(spec)
            + _communication_problems(spec)
            + _start_from_problems(spec)
        )
    if problems:
        raise SpecError("\n".join(f"{source}: {problem}" for problem in problems))
    return spec


def _describe(problem):
    location = _cut(".".join(str(part) for part in problem["loc"]))
    if problem["type"] == "extra_forbidden":
        *parent, key = problem["loc"]
        valid = _section_keys(parent)
        return f"{location}: unknown key{_did_you_mean(str(key), valid)}; valid keys: {', '.join(valid)}"
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "missing":
        return f"{location}: missing (required)"
    if "input" in problem and problem["type"] not in ("value_error",):
        message += f", got {_show(problem['input'])}"
    return f"{location}: {message}" if location else message


def _without_misspelt_missing_keys(problems):
    # `data.sorce: unknown key (did you mean 'source'?)` says all; `data.source: missing` would repeat it
    misspelt = set()
    for problem in problems:
        if problem["type"] == "extra_forbidden":
            *parent, key = problem["loc"]
            misspelt.add((*parent, _closest(str(key), _section_keys(parent))))
    return [problem for problem in problems if not (problem["type"] == "missing" and tuple(problem["loc"]) in misspelt)]


def _section_keys(parent):
    model = Spec
    for part in parent:
        model = model.model_fields[part].annotation
    return list(model.model_fields)
