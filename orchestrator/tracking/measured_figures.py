"""Figures a host measured in the quiet phase, stored per trial as `bench/<host>.json`, read back."""

import json
import tempfile

from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from trainers.metrics import latency_name

BENCH_ARTIFACT_DIR = "bench"


def host_figures(client: MlflowClient, run_id: str, host: str) -> dict | None:
    """The primary-runtime metrics one host measured for a trial (from `bench/<host>.json`).

    Returns:
        Metrics like `latency_ms`, `speedup`, ... or None when that host never measured the trial.

    Example:
        >>> host_figures(client, row["run_id"], "edge-box")["latency_ms"]  # doctest: +SKIP
        0.0091
    """
    with tempfile.TemporaryDirectory() as directory:
        try:
            path = client.download_artifacts(run_id, artifact_path(host), directory)
        except (MlflowException, OSError):
            return None
        with open(path) as file:
            stored = json.load(file)
    primary = stored["figures"].get(stored["primary"], {})
    return primary_metrics({int(batch): figure for batch, figure in primary.items()} if "unavailable" not in primary else primary)


def primary_metrics(by_batch: dict) -> dict:
    """The primary runtime's figures by batch size as report metrics (`latency_ms`, `speedup`, ...).

    Example:
        >>> primary_metrics({1: {"median_ms": 0.01, "p95_ms": 0.02, "speedup": 1.1, "speedup_low": 1.0, "speedup_high": 1.2}})["latency_ms"]
        0.01
    """
    if not by_batch or "unavailable" in by_batch:
        return {}
    metrics = {}
    for batch, figure in by_batch.items():
        metrics[latency_name(batch)] = figure["median_ms"]
        metrics[latency_name(batch, "p95_ms")] = figure["p95_ms"]
    metrics |= {key: by_batch[1][key] for key in ("speedup", "speedup_low", "speedup_high")}
    largest = max(by_batch)
    metrics["inference_samples_per_s"] = largest / (by_batch[largest]["median_ms"] / 1000.0)
    return metrics


def artifact_path(host: str) -> str:
    """Where a host's figures are stored in a run's artifacts.

    Example:
        >>> artifact_path("edge box")
        'bench/edge_box.json'
    """
    safe = "".join(character if character.isalnum() or character in "-_." else "_" for character in host)
    return f"{BENCH_ARTIFACT_DIR}/{safe}.json"
