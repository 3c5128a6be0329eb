"""Publishing a sweep's results to its MLflow parent run: the files, the plots, the metrics and the
run descriptions; and the search's own front, compared with the report's.
"""

import json
import logging
import os
import tempfile

from mlflow.tracking import MlflowClient

from orchestrator.results import descriptions, html
from orchestrator.results.png import PLOT_FILE, plot_tradeoff, plottable
from orchestrator.results.rows import baseline_of
from orchestrator.results.text import format_rows
from orchestrator.tracking.tags import OPTUNA_FRONT_TAG, SWEEP_TAG

logger = logging.getLogger(__name__)


def log_report(client: MlflowClient, parent_id: str, rows: list[dict]) -> None:
    """Attach the trade-off table and the Pareto front to the sweep's parent run.

    Logs `tradeoff.csv`, `tradeoff.md`, `pareto_front.json`, the plots `tradeoff.png` and
    `tradeoff.html` (when at least one trial was measured), and the parent metrics `trials`,
    `pareto_size`, `baseline_test_accuracy`, `baseline_latency_ms`, `baseline_size_bytes`; sets
    the descriptions of the parent run and of every trial's run.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        rows: from `sweep_rows`.

    Example:
        >>> log_report(client, parent_id, sweep_rows(client, client.get_run(parent_id)))  # doctest: +SKIP
    """
    descriptions.log_descriptions(client, parent_id, rows)
    client.log_text(parent_id, format_rows(rows, "csv"), "tradeoff.csv")
    client.log_text(parent_id, format_rows(rows, "markdown"), "tradeoff.md")
    front = [row for row in rows if row["front"]]
    client.log_text(parent_id, format_rows(front, "json"), "pareto_front.json")
    client.log_metric(parent_id, "trials", len(rows))
    client.log_metric(parent_id, "pareto_size", len(front))
    baseline = baseline_of(rows)
    for key in ("test_accuracy", "latency_ms", "size_bytes"):
        if baseline is not None:
            client.log_metric(parent_id, f"baseline_{key}", baseline[key])
    if not plottable(rows):
        logger.info("no trial of run %s was measured: no %s", parent_id, PLOT_FILE)
        return
    sweep = client.get_run(parent_id).data.tags.get(SWEEP_TAG, parent_id)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, PLOT_FILE)
        plot_tradeoff(rows, path, title=sweep)
        client.log_artifact(parent_id, path)
    client.log_text(parent_id, html.tradeoff_html(rows, title=sweep), html.HTML_FILE)


def log_search_front(
    client: MlflowClient, parent_id: str, rows: list[dict], search_front: list[str] | None, objectives: list
) -> None:
    """Record a multi-objective search's own Pareto front, and whether it is the front the report
    computes over the same objectives and figures (the search saw provisional latencies, so the
    report's own front, over quiet ones, may rightly differ).

    Logs `optuna_pareto_front.json` and the tag `accelsweep.optuna_front_matches` ("true"/"false");
    does nothing when `search_front` is None (single-objective, random or grid search).

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        rows: the report's rows (`rows.sweep_rows`).
        search_front: trial ids on the search algorithm's front (`search.optuna_front`).
        objectives: the (metric, "max" | "min") pairs the search optimised, as it saw them.

    Example:
        >>> log_search_front(client, parent_id, rows, sweep.optuna_front(search), [("test_accuracy", "max")])  # doctest: +SKIP
    """
    from orchestrator.results.front import pareto_front

    if search_front is None:
        return
    client.log_text(parent_id, json.dumps(search_front), "optuna_pareto_front.json")
    report_front = sorted(rows[index]["trial_id"] for index in pareto_front(rows, objectives))
    matches = report_front == sorted(search_front)
    if not matches:
        logger.warning("Optuna's Pareto front %s differs from the report's %s", search_front, report_front)
    client.set_tag(parent_id, OPTUNA_FRONT_TAG, str(matches).lower())
