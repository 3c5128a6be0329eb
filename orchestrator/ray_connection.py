"""Start a local Ray, or connect to a cluster, with Ray's own log noise kept out of the terminal."""

import logging
import os
import socket

import ray

from orchestrator.errors import UserError

logger = logging.getLogger(__name__)


class RayConnectionError(UserError):
    """The Ray address given cannot be reached."""


def connect_ray(address: str | None, verbose: bool = False) -> None:
    """Connect to Ray: `address` ("auto", "ray://...", host:port), else $RAY_ADDRESS, else a new local Ray.

    Args:
        address: the spec's `ray.address`, or None.
        verbose: forward the workers' logs and Ray's own messages to this terminal.

    Raises:
        RayConnectionError: an address was given and no Ray cluster answers there.

    Example:
        >>> connect_ray(None)  # starts an embedded local Ray with this machine's CPUs
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    options = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR)
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **options)
        else:  # "local": a new Ray of our own, never someone else's `ray start` on this machine
            ray.init(address="local", include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayConnectionError(f"cannot connect to Ray at {address!r}: {error}") from None
    resources = ray.cluster_resources()
    logger.info(
        "Ray %s: %g CPUs, %g GPUs", address or "local", resources.get("CPU", 0), resources.get("GPU", 0)
    )


def _check_reachable(address):
    # ray.init retries an address that does not answer forever (and ignores SIGTERM meanwhile)
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise RayConnectionError(f"ray.address {address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as error:
        raise RayConnectionError(f"cannot connect to Ray at {address!r}: {error.strerror or error}") from None
