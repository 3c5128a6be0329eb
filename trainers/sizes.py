"""Sizes checked before they are allocated: a spec asking for terabytes is refused with the figure."""

import os


def memory_limit_bytes() -> int:
    """The most one data set or one model may take: half of this machine's physical memory.

    Example:
        >>> memory_limit_bytes() > 0
        True
    """
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2


def too_large(n_bytes: float) -> str | None:
    """Say why `n_bytes` cannot be allocated here, or None if it fits under `memory_limit_bytes()`.

    Args:
        n_bytes: the estimated size.

    Returns:
        A phrase such as "needs ~3.1 TB; the limit is 31.4 GB (half this machine's memory)", or None.

    Example:
        >>> too_large(1e6) is None, too_large(1e15).startswith("needs ~1.0 PB; the limit is")
        (True, True)
    """
    limit = memory_limit_bytes()
    if n_bytes <= limit:
        return None
    return f"needs ~{human_bytes(n_bytes)}; the limit is {human_bytes(limit)} (half this machine's memory)"


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
