"""Faults of the place a sweep keeps its state: its results folder deleted, or its disk full.

Tune meets them as a failure of every trial and then of its own state saving, a traceback each.
The sweep looks for them itself at every step of Tune's loop and stops as Ctrl-C stops it: Tune's
saved state is left as it was (running trials stay resumable, none is reported as ended), and
the one message says what happened. Tune's own error logs that a fault explains are dropped.
"""

import contextlib
import errno
import logging
import os

from ray import tune

MIN_FREE_BYTES = 4 * 2**20
"""Below this much free space at the results folder, the disk counts as full: the sweep stops
before Tune's next checkpoint or state save would fail half-written."""
MARK_FILE = ".accelsweep-results"
"""An empty file the watch leaves in the results folder: Tune makes the folder anew to save its
state in, so the folder's being there does not tell that it was never deleted."""


class SweepFault(BaseException):
    """The sweep cannot go on where it keeps its state; the message says why.

    A BaseException, as KeyboardInterrupt is: Tune stops its trials as ended on an Exception,
    and `accelsweep resume` would then take them as done.

    Args:
        message: what happened, naming the folder.
        resumable: whether `accelsweep resume` can go on once the cause is fixed.
    """

    def __init__(self, message: str, resumable: bool):
        super().__init__(message)
        self.resumable = resumable


class FaultWatch(tune.Callback):
    """A Tune callback that raises `SweepFault` at the first step, trial end or experiment end
    that finds the results folder deleted (gone, or made anew without `MARK_FILE`) or its disk full.

    Args:
        results_path: the sweep's results folder (a local path; cloud storage is not looked at).

    Example:
        >>> watch = FaultWatch("/tmp/sweep")
        >>> tune.RunConfig(callbacks=[watch, trial_logger])  # doctest: +SKIP
    """

    def __init__(self, results_path: str):
        self.results_path = results_path
        self._marked = False  # the folder holds MARK_FILE: Tune makes the folder as the sweep starts

    def __getstate__(self):
        return {"results_path": self.results_path}  # a resumed sweep looks at its folder afresh

    def __setstate__(self, state):
        self.__init__(state["results_path"])

    def fault(self) -> SweepFault | None:
        """The fault that stops the sweep, or None.

        Example:
            >>> FaultWatch("/no/such/sweep-20261202").fault() is None  # not made yet: nothing to say
            True
        """
        if "://" in self.results_path:
            return None
        mark = os.path.join(self.results_path, MARK_FILE)
        if not self._marked and os.path.isdir(self.results_path):
            with contextlib.suppress(OSError), open(mark, "a"):
                self._marked = True
        elif self._marked and not os.path.exists(mark):
            return SweepFault(f"the results folder {self.results_path} was deleted during the sweep", resumable=False)
        try:
            disk = os.statvfs(self.results_path)
        except OSError:
            return None
        if disk.f_bavail * disk.f_frsize < MIN_FREE_BYTES:
            return SweepFault(f"disk full at {self.results_path}", resumable=True)
        return None

    # each runs before the other callbacks': a trial that failed for want of space is not logged
    # as failed, one that ended is not copied to a full disk, and Tune stopping its trials on an
    # error is not taken as their end
    def on_step_begin(self, iteration, trials, **info):
        self._raise_on_fault()

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._raise_on_fault()

    def on_trial_error(self, iteration, trials, trial, **info):
        self._raise_on_fault()

    def on_experiment_end(self, trials, **info):
        self._raise_on_fault()

    def _raise_on_fault(self):
        fault = self.fault()
        if fault is not None:
            raise fault


@contextlib.contextmanager
def watched(watch: FaultWatch):
    """Run a sweep's Tune loop under `watch`: Ray's warnings and errors that a fault explains are
    dropped, and an error that a fault explains (a full disk's OSError, Tune's lost state)
    becomes that `SweepFault`.

    Args:
        watch: the sweep's `FaultWatch` (one of its Tune callbacks).

    Raises:
        SweepFault: the folder was deleted or its disk is full.

    Example:
        >>> with watched(watch):  # doctest: +SKIP
        ...     tuner.fit()
    """
    explained = _ExplainedByFault(watch)
    loggers = [logging.getLogger(name) for name in list(logging.Logger.manager.loggerDict) if name.startswith("ray")]
    for each in loggers:
        each.addFilter(explained)
    try:
        yield
    except Exception as error:
        fault = watch.fault()
        if fault is None and isinstance(error, OSError) and error.errno == errno.ENOSPC:
            fault = SweepFault(f"disk full at {error.filename or watch.results_path}", resumable=True)
        if fault is None:
            raise
        raise fault from None
    finally:
        for each in loggers:
            each.removeFilter(explained)


class _ExplainedByFault(logging.Filter):
    def __init__(self, watch):
        super().__init__()
        self.watch = watch

    def filter(self, record):
        if record.levelno < logging.WARNING:
            return True
        return self.watch.fault() is None and not _checkpoint_never_written(record, self.watch.results_path)


def _checkpoint_never_written(record, results_path):
    # resumed after a full disk, Tune deletes an old checkpoint whose folder the full disk never
    # let it write: nothing that finished is lost, and its traceback would only alarm
    error = record.exc_info[1] if record.exc_info else None
    return isinstance(error, FileNotFoundError) and str(results_path) in str(error)
