"""`accelsweep bench SWEEP`: time a finished sweep's trials again on this machine, quietly and paired
with the baseline, in each runtime; log the figures under this host and print the table."""

import argparse
import logging

from orchestrator.cli.options import add_trust_options, add_uri_option, comma_separated, deploy_setting, whole_number
from orchestrator.errors import UserError

logger = logging.getLogger("accelsweep")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `bench` to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    bench = commands.add_parser(
        "bench",
        help="time a finished sweep's trials again on this machine",
        description=(
            "Rebuild every finished trial of SWEEP from its logged weights, export it to each runtime (its "
            "logged model.onnx is opened as logged), and time them all round-robin with the baseline "
            "(deploy.rounds rounds, deploy.threads threads), on this machine only: run it on the deployment machine against the same MLflow store. The "
            "figures are logged under this host's name; `accelsweep report SWEEP --host HOST` shows them."
        ),
    )
    bench.add_argument("sweep", help="the sweep's name (its newest run) or its parent run id")
    bench.add_argument(
        "--runtimes",
        type=deploy_setting("runtimes", comma_separated),
        help="comma-separated runtimes, the primary first (default: the spec's deploy.runtimes)",
    )
    bench.add_argument("--rounds", type=deploy_setting("rounds", whole_number), help="interleaved rounds (default: the spec's deploy.rounds)")
    bench.add_argument("--gpu", action="store_true", help="time on this machine's first CUDA device")
    add_uri_option(bench)
    add_trust_options(bench)
    bench.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    """Measure the sweep's trials here, log the figures under this host, print the table.

    Example:
        >>> main(parser.parse_args(["bench", "quickstart", "--rounds", "3"]))  # doctest: +SKIP
        0
    """
    import torch

    if args.gpu and not torch.cuda.is_available():
        raise UserError(f"bench --gpu: no CUDA device here (torch {torch.__version__}): run it on the GPU machine, or time on the CPU without --gpu")
    from orchestrator.config.preflight import load_in_memory
    from orchestrator.config.schema import tracking_uri
    from orchestrator.deploy import trust
    from orchestrator.quiet import measurement
    from orchestrator.results import rows as results_rows
    from orchestrator.results import text
    from orchestrator.tracking import store

    client = store.connect(tracking_uri(args.uri), create=False)
    parent = store.find_sweep_run(client, args.sweep)
    spec, spec_path = trust.vouched_spec(client, parent, args.spec, args.trust_stored_spec)
    spec = spec.model_copy(update={"deploy": _deploy_settings(spec, args)})
    data = load_in_memory(spec, spec_path, "accelsweep bench")
    trials = measurement.trials_to_measure(client, parent)
    device = "cuda" if args.gpu else "cpu"
    runtimes = spec.deploy.runtimes
    logger.info("timing %d trials of %s on this machine (%s): %s", len(trials), args.sweep, device, ", ".join(runtimes))
    try:
        measured = measurement.measure_trials(spec, data, trials, runtimes, device)
    except ValueError as error:
        raise UserError(f"{args.sweep}: {error}") from None
    measurement.log_measurements(client, parent.info.run_id, trials, measured)
    host = measured["host"]["host"]
    print(text.format_rows(results_rows.sweep_rows(client, parent, host=host)))
    logger.info("figures logged under host %s (accelsweep report %s --host %s)", host, args.sweep, host)
    return 0


def _deploy_settings(spec, args):
    overrides = {key: value for key, value in (("runtimes", args.runtimes), ("rounds", args.rounds)) if value is not None}
    return spec.deploy.model_copy(update=overrides)  # each checked as it was parsed (`deploy_setting`)
