"""`accelsweep resume SWEEP`: continue an interrupted sweep where it stopped, in the same MLflow run."""

import argparse
import logging
import os

from orchestrator.cli import sweep_workflow
from orchestrator.cli.options import add_trust_options, add_uri_option

logger = logging.getLogger("accelsweep")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `resume` to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    resume = commands.add_parser(
        "resume",
        help="continue an interrupted sweep in its MLflow run",
        description=(
            "Continue a sweep that was interrupted (Ctrl-C, a killed driver, a lost head node): "
            "finished trials are kept, unfinished ones restart from their last checkpoints, and "
            "everything lands in the same MLflow parent run."
        ),
    )
    resume.add_argument("sweep", help="the sweep's name (its newest run), its parent run id, or its results path")
    add_uri_option(resume)
    add_trust_options(resume)
    resume.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    """Resume the sweep `args.sweep` names; returns the exit code (1 when a trial failed).

    Example:
        >>> main(argparse.Namespace(sweep="quickstart", uri=None, spec=None, trust_stored_spec=False))  # doctest: +SKIP
        0
    """
    from orchestrator.config.preflight import load_data
    from orchestrator.config.schema import tracking_uri
    from orchestrator.deploy import trust
    from orchestrator.quiet.on_ray import measure_sweep
    from orchestrator.sweep import streaming, tuner
    from orchestrator.tracking import store
    from orchestrator.tracking.tags import RESULTS_PATH_TAG

    client = store.connect(tracking_uri(args.uri), create=False)
    if os.path.isdir(args.sweep):
        parent = store.find_sweep_by_results_path(client, os.path.abspath(args.sweep))
    else:
        parent = store.find_sweep_run(client, args.sweep)
    spec, spec_path = trust.vouched_spec(client, parent, args.spec, args.trust_stored_spec, resuming=True)
    results_path = trust.own_results_path(parent.data.tags.get(RESULTS_PATH_TAG, ""), spec, spec_path)
    data = load_data(spec, spec_path)
    sweep_workflow.connect_ray(spec, args)
    data = streaming.sweep_data(data, spec_path)  # a streamed source's statistics: one Ray Data pass

    client.update_run(parent.info.run_id, status="RUNNING")
    logger.info("resuming sweep %s (MLflow run %s) from %s", spec.name, parent.info.run_id, results_path)
    with sweep_workflow.resumable_on_interrupt(client, parent.info.run_id, spec):
        trial_logger = tuner.resume_sweep(spec, data, results_path)
        measure_sweep(spec, data, client, parent.info.run_id)
    return sweep_workflow.conclude(spec, client, parent.info.run_id, trial_logger, search_front=None)
