"""Options several commands share: the tracking store, and vouching for a stored spec."""

import argparse


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
