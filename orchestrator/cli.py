"""The `accelsweep` command: run, validate, report and look at acceleration sweeps."""

import argparse
import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from orchestrator.credentials import redact
from orchestrator.errors import UserError
from orchestrator.jobs import add_job_commands

logger = logging.getLogger("accelsweep")

MAX_ERROR_LINE = 500
"""An `error:` line is cut to this many characters: values quoted in it are already cut shorter."""
MAX_ERROR_LINES = 20
"""A spec with more problems than this shows the first ones and a count of the rest."""


class UserInterrupt(Exception):
    """Ctrl-C during a sweep; the message says how to continue."""


RAY_SDK_LOGGERS = ("ray.dashboard.modules.dashboard_sdk", "ray.dashboard.modules.job.sdk")
"""Ray's job SDK sets these to INFO itself, so naming "ray" alone does not quiet them."""


def main(argv: list[str] | None = None) -> int:
    """Entry point of `accelsweep` (and `python -m orchestrator`).

    Args:
        argv: the arguments after the program name; defaults to sys.argv[1:].

    Returns:
        The exit code: 0 on success, 2 for a mistake in the input, 1 when a sweep fails.

    Example:
        >>> main(["validate", "search_spaces/quickstart.yaml"])
        0
    """
    parser = _parser()
    args = parser.parse_args(argv)
    _configure_environment(args.verbose)
    try:
        return args.command(args)
    except UserError as error:
        _print_error(str(error))
        return 2
    except UserInterrupt as interrupt:
        print(interrupt, file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


def run_command(args: argparse.Namespace) -> int:
    """`accelsweep run SPEC`: check everything, then sweep, then print the trade-off table."""
    from orchestrator.spec import load_data, load_spec
    from orchestrator.trial_logger import TrialLogger

    spec = load_spec(args.spec)
    data = load_data(spec, args.spec)
    from orchestrator import sweep, tracking  # Ray and MLflow load once the spec and data are known good

    _connect_ray(spec, args)  # before the store: a Ray that does not answer leaves no mlflow.db behind
    client = _connect_store(spec, args.spec)
    results_path = os.path.join(spec.results_dir, f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    parent_id = tracking.start_sweep_run(client, spec, redact(Path(args.spec).read_text()), results_path)
    total = sweep.planned_trials(spec)
    logger.info("sweep %s: %d trials, MLflow run %s in %s", spec.name, total, parent_id, redact(spec.tracking_uri))
    trial_logger = TrialLogger(spec.tracking_uri, parent_id, spec, os.path.join(results_path, "mlflow_outbox"))
    search = sweep.search_algorithm(spec)
    with _resumable_on_interrupt(client, parent_id, spec):
        sweep.run_sweep(spec, data, [trial_logger, sweep.ProgressLog(spec, total)], results_path, search)
        _measure_quietly(spec, data, client, parent_id)
    return _conclude(spec, client, parent_id, trial_logger, sweep.optuna_front(search))


def resume_command(args: argparse.Namespace) -> int:
    """`accelsweep resume SWEEP`: continue an interrupted sweep where it stopped, in the same MLflow run."""
    from orchestrator import report, sweep, tracking, trust
    from orchestrator.spec import load_data, tracking_uri
    from orchestrator.tags import RESULTS_PATH_TAG

    client = tracking.connect(tracking_uri(args.uri), create=False)
    if os.path.isdir(args.sweep):
        parent = tracking.find_sweep_by_results_path(client, os.path.abspath(args.sweep))
    else:
        parent = report.find_sweep_run(client, args.sweep)
    spec, spec_path = trust.vouched_spec(client, parent, args.spec, args.trust_stored_spec, resuming=True)
    results_path = trust.own_results_path(parent.data.tags.get(RESULTS_PATH_TAG, ""), spec, spec_path)
    data = load_data(spec, spec_path)
    _connect_ray(spec, args)

    client.update_run(parent.info.run_id, status="RUNNING")
    logger.info("resuming sweep %s (MLflow run %s) from %s", spec.name, parent.info.run_id, results_path)
    with _resumable_on_interrupt(client, parent.info.run_id, spec):
        trial_logger = sweep.resume_sweep(spec, data, results_path)
        _measure_quietly(spec, data, client, parent.info.run_id)
    return _conclude(spec, client, parent.info.run_id, trial_logger, search_front=None)


def _measure_quietly(spec, data, client, parent_id):
    from orchestrator import bench, sweep

    trials = bench.trials_to_measure(client, client.get_run(parent_id))
    if not any(trial.baseline for trial in trials):
        logger.warning("no finished baseline trial: latencies stay provisional (no quiet measurement)")
        return
    logger.info(
        "measuring %d finished trials quietly in %s, paired with the baseline (%d rounds)",
        len(trials), ", ".join(spec.deploy.runtimes), spec.deploy.rounds,
    )  # fmt: skip
    started = time.monotonic()
    bench.log_measurements(client, parent_id, trials, sweep.measure_quietly(spec, data, trials))
    logger.info("measured in %.0fs", time.monotonic() - started)


def _connect_ray(spec, args):
    from orchestrator import sweep
    from orchestrator.ray_connection import connect_ray
    from orchestrator.spec import SpecError

    connect_ray(spec.ray.address, verbose=args.verbose)
    problem = sweep.unsatisfiable_resources(spec, _ray_nodes())
    if problem:
        raise SpecError(f"{getattr(args, 'spec', None) or spec.name}: {problem}")


def _connect_store(spec, spec_path):
    from orchestrator import tracking
    from orchestrator.spec import SpecError

    key = "tracking.uri" if spec.tracking.uri else "tracking.uri (from MLFLOW_TRACKING_URI)"
    try:
        return tracking.connect(spec.tracking_uri)
    except tracking.TrackingError as error:
        raise SpecError(f"{spec_path}: {key}: {error}") from None


@contextlib.contextmanager
def _resumable_on_interrupt(client, parent_id, spec):
    # Ctrl-C ends the sweep where it is, like a killed driver: Tune's state (saved every few
    # seconds) and the MLflow runs so far are kept, and `accelsweep resume` picks them up.
    try:
        yield
    except KeyboardInterrupt:
        client.set_terminated(parent_id, status="KILLED")
        raise UserInterrupt(f"interrupted; the sweep's state is saved. Continue with: accelsweep resume {spec.name}") from None


def _conclude(spec, client, parent_id, trial_logger, search_front):
    from orchestrator import report, tracking

    from trainers.metrics import online_name

    rows = report.sweep_rows(client, client.get_run(parent_id))
    report.log_report(client, parent_id, rows)
    searched = [(online_name(metric), mode) for metric, mode in zip(spec.search.metrics, spec.search.modes)]
    tracking.log_search_front(client, parent_id, rows, search_front, searched)
    print(report.format_rows(rows))
    logger.info(trial_logger.summary())
    failed = [row["mode"] for row in rows if row["status"] == "error"]
    tracking.finish_sweep_run(client, parent_id, "FAILED" if failed else "FINISHED")
    if failed:
        logger.warning("%d trial(s) failed: %s (their errors are tagged in MLflow)", len(failed), ", ".join(failed))
    logger.info("results: MLflow run %s (accelsweep ui to browse)", parent_id)
    return 1 if failed else 0


def validate_command(args: argparse.Namespace) -> int:
    """`accelsweep validate SPEC`: check the spec, its data and its model without running anything."""
    from orchestrator.spec import load_data, load_spec

    spec = load_spec(args.spec)  # YAML and schema first: answered before torch and Ray load
    data = load_data(spec, args.spec)
    from orchestrator import sweep
    from trainers.data import data_summary

    summary = data_summary(data)
    print(
        f"{args.spec}: valid; {sweep.planned_trials(spec)} trials of {spec.model.kind} on {summary['name']} "
        f"({summary['n_train']} train / {summary['n_val']} val / {summary['n_test']} test, "
        f"input {summary['input_shape']}, {summary['num_classes']} classes)"
    )
    return 0


def report_command(args: argparse.Namespace) -> int:
    """`accelsweep report NAME`: the trade-off table of a finished sweep, from MLflow alone; with
    --plot its plot, with --max-accuracy-drop the trial to deploy, with --register that trial in
    the MLflow Model Registry."""
    from orchestrator.spec import tracking_uri
    from orchestrator.tags import SWEEP_TAG

    if args.max_accuracy_drop is None and (args.register or args.optimize):
        raise UserError("--register and --optimize choose a trial: give --max-accuracy-drop too")
    from orchestrator import report, tracking, trust

    client = tracking.connect(tracking_uri(args.uri), create=False)
    parent = report.find_sweep_run(client, args.sweep)
    if args.register:  # the model is rebuilt from the spec: refuse a stored one the user has not vouched for
        spec, _ = trust.vouched_spec(client, parent, args.spec, args.trust_stored_spec)
    objectives = report.parse_objectives(args.objectives) if args.objectives else None
    rows = report.sweep_rows(client, parent, host=args.host, objectives=objectives, target_tolerance=args.target_tolerance)
    print(report.format_rows(rows, args.format, objectives))
    if args.log:
        report.log_report(client, parent.info.run_id, rows)
    if args.plot:
        x_axis = next((key for key, _ in objectives or [] if key != "test_accuracy"), "latency_ms")
        report.plot_tradeoff(rows, args.plot, title=parent.data.tags.get(SWEEP_TAG, args.sweep), x=x_axis)
        logger.info("plot written to %s", args.plot)
    if args.max_accuracy_drop is None:
        return 0
    optimize = args.optimize or "latency"
    chosen = report.select_trial(rows, args.max_accuracy_drop, optimize)
    out = sys.stdout if args.format in ("table", "markdown") else sys.stderr  # keep csv/json parseable
    print(report.describe_choice(chosen, args.max_accuracy_drop, optimize), file=out)
    if args.register:
        from orchestrator import registry  # imports torch: only when registering

        version = registry.register_trial(client, parent, spec, chosen, args.register).version
        print(f"registered as model {args.register!r} version {version}: models:/{args.register}/{version}", file=out)
    return 0


def bench_command(args: argparse.Namespace) -> int:
    """`accelsweep bench SWEEP`: time a finished sweep's trials again on this machine, quietly and
    paired with the baseline, in each runtime; log the figures under this host and print the table."""
    from pydantic import ValidationError

    from orchestrator.spec import DeploySpec, SpecError, tracking_uri

    deploy_overrides = {key: value for key, value in (("runtimes", args.runtimes), ("rounds", args.rounds)) if value}
    from orchestrator import bench, report, tracking, trust
    from orchestrator.spec import load_data

    client = tracking.connect(tracking_uri(args.uri), create=False)
    parent = report.find_sweep_run(client, args.sweep)
    spec, spec_path = trust.vouched_spec(client, parent, args.spec, args.trust_stored_spec)
    try:
        deploy = DeploySpec.model_validate(spec.deploy.model_dump() | deploy_overrides)
    except ValidationError as error:
        problem = error.errors()[0]
        raise SpecError(f"bench --{problem['loc'][0]}: {problem['msg'].removeprefix('Value error, ')}") from None
    spec = spec.model_copy(update={"deploy": deploy})
    data = load_data(spec, spec_path)
    trials = bench.trials_to_measure(client, parent)
    device = "cuda" if args.gpu else "cpu"
    logger.info("timing %d trials of %s on this machine (%s): %s", len(trials), args.sweep, device, ", ".join(deploy.runtimes))
    try:
        measured = bench.measure_trials(spec, data, trials, deploy.runtimes, device)
    except ValueError as error:
        raise UserError(f"{args.sweep}: {error}") from None
    bench.log_measurements(client, parent.info.run_id, trials, measured)
    print(report.format_rows(report.sweep_rows(client, parent, host=measured["host"]["host"])))
    logger.info("figures logged under host %s (accelsweep report %s --host %s)", measured["host"]["host"], args.sweep, measured["host"]["host"])
    return 0


def ui_command(args: argparse.Namespace) -> int:
    """`accelsweep ui [SWEEP]`: the MLflow UI on 127.0.0.1, with deep links to the sweep's trials and plot."""
    from orchestrator import ui
    from orchestrator.spec import tracking_uri

    return ui.serve(tracking_uri(args.uri), args.sweep, args.host, args.port, verbose=args.verbose)


def _print_error(message):
    lines = redact(message).splitlines() or [""]
    if len(lines) > MAX_ERROR_LINES:
        lines = lines[: MAX_ERROR_LINES - 1] + [f"... and {len(lines) - MAX_ERROR_LINES + 1} more problems"]
    for line in lines:
        text = f"error: {line}"
        print(text if len(text) <= MAX_ERROR_LINE else text[: MAX_ERROR_LINE - 3] + "...", file=sys.stderr)


def _ray_nodes():
    import ray

    return ray.nodes()


def _configure_environment(verbose):
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    if not verbose:  # libraries that log through the root logger itself (ONNX Runtime's quantizer)
        for handler in logging.getLogger().handlers:
            handler.addFilter(lambda record: record.name != "root" or record.levelno >= logging.ERROR)
    quiet = logging.INFO if verbose else logging.ERROR
    for noisy in ("ray", "mlflow", "alembic", "optuna", "torch", "urllib3", "onnxscript", *RAY_SDK_LOGGERS):
        logging.getLogger(noisy).setLevel(quiet)
    logging.getLogger("trainers").setLevel(logging.INFO if verbose else logging.WARNING)
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "INFO" if verbose else "ERROR")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", str(verbose).lower())
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    # Ctrl-C raises KeyboardInterrupt here (Tune's own handler would stop the running trials and
    # report them ended); the experiment state saved every 2 s is what `accelsweep resume` uses
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")
    # Ray Train polls its workers every 2 s by default: each worker-group trial waited for that
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.5")
    # per-epoch results carry val_* only; test_accuracy, latency_ms, size_bytes come at the end
    os.environ.setdefault("TUNE_DISABLE_STRICT_METRIC_CHECKING", "1")


def _add_uri_option(parser):
    parser.add_argument("--uri", help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")


def _add_trust_options(parser):
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


def _parser():
    parser = argparse.ArgumentParser(
        prog="accelsweep",
        description=(
            "Find the best speed/accuracy trade-off of deep-learning acceleration techniques "
            "(low-rank, quantisation, pruning, dropout, weight decay, ...). One YAML spec -> "
            "Ray Tune trials -> Ray Train workers -> measured results in MLflow."
        ),
        epilog="Start with: accelsweep run search_spaces/quickstart.yaml",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show Ray's, MLflow's and the trainers' own logs")
    commands = parser.add_subparsers(title="commands", required=True, metavar="COMMAND")

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
    run.set_defaults(command=run_command)

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
    _add_uri_option(resume)
    _add_trust_options(resume)
    resume.set_defaults(command=resume_command)

    validate = commands.add_parser(
        "validate",
        help="check a spec, its data and its model without running anything",
        description="Check SPEC's keys and values, load its data and build its model. Exits 0 if valid, 2 if not.",
    )
    validate.add_argument("spec", help="the sweep spec (YAML)")
    validate.set_defaults(command=validate_command)

    report = commands.add_parser(
        "report",
        help="print a finished sweep's trade-off table from MLflow",
        description="Read a sweep back from MLflow alone (works after the fact, from any machine).",
    )
    report.add_argument("sweep", help="the sweep's name (its newest run) or its parent run id")
    report.add_argument("--format", choices=("table", "csv", "json", "markdown"), default="table")
    _add_uri_option(report)
    report.add_argument("--plot", metavar="PNG", help="also write the trade-off plot (accuracy vs latency) to PNG")
    report.add_argument(
        "--log",
        action="store_true",
        help="rewrite the sweep's report in MLflow: tradeoff.png/.html/.csv/.md and the runs' descriptions",
    )
    report.add_argument(
        "--max-accuracy-drop",
        type=float,
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
        help="with --max-accuracy-drop: register the chosen trial's shipped artifact (its model.onnx, with "
        "MLflow's ONNX flavour, for an onnxruntime trial) in the MLflow Model Registry as MODEL",
    )
    report.add_argument(
        "--objectives",
        metavar="METRICS",
        help="comma-separated metrics the Pareto front is drawn over, each optimised in its own direction "
        "(default test_accuracy,latency_ms,size_bytes; training speed: e.g. test_accuracy,time_to_target_s,cost_cpu_s)",
    )
    report.add_argument(
        "--target-tolerance",
        type=float,
        default=0.01,
        metavar="DROP",
        help="time_to_target_s races to the baseline's final validation accuracy minus DROP (default 0.01), "
        "unless the spec set train.target_accuracy",
    )
    report.add_argument(
        "--host",
        help="show the latencies HOST measured (after `accelsweep bench` there); default: the latest measurement",
    )
    _add_trust_options(report)
    report.set_defaults(command=report_command)

    bench = commands.add_parser(
        "bench",
        help="time a finished sweep's trials again on this machine",
        description=(
            "Rebuild every finished trial of SWEEP from its logged weights, export it to each runtime, and "
            "time them all round-robin with the baseline (deploy.rounds rounds, deploy.threads threads), "
            "on this machine only: run it on the deployment machine against the same MLflow store. The "
            "figures are logged under this host's name; `accelsweep report SWEEP --host HOST` shows them."
        ),
    )
    bench.add_argument("sweep", help="the sweep's name (its newest run) or its parent run id")
    bench.add_argument(
        "--runtimes",
        type=lambda text: [name.strip() for name in text.split(",") if name.strip()],
        help="comma-separated runtimes, the primary first (default: the spec's deploy.runtimes)",
    )
    bench.add_argument("--rounds", type=int, help="interleaved rounds (default: the spec's deploy.rounds)")
    bench.add_argument("--gpu", action="store_true", help="time on this machine's first CUDA device")
    _add_uri_option(bench)
    _add_trust_options(bench)
    bench.set_defaults(command=bench_command)

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
    _add_uri_option(ui)
    ui.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(command=ui_command)

    add_job_commands(commands)
    return parser
