"""Choosing the one trial to deploy under an accuracy budget, and saying what it buys."""

from orchestrator.errors import UserError
from orchestrator.results.numbers import is_number, number_text
from orchestrator.results.rows import baseline_of, is_measured
from orchestrator.results.text import cell_text

OPTIMIZE = {"latency": "latency_ms", "size": "size_bytes"}
"""What `select_trial` minimises: batch-1 median latency, or stored bytes."""
_DROP_TOLERANCE = 1e-9  # 0.90 - 0.88 > 0.02 in floats


class SelectionError(UserError):
    """No trial meets the accuracy budget, or there is no measured baseline to measure it against."""


def select_trial(rows: list[dict], max_accuracy_drop: float, optimize: str = "latency") -> dict:
    """The trial to deploy: the fastest (or smallest) whose test accuracy is within the budget.

    A trial qualifies when baseline test accuracy - its test accuracy <= `max_accuracy_drop`
    (absolute: 0.01 is one point). The baseline itself qualifies, so when nothing beats it the
    answer is the baseline. Ties go to the more accurate trial.

    Args:
        rows: from `sweep_rows`.
        max_accuracy_drop: the largest accuracy loss accepted, as a fraction; a negative value asks
            for a trial more accurate than the baseline.
        optimize: "latency" (lowest latency_ms) or "size" (lowest size_bytes).

    Returns:
        The chosen row.

    Raises:
        SelectionError: the sweep has no measured baseline, or no trial qualifies.

    Example:
        >>> select_trial(sweep_rows(client, parent), 0.01)["mode"]  # doctest: +SKIP
        'r16-q8'
    """
    baseline = baseline_of(rows)
    if baseline is None:
        raise SelectionError("the sweep has no measured baseline trial, so no accuracy drop can be computed")
    key = OPTIMIZE[optimize]
    measured = [row for row in rows if is_measured(row) and is_number(row.get(key))]
    candidates = [row for row in measured if row["accuracy_drop"] <= max_accuracy_drop + _DROP_TOLERANCE]
    if not candidates:
        best = min(measured, key=lambda row: row["accuracy_drop"])
        raise SelectionError(
            f"no trial is within {max_accuracy_drop:g} of the baseline's test accuracy "
            f"{baseline['test_accuracy']:.4f}; the closest is {best['mode']} ({best['trial_id']}) "
            f"with a drop of {best['accuracy_drop']:.4f}"
        )
    return min(candidates, key=lambda row: (row[key], -row["test_accuracy"]))


def describe_choice(row: dict, max_accuracy_drop: float, optimize: str = "latency") -> str:
    """A few lines naming the trial `select_trial` chose and what it buys against the baseline.

    Args:
        row: the chosen row.
        max_accuracy_drop: the budget it was chosen under.
        optimize: "latency" or "size", as given to `select_trial`.

    Example:
        >>> print(describe_choice(select_trial(rows, 0.01), 0.01))  # doctest: +SKIP
    """
    criterion = "fastest" if optimize == "latency" else "smallest"
    baseline_accuracy = row["test_accuracy"] + row["accuracy_drop"]
    lines = [
        f"chosen: {row['mode']} ({criterion} trial within {max_accuracy_drop:g} of the baseline's test accuracy)",
        f"  trial {row['trial_id']}, MLflow run {row['run_id']}",
        f"  test accuracy {row['test_accuracy']:.4f} "
        f"(baseline {baseline_accuracy:.4f}, drop {row['accuracy_drop']:.4f})",
        f"  latency {row['latency_ms']:.4f} ms in {row.get('runtime', 'eager')} (speedup {cell_text('speedup', row)}), "
        f"size {number_text('size_bytes', row['size_bytes'], unit=True)} (compression {row['compression']:.2f}x)",
    ]
    if row["baseline"]:
        lines.append(f"  no accelerated trial is {'faster' if optimize == 'latency' else 'smaller'} within the budget")
    return "\n".join(lines)
