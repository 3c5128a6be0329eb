"""`accelsweep jobs list|status|logs|stop`: the Ray jobs of a cluster."""

import argparse
import time

from orchestrator.cluster.jobs_client import DEFAULT_ADDRESS, follow_job, jobs_client


def address_options() -> argparse.ArgumentParser:
    """The options every job command takes: the cluster's Jobs API address, and `--insecure`.

    Example:
        >>> address_options().parse_args(["--address", "http://head:8265"]).address
        'http://head:8265'
    """
    address = argparse.ArgumentParser(add_help=False)
    address.add_argument(
        "--address",
        help=f"the cluster's Jobs API (dashboard) URL; default $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, else {DEFAULT_ADDRESS}",
    )
    address.add_argument(
        "--insecure",
        action="store_true",
        help="send the Ray auth token even over plain http to another machine (readable by anyone on the path)",
    )
    return address


def register(commands: argparse._SubParsersAction) -> None:
    """Add `jobs` and its actions to the `accelsweep` command line.

    Args:
        commands: the sub-parsers object of the `accelsweep` parser.

    Example:
        >>> register(argparse.ArgumentParser().add_subparsers())
    """
    address = address_options()
    jobs = commands.add_parser("jobs", help="list, inspect, follow or stop Ray jobs", description="Ray jobs on a cluster.")
    actions = jobs.add_subparsers(title="actions", required=True, metavar="ACTION")
    actions.add_parser("list", parents=[address], help="every job, oldest first").set_defaults(command=list_jobs)
    job = argparse.ArgumentParser(add_help=False, parents=[address])
    job.add_argument("job_id", help="the id `accelsweep submit` printed (see `accelsweep jobs list`)")
    actions.add_parser("status", parents=[job], help="a job's status").set_defaults(command=job_status)
    actions.add_parser("stop", parents=[job], help="stop a running job").set_defaults(command=stop_job)
    logs = actions.add_parser("logs", parents=[job], help="a job's output so far")
    logs.add_argument("--follow", action="store_true", help="keep printing until the job ends")
    logs.set_defaults(command=job_logs)


def list_jobs(args: argparse.Namespace) -> int:
    """`accelsweep jobs list`: every job the cluster knows, oldest first.

    Example:
        >>> list_jobs(parser.parse_args(["jobs", "list"]))  # doctest: +SKIP
        0
    """
    with jobs_client(args.address, args.insecure) as client:
        jobs = sorted(client.list_jobs(), key=lambda job: job.start_time or 0)
    for job in jobs:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(job.start_time / 1000)) if job.start_time else "-"
        print(f"{job.submission_id or job.job_id:<40} {str(job.status):<10} {started}  {job.entrypoint}")
    return 0


def job_status(args: argparse.Namespace) -> int:
    """`accelsweep jobs status ID`: the job's status and Ray's message about it.

    Example:
        >>> job_status(parser.parse_args(["jobs", "status", "quickstart-20250101-120000-1a2b"]))  # doctest: +SKIP
        0
    """
    with jobs_client(args.address, args.insecure) as client:
        info = client.get_job_info(args.job_id)
    print(f"{args.job_id}: {info.status}" + (f" ({info.message})" if info.message else ""))
    return 0


def job_logs(args: argparse.Namespace) -> int:
    """`accelsweep jobs logs ID [--follow]`: the job's output so far, or followed to the end.

    Example:
        >>> job_logs(parser.parse_args(["jobs", "logs", "quickstart-20250101-120000-1a2b"]))  # doctest: +SKIP
        0
    """
    with jobs_client(args.address, args.insecure) as client:
        if args.follow:
            follow_job(client, args.job_id)
        else:
            print(client.get_job_logs(args.job_id), end="")
    return 0


def stop_job(args: argparse.Namespace) -> int:
    """`accelsweep jobs stop ID`: ask the cluster to stop the job.

    Example:
        >>> stop_job(parser.parse_args(["jobs", "stop", "quickstart-20250101-120000-1a2b"]))  # doctest: +SKIP
        0
    """
    with jobs_client(args.address, args.insecure) as client:
        stopped = client.stop_job(args.job_id)
    print(f"{args.job_id}: " + ("stop requested" if stopped else "not running, nothing to stop"))
    return 0
