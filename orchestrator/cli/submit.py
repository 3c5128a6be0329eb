"""`accelsweep submit SPEC`: validate here, submit as a Ray job, then follow it to the end."""

import argparse
import logging
import secrets
import time

from orchestrator.cli.jobs import address_options

logger = logging.getLogger("accelsweep")


def register(commands: argparse._SubParsersAction) -> None:
    """Add `submit` to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    submit = commands.add_parser(
        "submit",
        parents=[address_options()],
        help="run a sweep on a Ray cluster as a Ray job",
        description=(
            "Validate SPEC here, then submit `python -m orchestrator run SPEC` as a Ray job that carries "
            "this project, and follow its logs. Exits 0 if the job succeeds, 1 if not, 2 on a bad spec or "
            "when the cluster cannot be reached or refuses the Ray token ($RAY_AUTH_TOKEN, "
            "$RAY_AUTH_TOKEN_PATH or ~/.ray/auth_token)."
        ),
    )
    submit.add_argument("spec", help="the sweep spec (YAML), inside this project, e.g. search_spaces/quickstart.yaml")
    submit.add_argument(
        "--tracking-uri",
        help="MLflow server the job logs to (default $MLFLOW_TRACKING_URI); a local sqlite/file store is taken only from here",
    )
    submit.add_argument("--pip", action="store_true", help="install the project's dependencies on the cluster (slow)")
    submit.add_argument("--no-wait", action="store_true", help="print the job id and return at once")
    submit.set_defaults(command=main)


def main(args: argparse.Namespace) -> int:
    """Submit the sweep of `args.spec` as a Ray job; returns 0 if it succeeds, 1 if not.

    Example:
        >>> main(parser.parse_args(["submit", "search_spaces/quickstart.yaml", "--no-wait"]))  # doctest: +SKIP
        0
    """
    from ray.job_submission import JobStatus

    from orchestrator.cluster.jobs_client import (
        build_runtime_env,
        follow_job,
        jobs_client,
        submission_tracking_uri,
        sweep_entrypoint,
    )
    from orchestrator.config.loading import load_spec

    spec = load_spec(args.spec)
    entrypoint = sweep_entrypoint(args.spec)
    runtime_env = build_runtime_env(submission_tracking_uri(spec, args.tracking_uri), pip=args.pip)
    with jobs_client(args.address, args.insecure) as client:
        job_id = client.submit_job(
            entrypoint=entrypoint,
            runtime_env=runtime_env,
            submission_id=f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}",
        )
        print(job_id, flush=True)
        logger.info("submitted %s: %s (MLflow: %s)", job_id, entrypoint, runtime_env["env_vars"]["MLFLOW_TRACKING_URI"])
        if args.no_wait:
            logger.info("follow it with: accelsweep jobs logs %s --follow", job_id)
            return 0
        status = follow_job(client, job_id)
    logger.info("job %s: %s", job_id, status)
    return 0 if status == JobStatus.SUCCEEDED else 1
