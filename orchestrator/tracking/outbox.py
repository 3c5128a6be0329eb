"""An outbox: writes delivered in order, kept and retried while their destination is unreachable."""

import logging
import time
from typing import Callable

logger = logging.getLogger(__name__)


class Outbox:
    """Delivers entries in the order they were sent; an entry whose delivery raises stays first in
    line, and delivery is tried again no sooner than `retry_seconds` later (or at once when forced).

    Its `pending` list is plain data: keep it with a saved state and give it back to a new outbox
    to deliver what a stopped process could not.

    Args:
        deliver: called with each entry; raising means "not delivered, keep it".
        retry_seconds: the wait after a failed delivery before the next unforced try.
        pending: entries left over from an earlier outbox, delivered first.
        destination: what the entries go to, named in log lines.

    Example:
        >>> outbox = Outbox(lambda entry: client.log_batch(*entry))  # doctest: +SKIP
        >>> outbox.send((run_id, metrics))  # doctest: +SKIP
    """

    def __init__(
        self,
        deliver: Callable[[object], None],
        retry_seconds: float = 5.0,
        pending: list | None = None,
        destination: str = "the destination",
    ):
        self.deliver = deliver
        self.destination = destination
        self.retry_seconds = retry_seconds
        self.pending: list = list(pending or [])
        self.unreachable_since: float | None = None
        self.next_attempt = 0.0
        self.delayed_delivered = 0

    def send(self, entry: object) -> None:
        """Queue `entry` and deliver what can be delivered now.

        Example:
            >>> outbox.send(("run", "terminate"))  # doctest: +SKIP
        """
        self.pending.append(entry)
        self.flush()

    def flush(self, force: bool = False) -> None:
        """Deliver pending entries in order until one fails; unless `force`, not before the retry time.

        Example:
            >>> outbox.flush(force=True)  # doctest: +SKIP
        """
        if self.unreachable_since is not None and not force and time.monotonic() < self.next_attempt:
            return
        while self.pending:
            try:
                self.deliver(self.pending[0])
            except Exception as error:  # the destination fails in many ways while it is away
                if self.unreachable_since is None:
                    self.unreachable_since = time.monotonic()
                    logger.warning("%s unreachable (%s): keeping writes, retrying", self.destination, error)
                self.next_attempt = time.monotonic() + self.retry_seconds
                return
            self.pending.pop(0)
            if self.unreachable_since is not None:
                self.delayed_delivered += 1
        if self.unreachable_since is not None:
            logger.warning(
                "%s reachable again after %.0fs: delayed writes delivered",
                self.destination,
                time.monotonic() - self.unreachable_since,
            )
            self.unreachable_since = None

    def drain(self, timeout_s: float) -> bool:
        """Keep retrying until everything is delivered or `timeout_s` has passed.

        Returns:
            Whether everything was delivered.

        Example:
            >>> outbox.drain(120.0)  # doctest: +SKIP
            True
        """
        deadline = time.monotonic() + timeout_s
        while self.pending and time.monotonic() < deadline:
            self.flush(force=True)
            if self.pending:
                time.sleep(min(self.retry_seconds, max(0.0, deadline - time.monotonic())))
        return not self.pending
