"""The Pareto front: rows no other row dominates."""

from orchestrator.results.numbers import is_number

FRONT_OBJECTIVES = (("test_accuracy", "max"), ("latency_ms", "min"), ("size_bytes", "min"))
"""The sweep report's default front. In a sweep's report, latency counts as `front_latency_ms`: the
latency, except that a trial whose speedup interval contains 1.0 counts as exactly as fast as the
baseline, so noise puts no trial on the front."""


def pareto_front(rows: list[dict], objectives=FRONT_OBJECTIVES) -> list[int]:
    """Indices of the rows no other row dominates (as good in every objective, better in one).

    Rows missing an objective (failed or diverged trials) are never on the front.

    Args:
        rows: dicts holding the objective values.
        objectives: (key, "max" | "min") pairs.

    Returns:
        The indices of the non-dominated rows, in order.

    Example:
        >>> pareto_front([{"a": 1, "b": 1}, {"a": 2, "b": 2}], [("a", "max"), ("b", "max")])
        [1]
    """
    signs = {"max": 1.0, "min": -1.0}
    points = {
        index: tuple(signs[mode] * row[key] for key, mode in objectives)
        for index, row in enumerate(rows)
        if row.get("status", "finished") == "finished" and all(is_number(row.get(key)) for key, _ in objectives)
    }
    return [
        index
        for index, point in points.items()
        if not any(_dominates(other, point) for other_index, other in points.items() if other_index != index)
    ]


def _dominates(a, b):
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def speedup_holds_one(row: dict) -> bool:
    """Whether the row's paired speedup interval holds 1.0 (the trial is as fast as the baseline).

    Example:
        >>> speedup_holds_one({"speedup_low": 0.98, "speedup_high": 1.02})
        True
    """
    low, high = row.get("speedup_low"), row.get("speedup_high")
    return is_number(low) and is_number(high) and low <= 1.0 <= high
