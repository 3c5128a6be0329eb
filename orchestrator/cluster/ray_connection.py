"""Start a local Ray, or connect to a cluster, with Ray's own log noise kept out of the terminal.

A local Ray started here listens on loopback only: Ray binds its servers (GCS, raylet, workers,
agents) to the node's address, and that address is 127.0.0.1 when Ray is told this is not a
multi-node cluster (Ray's `RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`). Ray 2.60 has no public option for
it: `ray.init(_node_ip_address="127.0.0.1")` turns 127.0.0.1 back into the host's address.
"""

import ipaddress
import logging
import os
import socket
import stat
from pathlib import Path

from orchestrator.errors import UserError

logger = logging.getLogger(__name__)
LOOPBACK_SWITCH = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
"""Ray's switch: "0" makes a node take 127.0.0.1 as its address."""
PREEMPTION_WATCHER_SWITCH = "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER"
"""Ray Train's switch: "0" starts no preemption watcher actor beside each worker group."""


class RayConnectionError(UserError):
    """The Ray address given cannot be reached."""


def connect_ray(address: str | None, verbose: bool = False, runtime_env: dict | None = None) -> None:
    """Connect to Ray: `address` ("auto", "ray://...", host:port), else $RAY_ADDRESS, else a new local Ray.

    Args:
        address: the spec's `ray.address`, or None.
        verbose: forward the workers' logs and Ray's own messages to this terminal.
        runtime_env: the job's Ray runtime environment, or None.

    Raises:
        RayConnectionError: an address was given and no Ray cluster answers there.

    Example:
        >>> connect_ray(None)  # starts an embedded local Ray with this machine's CPUs, on 127.0.0.1  # doctest: +SKIP
    """
    import ray
    from ray._private import ray_constants

    from orchestrator.sweep.resources import PLACEMENT_GROUP_CLEANER_SWITCH

    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    options = dict(log_to_driver=verbose, logging_level=logging.INFO if verbose else logging.ERROR, runtime_env=runtime_env)
    if address and address != "auto":
        _check_reachable(address)
    try:
        if address:
            ray.init(address=address, **options)
        else:  # "local": a new Ray of our own, never someone else's `ray start` on this machine
            os.environ[LOOPBACK_SWITCH] = "0"  # for Ray's own processes, which read it when they start
            # no one drains a node of a Ray this process owns: Ray Train's preemption watcher, an
            # actor started with every worker group, would only take a core while the workers boot
            os.environ.setdefault(PREEMPTION_WATCHER_SWITCH, "0")
            os.environ.setdefault(PLACEMENT_GROUP_CLEANER_SWITCH, "0")  # no dashboard, no state API for it
            ray_constants.ENABLE_RAY_CLUSTER = False  # this process read it when it imported ray
            ray.init(address="local", include_dashboard=False, **options)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise RayConnectionError(f"cannot connect to Ray at {address!r}: {error}") from None
    if not address and not ipaddress.ip_address(ray.util.get_node_ip_address()).is_loopback:
        logger.warning("the local Ray took the address %s, not loopback", ray.util.get_node_ip_address())
    secure_auth_token_file()
    resources = ray.cluster_resources()
    logger.info(
        "Ray %s: %g CPUs, %g GPUs", address or "local", resources.get("CPU", 0), resources.get("GPU", 0)
    )


def auth_token_file() -> tuple[Path, str]:
    """Where Ray keeps its auth token: $RAY_AUTH_TOKEN_PATH, else ~/.ray/auth_token; and how to name it.

    Example:
        >>> auth_token_file()[1]  # doctest: +SKIP
        '~/.ray/auth_token'
    """
    if os.environ.get("RAY_AUTH_TOKEN_PATH"):
        return Path(os.environ["RAY_AUTH_TOKEN_PATH"]), f"RAY_AUTH_TOKEN_PATH ({os.environ['RAY_AUTH_TOKEN_PATH']})"
    return Path.home() / ".ray" / "auth_token", "~/.ray/auth_token"


def secure_auth_token_file() -> None:
    """Make Ray's auth token file readable by its owner only (Ray writes it readable by everyone).

    Example:
        >>> secure_auth_token_file()  # ~/.ray/auth_token: mode 0644 -> 0600  # doctest: +SKIP
    """
    path, _ = auth_token_file()
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if stat.S_ISREG(mode) and mode & 0o077:
        path.chmod(0o600)
        logger.info("%s was readable by others (mode %o): made it 0600", path, stat.S_IMODE(mode))


def _check_reachable(address):
    # ray.init retries an address that does not answer forever (and ignores SIGTERM meanwhile)
    host_port = address.removeprefix("ray://")
    host, _, port = host_port.rpartition(":")
    if not host or not port.isdigit():
        raise RayConnectionError(f"ray.address {address!r} is not host:port, ray://host:port or auto")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except (OSError, OverflowError) as error:
        raise RayConnectionError(f"cannot connect to Ray at {address!r}: {getattr(error, 'strerror', None) or error}") from None
