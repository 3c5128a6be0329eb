"""The steps `run` and `resume` share: connect Ray and the store, keep Ctrl-C and SIGTERM resumable, conclude."""

import contextlib
import logging
import os
import signal
import traceback

from orchestrator.errors import UserError

logger = logging.getLogger("accelsweep")


class UserInterrupt(Exception):
    """Ctrl-C or SIGTERM during a sweep; the message says how to continue.

    Args:
        message: what happened and how to continue.
        exit_code: the command's exit code (128 + the signal's number).
    """

    def __init__(self, message: str, exit_code: int = 130):
        super().__init__(message)
        self.exit_code = exit_code


class SweepFailed(UserError):
    """The sweep stopped on a fault of where it keeps its state; the message says which."""


def connect_ray(spec, args) -> None:
    """Connect to the spec's Ray (or start a local one) and check that a trial can ever fit.

    Args:
        spec: the sweep's spec.
        args: the command's arguments (`verbose`, and `spec`, the file named in messages).

    Raises:
        SpecError: no node of the cluster can hold the biggest trial.

    Example:
        >>> connect_ray(spec, args)  # doctest: +SKIP
    """
    from orchestrator.cluster.ray_connection import connect_ray as connect
    from orchestrator.config.schema import SpecError
    from orchestrator.sweep.resources import unsatisfiable_resources

    connect(spec.ray.address, verbose=args.verbose)
    problem = unsatisfiable_resources(spec, _ray_nodes())
    if problem:
        raise SpecError(f"{getattr(args, 'spec', None) or spec.name}: {problem}")


def connect_store(spec, spec_path: str):
    """A client of the spec's tracking store; a store that cannot be reached is a spec error.

    Args:
        spec: the sweep's spec.
        spec_path: the spec's file, named in messages.

    Example:
        >>> client = connect_store(spec, "search_spaces/quickstart.yaml")  # doctest: +SKIP
    """
    from orchestrator.config.schema import SpecError
    from orchestrator.tracking import store

    if spec.tracking.uri:
        key = "tracking.uri"
    elif os.environ.get("MLFLOW_TRACKING_URI"):
        key = "tracking.uri (from MLFLOW_TRACKING_URI)"
    else:
        key = f"tracking.uri (unset: the default {spec.tracking_uri})"
    try:
        return store.connect(spec.tracking_uri)
    except store.TrackingError as error:
        raise SpecError(f"{spec_path}: {key}: {error}") from None


@contextlib.contextmanager
def resumable_on_interrupt(client, parent_id: str, spec):
    """Ctrl-C or SIGTERM ends the sweep where it is, like a killed driver: Tune's state (saved
    every few seconds) and the MLflow runs so far are kept, and `accelsweep resume` picks them up.
    A results folder deleted or a full disk (`orchestrator.sweep.faults`) ends it the same way,
    its parent run marked FAILED (and, the folder deleted, its running trials' runs too).

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id (marked KILLED on Ctrl-C or SIGTERM).
        spec: the sweep's spec (its name goes in the message).

    Raises:
        UserInterrupt: on Ctrl-C or SIGTERM, saying how to continue.
        SweepFailed: on a fault, saying what happened and whether `resume` can go on.

    Example:
        >>> with resumable_on_interrupt(client, parent_id, spec):  # doctest: +SKIP
        ...     tuner.run_sweep(spec, data, callbacks, results_path, search_alg)
    """
    from orchestrator.sweep.faults import SweepFault
    from orchestrator.tracking import store

    terminated = []

    def on_sigterm(signum, frame):  # Ray's own handler would tear its processes down under the driver
        terminated.append(signum)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
    except KeyboardInterrupt as interrupt:
        # an interrupt that landed inside a store write leaves that write's sqlite cursor alive in
        # the traceback's frames, and with it the write's lock on the store: marking the run would
        # wait out sqlite's 20 s busy timeout and fail. The frames are done with; let them go.
        traceback.clear_frames(interrupt.__traceback__)
        client.set_terminated(parent_id, status="KILLED")
        cause = "terminated (SIGTERM)" if terminated else "interrupted"
        raise UserInterrupt(
            f"{cause}; the sweep's state is saved. Continue with: accelsweep resume {spec.name}",
            exit_code=(128 + signal.SIGTERM) if terminated else 130,
        ) from None
    except SweepFault as fault:
        store.finish_sweep_run(client, parent_id, "FAILED", running_trials=None if fault.resumable else "FAILED")
        kept = f"the trials that finished are kept in MLflow run {parent_id}"
        then = f"free some space, then continue with: accelsweep resume {spec.name}" if fault.resumable else "it cannot be resumed"
        raise SweepFailed(f"{fault}; the sweep stopped ({kept}); {then}") from None
    finally:
        signal.signal(signal.SIGTERM, previous)


def conclude(spec, client, parent_id: str, trial_logger, search_front: list[str] | None) -> int:
    """Publish the sweep's results to MLflow, print its table, close its parent run.

    Args:
        spec: the sweep's spec.
        client: the tracking client.
        parent_id: the sweep's parent run id.
        trial_logger: the sweep's `TrialLogger` (its summary is logged).
        search_front: trial ids on the search algorithm's own front, or None.

    Returns:
        The exit code: 1 when a trial failed, else 0.

    Example:
        >>> conclude(spec, client, parent_id, trial_logger, None)  # doctest: +SKIP
        0
    """
    from orchestrator.results import publish, text
    from orchestrator.results import rows as results_rows
    from orchestrator.tracking import store
    from trainers.metrics import online_name

    rows = results_rows.sweep_rows(client, client.get_run(parent_id))
    publish.log_report(client, parent_id, rows)
    searched = [(online_name(metric), direction) for metric, direction in zip(spec.search.metrics, spec.search.modes)]
    publish.log_search_front(client, parent_id, rows, search_front, searched)
    print(text.format_rows(rows))
    logger.info(trial_logger.summary())
    failed = [row["mode"] for row in rows if row["status"] == "error"]
    store.finish_sweep_run(client, parent_id, "FAILED" if failed else "FINISHED")
    if failed:
        logger.warning("%d trial(s) failed: %s (their errors are tagged in MLflow)", len(failed), ", ".join(failed))
    logger.info("results: MLflow run %s (accelsweep ui to browse)", parent_id)
    return 1 if failed else 0


def _ray_nodes():
    import ray

    return ray.nodes()
