"""Options several commands share (the tracking store, vouching for a stored spec) and the
argument types every command checks its values with."""

import argparse
import math
import os
from collections.abc import Callable
from pathlib import Path


def add_uri_option(parser: argparse.ArgumentParser) -> None:
    """Add `--uri`, the MLflow tracking store to read.

    Args:
        parser: a command's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_uri_option(parser)
        >>> parser.parse_args(["--uri", "sqlite:///x.db"]).uri
        'sqlite:///x.db'
    """
    parser.add_argument("--uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def add_trust_options(parser: argparse.ArgumentParser) -> None:
    """Add `--spec PATH` and `--trust-stored-spec`: what a sweep is rebuilt from (`deploy.trust`).

    Args:
        parser: a command's parser.

    Example:
        >>> parser = argparse.ArgumentParser()
        >>> add_trust_options(parser)
        >>> parser.parse_args(["--trust-stored-spec"]).trust_stored_spec
        True
    """
    parser.add_argument(
        "--spec",
        metavar="PATH",
        help="your own copy of the sweep's spec: the model is rebuilt from it (it must match the spec stored in MLflow)",
    )
    parser.add_argument(
        "--trust-stored-spec",
        action="store_true",
        help="rebuild from the spec stored in MLflow even where it imports code (model.kind 'module:function') "
        "or names a Ray cluster or results folder: only for a store no one else can write",
    )


# Argument types: argparse calls them as it parses, so a bad value is refused (one `error:` line
# naming the flag, exit 2) before a command reads a store, rebuilds a model or prints anything.


def finite_float(text: str) -> float:
    """A finite number (not nan or inf).

    Example:
        >>> finite_float("0.01")
        0.01
    """
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def whole_number(text: str) -> int:
    """An integer, written as one ("7", not "7.0" or "1e3").

    Example:
        >>> whole_number("7")
        7
    """
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None


def port_number(text: str) -> int:
    """A TCP port from 1 to 65535 (0, "any free port", is refused: the links printed need the port).

    Example:
        >>> port_number("5000")
        5000
    """
    port = whole_number(text)
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is from 1 to 65535, got {text!r}")
    return port


def comma_separated(text: str) -> list[str]:
    """A comma-separated list of names, at least one, spaces around them dropped.

    Example:
        >>> comma_separated("onnxruntime, eager")
        ['onnxruntime', 'eager']
    """
    names = [name.strip() for name in text.split(",") if name.strip()]
    if not names:
        raise argparse.ArgumentTypeError(f"needs at least one comma-separated name, got {text!r}")
    return names


def png_path(text: str) -> str:
    """A .png file to write, in a folder that exists and can be written.

    Example:
        >>> png_path("tradeoff.png")
        'tradeoff.png'
    """
    path = Path(text)
    if path.suffix.lower() != ".png":
        raise argparse.ArgumentTypeError(f"writes a PNG: give a file name ending in .png, got {text!r}")
    folder = path.parent
    if not folder.is_dir():
        raise argparse.ArgumentTypeError(f"no folder {str(folder)!r} to write {text!r} in")
    if not os.access(folder, os.W_OK):
        raise argparse.ArgumentTypeError(f"folder {str(folder)!r} cannot be written")
    return text


def deploy_setting(key: str, parse: Callable[[str], object]) -> Callable[[str], object]:
    """An argument type for an override of the spec's `deploy.KEY`, checked by `DeploySpec`'s own rule.

    Args:
        key: the `deploy` key, e.g. "rounds".
        parse: turns the text into the value, e.g. `whole_number`.

    Example:
        >>> deploy_setting("rounds", whole_number)("7")
        7
    """

    def check(text):
        value = parse(text)
        from pydantic import ValidationError  # the spec's schema: only when the flag is given

        from orchestrator.config.schema import DeploySpec

        try:
            DeploySpec.model_validate({key: value})
        except ValidationError as error:
            problem = error.errors()[0]["msg"].removeprefix("Value error, ")
            raise argparse.ArgumentTypeError(problem if "got " in problem else f"{problem}, got {text!r}") from None
        return value

    check.__name__ = key  # argparse names the type in its messages
    return check


def registered_model_name(text: str) -> str:
    """A name the MLflow Model Registry accepts (checked by MLflow's own rule).

    Example:
        >>> registered_model_name("digits-mlp")
        'digits-mlp'
    """
    from mlflow.exceptions import MlflowException  # only when --register is given
    from mlflow.utils.validation import _validate_model_name

    try:
        _validate_model_name(text)
    except MlflowException as error:
        raise argparse.ArgumentTypeError(f"{text!r} is not a model name MLflow accepts: {error.message}") from None
    return text
