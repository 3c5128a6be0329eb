"""The Ray Jobs API client behind `accelsweep submit SPEC` and `accelsweep jobs list|status|logs|stop`.

A submitted job carries this project (its source tree as the job's working directory) and runs
`python -m orchestrator run SPEC` on the cluster's head node, so the sweep runs there exactly as
`accelsweep run` runs it here. Results go to the MLflow server named by MLFLOW_TRACKING_URI, which
the cluster must be able to reach: a local store (sqlite:///..., file:) on this machine is refused.

The Jobs API address is --address, else $RAY_API_SERVER_ADDRESS, else $RAY_ADDRESS, else
http://127.0.0.1:8265. Ray token authentication is honoured, never switched off: the token is
$RAY_AUTH_TOKEN, else the file $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token (Ray's own order). The
token is never sent over plain http to another machine unless --insecure says so.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import shlex
import sys
import time
import tomllib
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator
from urllib.parse import urlparse

from orchestrator.cluster.ray_connection import auth_token_file, secure_auth_token_file
from orchestrator.config.credentials import has_credentials
from orchestrator.errors import UserError

if TYPE_CHECKING:  # Ray and the spec (torch) load only when a job command runs: `--help` stays instant
    from ray.job_submission import JobStatus, JobSubmissionClient

    from orchestrator.config.schema import Spec

logger = logging.getLogger(__name__)

PROJECT_ROOT = Path(__file__).resolve().parents[2]
"""The source tree a job carries to the cluster: the directory holding `orchestrator/` and `trainers/`."""

DEFAULT_ADDRESS = "http://127.0.0.1:8265"
EXCLUDES = ["mlflow.db", "mlruns/", "mlartifacts/", "accelsweep_results/", ".git/", "__pycache__/", "*.egg-info/", ".venv/"]
"""What the job's working directory leaves behind: local results, stores and caches (gitignore syntax)."""

LOCAL_STORE_SCHEMES = ("", "file", "sqlite")


class JobError(UserError):
    """The Jobs API cannot be reached, refused the token, or cannot do what was asked."""


def jobs_address(explicit: str | None = None) -> tuple[str, str]:
    """The Jobs API's URL and where it came from.

    Args:
        explicit: --address, or None.

    Returns:
        (url, source): url is http(s)://host:port; source names the flag or variable it came from.

    Raises:
        JobError: the address is a Ray client (ray://) or "auto" address, not the dashboard's URL.

    Example:
        >>> jobs_address("10.0.0.5:8265")
        ('http://10.0.0.5:8265', '--address')
    """
    candidates = (
        (explicit, "--address"),
        (os.environ.get("RAY_API_SERVER_ADDRESS"), "RAY_API_SERVER_ADDRESS"),
        (os.environ.get("RAY_ADDRESS"), "RAY_ADDRESS"),
        (DEFAULT_ADDRESS, "the default"),
    )
    address, source = next((address, source) for address, source in candidates if address)
    if "://" not in address and address != "auto":
        address = f"http://{address}"
    try:
        scheme = urlparse(address).scheme
    except ValueError as error:  # "Invalid IPv6 URL": an unclosed [
        raise JobError(f"{address!r} (from {source}) is not a URL: {error}") from None
    if scheme not in ("http", "https"):
        raise JobError(
            f"{address!r} (from {source}) is not a Jobs API address: give the head's dashboard URL, "
            f"e.g. --address http://HEAD:8265"
        )
    return address.rstrip("/"), source


def find_auth_token() -> tuple[str | None, str]:
    """The Ray auth token this client sends, looked up in Ray's order, and where it was found.

    Returns:
        (token, source): token is None when there is none; source names the variable or file.

    Example:
        >>> token, source = find_auth_token()  # doctest: +SKIP
        >>> source  # doctest: +SKIP
        '~/.ray/auth_token'
    """
    if os.environ.get("RAY_AUTH_TOKEN"):
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path, source = auth_token_file()
    secure_auth_token_file()
    token = path.read_text().strip() if path.is_file() else ""
    return token or None, source


def check_transport(url: str, token: str | None, insecure: bool = False) -> None:
    """Refuse to send a token in clear text (plain http) to another machine.

    Args:
        url: the Jobs API URL.
        token: the token that would be sent, or None.
        insecure: the user's --insecure: send it anyway.

    Raises:
        JobError: http to a host that is not loopback, with a token, without `insecure`.

    Example:
        >>> check_transport("http://127.0.0.1:8265", "t0k3n")  # loopback: fine
    """
    parts = urlparse(url)
    if token is None or insecure or parts.scheme != "http" or _is_loopback(parts.hostname or ""):
        return
    raise JobError(
        f"refusing to send the Ray auth token over plain http to {url}: anyone on the path can read it. "
        f"Use https, reach the dashboard through an SSH tunnel (`ray dashboard CLUSTER.yaml` forwards it to "
        f"127.0.0.1:8265), or pass --insecure on a network you trust"
    )


@contextmanager
def jobs_client(address: str | None = None, insecure: bool = False) -> Iterator[JobSubmissionClient]:
    """A Jobs API client with this machine's Ray token; Ray's errors inside the block become JobError.

    Args:
        address: --address, or None for the environment or the default (see `jobs_address`).
        insecure: allow sending the token over plain http to a host that is not loopback.

    Yields:
        The connected client (its first request, a version check, has succeeded).

    Raises:
        JobError: unreachable address, missing or refused token, unknown job, or a refused request;
            the message says what to do.

    Example:
        >>> with jobs_client("http://127.0.0.1:8265") as client:  # doctest: +SKIP
        ...     client.list_jobs()
    """
    import aiohttp
    import requests
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    url, source = jobs_address(address)
    token, token_source = find_auth_token()
    check_transport(url, token, insecure)
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with _environment_without("RAY_API_SERVER_ADDRESS", "RAY_ADDRESS"):  # Ray lets them override `url`
            client = JobSubmissionClient(url, headers=headers)
        yield client
    except AuthenticationError:
        raise JobError(_token_advice(url, token, token_source)) from None
    except (ConnectionError, requests.RequestException, aiohttp.ClientError) as error:
        raise JobError(
            f"cannot reach the Ray Jobs API at {url} (from {source}): {str(error).rstrip('.')}. Is the cluster up? Give the "
            f"head's dashboard URL (port 8265 by default; `ray dashboard CLUSTER.yaml` forwards it)"
        ) from None
    except RuntimeError as error:  # Ray's Jobs SDK reports HTTP errors and unknown jobs this way
        raise JobError(f"the Ray Jobs API at {url} refused: {error}") from None


def submission_tracking_uri(spec: Spec, explicit: str | None = None) -> str:
    """The MLflow tracking URI the job will log to, refusing a store only this machine can reach.

    The spec's own `tracking.uri` wins on the cluster (as it does for `accelsweep run`); otherwise
    --tracking-uri, else $MLFLOW_TRACKING_URI. A local store (sqlite:///, file:, a path) would be
    written on the head node's disk, not this one's: it is refused unless given with --tracking-uri.

    Args:
        spec: the validated spec.
        explicit: --tracking-uri, or None.

    Returns:
        The URI.

    Raises:
        JobError: no URI, a conflicting one, or a local store not given explicitly.

    Example:
        >>> submission_tracking_uri(spec, "http://mlflow.internal:5000")  # doctest: +SKIP
        'http://mlflow.internal:5000'
    """
    if spec.tracking.uri and explicit and explicit != spec.tracking.uri:
        raise JobError(
            f"the spec sets tracking.uri: {spec.tracking.uri} and --tracking-uri says {explicit}: "
            f"the spec's wins on the cluster, so remove one of them"
        )
    uri = spec.tracking.uri or explicit or os.environ.get("MLFLOW_TRACKING_URI")
    if uri and has_credentials(uri):
        raise JobError(
            "the MLflow tracking URI carries a user name or password, which the job's environment would show "
            "to everyone who can list the cluster's jobs: give the URI without them, and set "
            "MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD on the cluster's nodes"
        )
    if not uri:
        raise JobError(
            "no MLflow tracking server: the job runs on the cluster, so its results need a server both "
            "can reach. Set MLFLOW_TRACKING_URI=http://HOST:5000 or pass --tracking-uri "
            "(cluster/local/start.sh starts one and writes it to STATE_DIR/env)"
        )
    if urlparse(uri).scheme in LOCAL_STORE_SCHEMES and uri != explicit:
        raise JobError(
            f"MLflow tracking URI {uri!r} is a store on this machine's disk, which the cluster cannot write: "
            f"point MLFLOW_TRACKING_URI at an MLflow server (http://HOST:5000), or pass --tracking-uri {uri} "
            f"if the head node really has that path"
        )
    return uri


def build_runtime_env(tracking_uri: str, pip: bool = False) -> dict:
    """The job's runtime environment: this project as working directory, the tracking URI, and
    optionally the project's pip dependencies (Ray itself excluded: the cluster has its own).

    Args:
        tracking_uri: the MLflow tracking URI the sweep logs to.
        pip: install the project's dependencies from pyproject.toml on the cluster.

    Returns:
        A Ray runtime_env dict.

    Example:
        >>> build_runtime_env("http://127.0.0.1:5000")["env_vars"]
        {'MLFLOW_TRACKING_URI': 'http://127.0.0.1:5000'}
    """
    runtime_env = {
        "working_dir": str(PROJECT_ROOT),
        "excludes": list(EXCLUDES),
        "env_vars": {"MLFLOW_TRACKING_URI": tracking_uri},
    }
    if pip:
        dependencies = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
        runtime_env["pip"] = [dep for dep in dependencies if not dep.startswith("ray")]
    return runtime_env


def sweep_entrypoint(spec_path: str | os.PathLike) -> str:
    """The job's command: `python -m orchestrator run SPEC`, SPEC relative to the project root.

    Args:
        spec_path: the spec file, inside the project.

    Raises:
        JobError: the spec lies outside the project, so the job would not carry it.

    Example:
        >>> sweep_entrypoint("search_spaces/quickstart.yaml")
        'python -m orchestrator run search_spaces/quickstart.yaml'
    """
    path = Path(spec_path).resolve()
    if not path.is_relative_to(PROJECT_ROOT):
        raise JobError(
            f"{spec_path} is outside {PROJECT_ROOT}, the project directory a job carries to the cluster: "
            f"copy it under it (search_spaces/, say) and submit that"
        )
    return f"python -m orchestrator run {shlex.quote(path.relative_to(PROJECT_ROOT).as_posix())}"


def follow_job(client: JobSubmissionClient, job_id: str) -> JobStatus:
    """Print a job's logs as they come, until it ends.

    Args:
        client: a connected Jobs API client.
        job_id: the job's submission id.

    Returns:
        The job's final status.

    Example:
        >>> follow_job(client, "quickstart-20250101-120000-1a2b")  # doctest: +SKIP
        <JobStatus.SUCCEEDED: 'SUCCEEDED'>
    """
    try:
        asyncio.run(_print_log_tail(client, job_id))
        status = client.get_job_status(job_id)
        while not status.is_terminal():  # the log stream can close a moment before the status turns
            time.sleep(1)
            status = client.get_job_status(job_id)
    except KeyboardInterrupt:
        print(f"\nstopped following; job {job_id} keeps running (accelsweep jobs stop {job_id})", file=sys.stderr)
        raise
    return status


async def _print_log_tail(client, job_id):
    async for chunk in client.tail_job_logs(job_id):
        print(chunk, end="", flush=True)


@contextmanager
def _environment_without(*names):
    saved = {name: os.environ.pop(name) for name in names if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _is_loopback(host):
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _token_advice(url, token, source):
    if token is None:
        return (
            f"the Ray cluster at {url} needs its auth token, and none was found (looked in RAY_AUTH_TOKEN, "
            f"RAY_AUTH_TOKEN_PATH and ~/.ray/auth_token). On the head node run `ray get-auth-token` and set "
            f"RAY_AUTH_TOKEN to its output (or save it in ~/.ray/auth_token)"
        )
    return (
        f"the Ray cluster at {url} refused the auth token from {source}: it is not this cluster's token. "
        f"On the head node run `ray get-auth-token` and use that one"
    )
