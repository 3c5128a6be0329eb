"""Sizes checked before they are allocated: a spec asking for terabytes is refused with the figure."""

import os
import resource
from pathlib import Path

_CGROUP_FILES = (  # (limit, usage) of this process's cgroup, as it sees them: v2, then v1
    ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
    ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"),
)


def memory_limit() -> tuple[int, str]:
    """The most one data set or one model may take, and why: half of this machine's physical memory,
    or less where this process can allocate less (what its cgroup's memory limit or its RLIMIT_AS
    leaves, the memory available now).

    Example:
        >>> limit, reason = memory_limit()
        >>> limit > 0, reason  # doctest: +SKIP
        (True, "half this machine's memory")
    """
    limits = [(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2, "half this machine's memory")]
    for limit_file, usage_file in _CGROUP_FILES:
        limit, usage = _read_number(limit_file), _read_number(usage_file)
        if limit is not None and usage is not None:
            limits.append((max(limit - usage, 0), "what this process's cgroup memory limit leaves"))
            break
    address_space, _ = resource.getrlimit(resource.RLIMIT_AS)
    if address_space != resource.RLIM_INFINITY:
        used = _kilobytes_field("/proc/self/status", "VmSize") or 0
        limits.append((max(address_space - used, 0), "what this process's RLIMIT_AS leaves"))
    available = _kilobytes_field("/proc/meminfo", "MemAvailable")
    if available is not None:
        limits.append((available, "the memory available now"))
    return min(limits)


def too_large(n_bytes: float) -> str | None:
    """Say why `n_bytes` cannot be allocated here, or None if it fits under `memory_limit()`.

    Args:
        n_bytes: the estimated size.

    Returns:
        A phrase such as "needs ~3.1 TB; the limit is 31.4 GB (half this machine's memory)", or None.

    Example:
        >>> too_large(1e6) is None, too_large(1e15).startswith("needs ~1.0 PB; the limit is")
        (True, True)
    """
    limit, reason = memory_limit()
    if n_bytes <= limit:
        return None
    return f"needs ~{human_bytes(n_bytes)}; the limit is {human_bytes(limit)} ({reason})"


def _read_number(path):
    try:
        return int(Path(path).read_text().strip())  # "max" (no limit) is not a number
    except (OSError, ValueError):
        return None


def _kilobytes_field(path, field):
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return None
    value = next((line.split()[1] for line in lines if line.startswith(f"{field}:")), None)
    return None if value is None else int(value) * 1024


def human_bytes(n_bytes: float) -> str:
    """A byte count in decimal units.

    Args:
        n_bytes: the count.

    Example:
        >>> human_bytes(3.1e12)
        '3.1 TB'
    """
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n_bytes < 1000:
            return f"{n_bytes:.1f} {unit}"
        n_bytes /= 1000
    return f"{n_bytes:.1f} PB"
