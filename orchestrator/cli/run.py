"""`accelsweep run SPEC`: check everything, then sweep, then print the trade-off table."""

import argparse
import logging
import os
import time
from pathlib import Path

from orchestrator.cli import sweep_workflow
from orchestrator.config.credentials import redact

logger = logging.getLogger("accelsweep")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `run` to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    run = commands.add_parser(
        "run",
        help="run a sweep and print its trade-off table",
        description=(
            "Validate SPEC, load its data, start (or connect to) Ray, run every trial, log each "
            "to MLflow as a child of one sweep run, and print all trials with the Pareto front "
            "over (test accuracy, latency, size) marked. Exits 2 on a bad spec, before anything runs."
        ),
    )
    run.add_argument("spec", help="the sweep spec (YAML), e.g. search_spaces/quickstart.yaml")
    run.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    """Run the sweep of `args.spec`; returns the exit code (1 when a trial failed).

    Example:
        >>> main(argparse.Namespace(spec="search_spaces/quickstart.yaml", verbose=False))  # doctest: +SKIP
        0
    """
    from orchestrator.config.loading import load_spec
    from orchestrator.config.preflight import load_data

    spec = load_spec(args.spec)
    data = load_data(spec, args.spec)
    from orchestrator.quiet.on_ray import measure_sweep  # Ray and MLflow load once the spec and data are known good
    from orchestrator.sweep import progress, search, streaming, tuner
    from orchestrator.sweep.trial_logger import TrialLogger
    from orchestrator.tracking import store

    sweep_workflow.connect_ray(spec, args)  # before the store: a Ray that does not answer leaves no mlflow.db behind
    data = streaming.sweep_data(data, args.spec)  # a streamed source's statistics: one Ray Data pass
    client = sweep_workflow.connect_store(spec, args.spec)
    results_path = os.path.join(spec.results_dir, f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    parent_id = store.start_sweep_run(client, spec, redact(Path(args.spec).read_text()), results_path)
    total = search.planned_trials(spec)
    logger.info("sweep %s: %d trials, MLflow run %s in %s", spec.name, total, parent_id, redact(spec.tracking_uri))
    trial_logger = TrialLogger(spec.tracking_uri, parent_id, spec, os.path.join(results_path, "mlflow_outbox"))
    search_alg = search.search_algorithm(spec)
    with sweep_workflow.resumable_on_interrupt(client, parent_id, spec):
        tuner.run_sweep(spec, data, [trial_logger, progress.ProgressLog(spec, total)], results_path, search_alg)
        measure_sweep(spec, data, client, parent_id)
    return sweep_workflow.conclude(spec, client, parent_id, trial_logger, search.optuna_front(search_alg))
