"""Start a local Ray, or connect to a cluster, with Ray's own log noise kept out of the terminal."""

import logging
import os

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
    try:
        if address:
            ray.init(address=address, **options)
        else:
            ray.init(include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayConnectionError(f"cannot connect to Ray at {address!r}: {error}") from None
    resources = ray.cluster_resources()
    logger.info(
        "Ray %s: %g CPUs, %g GPUs", address or "local", resources.get("CPU", 0), resources.get("GPU", 0)
    )
