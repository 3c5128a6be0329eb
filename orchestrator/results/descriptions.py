"""Run descriptions (`mlflow.note.content`, the "Description" box of MLflow's run page), so that
the run pages themselves say what the sweep found:
- a trial's: its recipe in words, its measured row, and its ratios to the baseline;
- the sweep's: the trade-off table in Markdown, with the baseline and the front named.

Written when a sweep concludes (by `publish.log_report`); `accelsweep report NAME --log` rewrites them.
"""

from mlflow.tracking import MlflowClient

from orchestrator.results.numbers import interval_text, is_number, number_text
from orchestrator.results.text import format_rows
from orchestrator.tracking.store import trial_choices
from orchestrator.tracking.tags import SWEEP_TAG

NOTE_TAG = "mlflow.note.content"
"""The tag MLflow's UI shows (and edits) as a run's description."""


def recipe_in_words(choices: dict[str, str]) -> str:
    """A trial's acceleration choices as a phrase: each technique config's own `describe()`, in the
    techniques' order; a key that names no technique reads as `key = value`.

    Loads the techniques (torch) when called, not when this module is imported.

    Args:
        choices: the trial's sampled values by space key, as its MLflow params (strings).

    Example:
        >>> recipe_in_words({"rank": "8", "quant_bits": "8", "dropout": "0.0"})
        'low-rank factorisation of the layers to rank 8 (where that saves weights); 8-bit quantisation-aware training, deployed with int8 kernels'
    """
    from trainers.techniques import OPTION_KEYS, TECHNIQUES

    values = trial_choices(choices)
    phrases = [
        _described(TECHNIQUES[key](values[key], **{o: values[o] for o, k in OPTION_KEYS.items() if k == key and o in values}), key, choices[key])
        for key in TECHNIQUES
        if key in values
    ]
    workers = values.get("workers")
    if workers not in (None, 1):
        phrases.append(f"{workers} data-parallel (DDP) workers")
    phrases += [f"{key} = {value}" for key, value in choices.items() if key not in (*TECHNIQUES, *OPTION_KEYS, "workers")]
    return "; ".join(phrase for phrase in phrases if phrase) or "no acceleration technique: the dense fp32 model"


def measure_text(row: dict, key: str) -> str:
    """One value of a report row as a person reads it, with its unit; "-" when the row lacks it.

    A speedup shows its interval when the row has `speedup_low` and `speedup_high`.

    Args:
        row: a report row (`rows.sweep_rows`).
        key: the row's key, e.g. "latency_ms" or "speedup".

    Example:
        >>> measure_text({"speedup": 1.5, "speedup_low": 1.4, "speedup_high": 1.6}, "speedup")
        '1.50x (1.40-1.60x)'
    """
    value = row.get(key)
    text = number_text(key, value, unit=True)
    low, high = row.get(f"{key}_low"), row.get(f"{key}_high")
    if is_number(value) and is_number(low) and is_number(high):
        text += f" ({interval_text(low, high)}x)"
    return text


def trial_description(row: dict, choices: dict[str, str]) -> str:
    """A trial run's description in Markdown: recipe in words, measured row, ratios to the baseline.

    Args:
        row: the trial's report row (`rows.sweep_rows`: ratios and front already set).
        choices: the trial's sampled values (its MLflow params).

    Example:
        >>> print(trial_description(rows[1], client.get_run(rows[1]["run_id"]).data.params))  # doctest: +SKIP
    """
    if row.get("baseline"):
        standing = "the sweep's **dense fp32 baseline**: every ratio in this sweep is measured against it"
    elif row.get("front"):
        standing = "**on the Pareto front** of (test accuracy up, latency down, size down)"
    else:
        standing = "not on the Pareto front: another trial is as good in accuracy, latency and size, and better in one"
    lines = [
        f"**{row['mode']}** (trial {row['trial_id']}, {row['status']}): {standing}.",
        "",
        f"Recipe: {recipe_in_words(choices)}.",
        "",
    ]
    if row["status"] != "finished":
        return "\n".join(lines + ["Not measured: left out of the trade-off and the Pareto front."])
    lines += [
        "| measured | value | against the baseline |",
        "|---|---|---|",
        f"| test accuracy | {measure_text(row, 'test_accuracy')} | drop {measure_text(row, 'accuracy_drop')} |",
        f"| latency, batch 1 (median) | {measure_text(row, 'latency_ms')} | speedup {measure_text(row, 'speedup')} |",
        f"| latency, batch 1 (p95) | {measure_text(row, 'latency_p95_ms')} | |",
        f"| latency, batch 256 (median) | {measure_text(row, 'latency_b256_ms')} | |",
        f"| stored size | {measure_text(row, 'size_bytes')} | compression {measure_text(row, 'compression')} |",
        f"| parameters | {measure_text(row, 'param_count')} | |",
    ]
    if "runtime" in row:
        lines.append(f"| runtime | {measure_text(row, 'runtime')} | |")
    lines += ["", "speedup = baseline latency / this latency; compression = baseline size / this size."]
    return "\n".join(lines)


def sweep_description(name: str, rows: list[dict]) -> str:
    """The sweep's parent run description in Markdown: what it found, then the whole trade-off table.

    Args:
        name: the sweep's name.
        rows: from `rows.sweep_rows`.

    Example:
        >>> print(sweep_description("quickstart", rows))  # doctest: +SKIP
    """
    front = [row["mode"] for row in rows if row.get("front")]
    baseline = next((row for row in rows if row.get("baseline") and row["status"] == "finished"), None)
    lines = [f"**Sweep {name}**: {len(rows)} trials, {len(front)} on the Pareto front: {', '.join(front) or 'none'}.", ""]
    if baseline is not None:
        lines += [
            (
                f"Baseline (dense fp32): test accuracy {measure_text(baseline, 'test_accuracy')}, latency "
                f"{measure_text(baseline, 'latency_ms')} at batch 1, size {measure_text(baseline, 'size_bytes')}."
            ),
            "",
        ]
    lines += [
        "The plot: Artifacts, `tradeoff.png`; hover over the trials in `tradeoff.html`.",
        "",
        format_rows(rows, "markdown"),
        "",
        "\\* = on the Pareto front of (test accuracy up, latency down, size down); ratios vs the baseline.",
    ]
    return "\n".join(lines)


def log_descriptions(client: MlflowClient, parent_id: str, rows: list[dict]) -> None:
    """Set the description of the sweep's parent run and of every trial's run.

    Args:
        client: the tracking client.
        parent_id: the sweep's parent run id.
        rows: from `rows.sweep_rows`.

    Example:
        >>> log_descriptions(client, parent_id, sweep_rows(client, client.get_run(parent_id)))  # doctest: +SKIP
    """
    for row in rows:
        choices = client.get_run(row["run_id"]).data.params
        client.set_tag(row["run_id"], NOTE_TAG, trial_description(row, choices))
    name = client.get_run(parent_id).data.tags.get(SWEEP_TAG, parent_id)
    client.set_tag(parent_id, NOTE_TAG, sweep_description(name, rows))


def _described(config, key, text):
    describe = getattr(config, "describe", None)  # a technique that does not describe itself reads as its value
    return describe() if describe else f"{key} = {text}"
