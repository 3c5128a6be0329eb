"""`accelsweep report NAME`: the trade-off table of a finished sweep, from MLflow alone; with --plot
its plot, with --max-accuracy-drop the trial to deploy, with --register that trial in the MLflow
Model Registry."""

import argparse
import logging
import sys

from orchestrator.cli.options import add_trust_options, add_uri_option, comma_separated, finite_float, png_path, registered_model_name
from orchestrator.errors import UserError
from orchestrator.results.text import FORMATS

logger = logging.getLogger("accelsweep")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `report` to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    report = commands.add_parser(
        "report",
        help="print a finished sweep's trade-off table from MLflow",
        description="Read a sweep back from MLflow alone (works after the fact, from any machine).",
    )
    report.add_argument("sweep", help="the sweep's name (its newest run) or its parent run id")
    report.add_argument("--format", choices=FORMATS, default="table")
    add_uri_option(report)
    report.add_argument("--plot", metavar="PNG", type=png_path, help="also write the trade-off plot (accuracy vs latency) to PNG")
    report.add_argument(
        "--log",
        action="store_true",
        help="rewrite the sweep's report in MLflow: tradeoff.png/.html/.csv/.md and the runs' descriptions",
    )
    _add_choice_options(report)
    report.add_argument(
        "--objectives",
        metavar="METRICS",
        type=comma_separated,
        help="comma-separated metrics the Pareto front is drawn over, each optimised in its own direction "
        "(default test_accuracy,latency_ms,size_bytes; training speed: e.g. test_accuracy,time_to_target_s,cost_cpu_s)",
    )
    report.add_argument(
        "--target-tolerance",
        type=finite_float,
        default=0.01,
        metavar="DROP",
        help="time_to_target_s races to the baseline's final validation accuracy minus DROP (default 0.01), "
        "unless the spec set train.target_accuracy",
    )
    report.add_argument(
        "--host",
        help="show the latencies HOST measured (after `accelsweep bench` there); default: the latest measurement",
    )
    add_trust_options(report)
    report.set_defaults(command=main)


def _add_choice_options(report):
    report.add_argument(
        "--max-accuracy-drop",
        type=finite_float,
        metavar="DROP",
        help="name the fastest trial whose test accuracy is at most DROP below the baseline's "
        "(absolute: 0.01 = one point); exits 2 if none is",
    )
    report.add_argument(
        "--optimize",
        choices=("latency", "size"),
        help="with --max-accuracy-drop: pick the lowest latency (default) or the smallest stored size",
    )
    report.add_argument(
        "--register",
        metavar="MODEL",
        type=registered_model_name,
        help="with --max-accuracy-drop: register the chosen trial's shipped artifact (its model.onnx, with "
        "MLflow's ONNX flavour, for an onnxruntime trial) in the MLflow Model Registry as MODEL",
    )


def main(args: argparse.Namespace) -> int:
    """Print the sweep's table; then, as asked, log it, plot it, choose a trial and register it.

    Example:
        >>> main(parser.parse_args(["report", "quickstart"]))  # doctest: +SKIP
        0
    """
    if args.max_accuracy_drop is None and (args.register is not None or args.optimize):
        raise UserError("--register and --optimize choose a trial: give --max-accuracy-drop too")
    from orchestrator.config.schema import tracking_uri
    from orchestrator.deploy import trust
    from orchestrator.results import png, publish, selection, text
    from orchestrator.results import rows as results_rows
    from orchestrator.tracking import store
    from orchestrator.tracking.tags import SWEEP_TAG

    client = store.connect(tracking_uri(args.uri), create=False)
    parent = store.find_sweep_run(client, args.sweep)
    if args.register:  # the model is rebuilt from the spec: refuse a stored one the user has not vouched for
        spec, _ = trust.vouched_spec(client, parent, args.spec, args.trust_stored_spec)
    objectives = results_rows.parse_objectives(",".join(args.objectives)) if args.objectives else None
    rows = results_rows.sweep_rows(client, parent, host=args.host, objectives=objectives, target_tolerance=args.target_tolerance)
    print(text.format_rows(rows, args.format, objectives))
    if args.log:
        publish.log_report(client, parent.info.run_id, rows)
    if args.plot:
        x_axis = next((key for key, _ in objectives or [] if key != "test_accuracy"), "latency_ms")
        png.plot_tradeoff(rows, args.plot, title=parent.data.tags.get(SWEEP_TAG, args.sweep), x=x_axis)
        logger.info("plot written to %s", args.plot)
    if args.max_accuracy_drop is None:
        return 0
    optimize = args.optimize or "latency"
    chosen = selection.select_trial(rows, args.max_accuracy_drop, optimize)
    out = sys.stdout if args.format in ("table", "markdown") else sys.stderr  # keep csv/json parseable
    print(selection.describe_choice(chosen, args.max_accuracy_drop, optimize), file=out)
    if args.register:
        from orchestrator.deploy import model_registry  # imports torch: only when registering

        version = model_registry.register_trial(client, parent, spec, chosen, args.register).version
        print(f"registered as model {args.register!r} version {version}: models:/{args.register}/{version}", file=out)
    return 0
