"""`accelsweep ui [SWEEP]`: the MLflow UI on 127.0.0.1, with deep links to the sweep's trials and plot."""

import argparse

from orchestrator.cli.options import add_uri_option, port_number


def register(commands: argparse._SubParsersAction) -> None:
    """Add `ui` to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    ui = commands.add_parser(
        "ui",
        help="open the MLflow UI on the sweep results",
        description=(
            "Serve the MLflow UI for the tracking store until Ctrl-C, and print links to the sweep's "
            "trials and its trade-off plot (opened in a browser where there is a desktop). Binds "
            "127.0.0.1 unless --host says otherwise."
        ),
    )
    ui.add_argument("sweep", nargs="?", help="the sweep's name or parent run id (default: the newest sweep)")
    add_uri_option(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=port_number, default=5000, help="port to serve on (default 5000)")
    ui.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    """Serve the MLflow UI until Ctrl-C.

    Example:
        >>> main(parser.parse_args(["ui", "quickstart"]))  # doctest: +SKIP
        0
    """
    from orchestrator.config.schema import tracking_uri
    from orchestrator.results import mlflow_ui

    return mlflow_ui.serve(tracking_uri(args.uri), args.sweep, args.host, args.port, verbose=args.verbose)
