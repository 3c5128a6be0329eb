"""The report as text: a terminal table, CSV, JSON or Markdown, from the rows."""

import csv
import io
import json

from orchestrator.results.front import FRONT_OBJECTIVES, speedup_holds_one
from orchestrator.results.numbers import interval_text, number_text
from trainers.metrics import METRICS, REPORT_COLUMNS, TABLE_COLUMNS

TRIAL_COLUMNS = ("mode", "trial_id", "status", "runtime")
"""What names a trial, before its figures."""
COLUMNS = ("front", *TRIAL_COLUMNS) + tuple(
    key for name in TABLE_COLUMNS for key in ((name, "speedup_interval") if name == "speedup" else (name,))
)
"""The table's columns: the trial, then the metrics whose `column` places them in the table
(`trainers.metrics`), the speedup followed by its 95% interval."""
MACHINE_COLUMNS = ("on_front", *TRIAL_COLUMNS, *REPORT_COLUMNS, "run_id")
"""The JSON and CSV columns: numbers as numbers, the front as a boolean."""
FORMATS = ("table", "csv", "json", "markdown")


def format_rows(rows: list[dict], fmt: str = "table", objectives: list[tuple[str, str]] | None = None) -> str:
    """Render report rows as a terminal table, CSV, JSON or Markdown.

    Args:
        rows: from `sweep_rows`.
        fmt: one of FORMATS.
        objectives: the front's objectives, named in the table's legend and shown as columns
            (None: the default).

    Example:
        >>> print(format_rows(rows, "markdown"))  # doctest: +SKIP
    """
    if fmt == "json":
        return json.dumps([{key: row.get(key) for key in MACHINE_COLUMNS} for row in rows], indent=2)
    if fmt == "csv":
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=MACHINE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()
    columns = COLUMNS + tuple(key for key, _ in objectives or () if key not in COLUMNS)  # the front's axes, shown
    cells = [[cell_text(key, row) for key in columns] for row in rows]
    headers = [_header(key) for key in columns]
    widths = [max(len(text) for text in column) for column in zip(headers, *cells)]
    if fmt == "markdown":
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    lines = ["  ".join(text.ljust(width) for text, width in zip(headers, widths))]
    lines += ["  ".join(text.ljust(width) for text, width in zip(row, widths)) for row in cells]
    front = ", ".join(f"{key} {'up' if mode == 'max' else 'down'}" for key, mode in objectives or FRONT_OBJECTIVES)
    legend = (
        f"* = on the Pareto front of ({front}); ratios vs the baseline, speedups paired round by round in the "
        "runtime shown (95% interval; ≈ = the interval holds 1.00x); t2t_s = training seconds to the target accuracy "
        "and train_x the training speedup (timed quietly, paired with the baseline, where the sweep did)"
    )
    return "\n".join(lines + [legend])


def cell_text(key: str, row: dict) -> str:
    """One cell of the table: the row's value for `key` in its metric's format.

    Example:
        >>> cell_text("speedup", {"speedup": 1.0, "speedup_low": 0.98, "speedup_high": 1.02})
        '≈1.00x'
    """
    if key == "time_to_target_s" and row.get("reached_target") is False:
        return "never"
    if key == "speedup" and speedup_holds_one(row):
        return f"≈{row['speedup']:.2f}x"
    if key == "speedup_interval":
        return interval_text(row.get("speedup_low"), row.get("speedup_high"))
    return number_text(key, row.get(key))


def _header(key):
    if key == "front":
        return ""
    if key == "trial_id":
        return "trial"
    if key == "speedup_interval":
        return "95%"
    if key in METRICS and METRICS[key].header:
        return METRICS[key].header
    return key
