"""What `resume` and `report --register` may rebuild from: a spec the user vouches for.

Both rebuild a sweep from the `spec.yaml` stored in MLflow. On a shared MLflow server, whoever can
write a run's artifacts could make the next user who resumes import their code (a `model.kind`
factory), run on their Ray cluster (`ray.address`) or unpickle Tune state from their folder
(`ray.storage_path`, the results path tag). So such a stored spec is refused unless the user gives
their own copy (`--spec PATH`, which must match it) or says `--trust-stored-spec`; and `resume`
restores Tune state only from under the vouched spec's own results folder.
"""

import logging
from pathlib import Path

from orchestrator.config.credentials import redact
from orchestrator.config.loading import load_spec
from orchestrator.config.schema import Spec
from orchestrator.errors import UserError

logger = logging.getLogger(__name__)


class TrustError(UserError):
    """A stored spec or results path the user has not vouched for."""


def stored_spec_risks(spec: Spec, resuming: bool) -> list[str]:
    """What rebuilding from `spec` would do beyond reading data: import code, use a cluster or a folder.

    Args:
        spec: the spec stored with a sweep.
        resuming: `resume` (which also connects to Ray and restores Tune state), not `--register`.

    Returns:
        One phrase per risk, each naming the key and the value; empty if there is none.

    Example:
        >>> stored_spec_risks(parse_spec({"name": "t", "data": {"source": "digits"}, "model": {"kind": "m:f"}}), False)  # doctest: +SKIP
        ["model.kind: 'm:f' would import and run m.f"]
    """
    risks = []
    if ":" in spec.model.kind:
        module, _, function = spec.model.kind.partition(":")
        risks.append(f"model.kind: {spec.model.kind!r} would import and run {module}.{function}")
    if resuming and spec.ray.address:
        risks.append(f"ray.address: {spec.ray.address!r} would run the sweep on that Ray cluster")
    if resuming and spec.ray.storage_path:
        risks.append(f"ray.storage_path: {spec.ray.storage_path!r} would restore Tune's saved state from there")
    return risks


def vouched_spec(client, parent_run, spec_path: str | None, trust: bool, resuming: bool = False) -> tuple[Spec, str]:
    """The spec to rebuild a sweep from, and its name for messages.

    With `spec_path`, the user's own file, which must match the stored spec (tracking credentials
    aside). Without it, the stored spec, refused if `stored_spec_risks` finds anything and `trust`
    is not given; with `trust`, each risk is logged.

    Args:
        client: the tracking client.
        parent_run: the sweep's parent run.
        spec_path: --spec, or None.
        trust: --trust-stored-spec.
        resuming: for `resume` (see `stored_spec_risks`).

    Raises:
        TrustError: the file differs from the stored spec, or the stored spec is risky and not trusted.

    Example:
        >>> spec, source = vouched_spec(client, find_sweep_run(client, "quickstart"), None, trust=False)  # doctest: +SKIP
    """
    from orchestrator.tracking.store import sweep_spec  # torch and MLflow: only once a sweep is found

    run_id = parent_run.info.run_id
    stored = sweep_spec(client, parent_run)
    source = f"spec.yaml of sweep run {run_id}"
    if spec_path:
        local = load_spec(spec_path)
        difference = _first_difference(_comparable(local), _comparable(stored))
        if difference:
            raise TrustError(f"{spec_path} is not the spec sweep run {run_id} ran: {difference}")
        return local, spec_path
    risks = stored_spec_risks(stored, resuming)
    if risks and not trust:
        raise TrustError(
            f"{source}: {'; '.join(risks)}. Anyone who can write to this MLflow store could have put it there: "
            f"pass your own copy of the spec with --spec PATH, or --trust-stored-spec if only you can write the store"
        )
    for risk in risks:
        logger.warning("trusting the stored spec (--trust-stored-spec): %s", risk)
    return stored, source


def own_results_path(results_path: str, spec: Spec, source: str) -> str:
    """Check that a sweep's Tune state lies under the vouched spec's results folder, and return it.

    Args:
        results_path: the sweep's results path, as its parent run's tag says.
        spec: the vouched spec (its `results_dir`: `ray.storage_path`, default ./accelsweep_results).
        source: the spec's name in messages.

    Raises:
        TrustError: the path is elsewhere (a tag anyone with write access to the store can change).

    Example:
        >>> own_results_path(os.path.abspath("accelsweep_results/quickstart-20261128-015123"), spec, "spec.yaml")  # doctest: +SKIP
    """
    root = spec.results_dir
    if "://" in root:
        inside = results_path.startswith(root.rstrip("/") + "/")
    else:
        inside = Path(results_path).is_absolute() and Path(results_path).resolve().is_relative_to(Path(root).resolve())
    if not inside:
        raise TrustError(
            f"{source}: the sweep's saved state is at {results_path!r}, outside the results folder {root} "
            f"(ray.storage_path, default ./accelsweep_results): resume from the directory the sweep ran in"
        )
    return results_path


def _comparable(spec):
    dump = spec.model_dump()
    if dump["tracking"]["uri"]:
        dump["tracking"]["uri"] = redact(dump["tracking"]["uri"])
    return dump


def _first_difference(mine, stored, where=""):
    for key in sorted(set(mine) | set(stored), key=str):
        path = f"{where}.{key}" if where else str(key)
        a, b = mine.get(key), stored.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            difference = _first_difference(a, b, path)
            if difference:
                return difference
        elif a != b:
            return f"{path} is {a!r} in it but {b!r} in the stored spec"
    return None
