"""`tradeoff.html`: the trade-off plot as one self-contained HTML page (inline SVG, a few lines of
inline JavaScript, no network fetch), so that it renders offline and in MLflow's artifact viewer.

Test accuracy against batch-1 latency, marker area = stored size; hovering a trial (or its row in
the table below the plot) shows its label, accuracy, latencies, size and ratios. The Pareto
front is blue and labelled, the baseline a red star, the other trials grey.
"""

import html
import math

from orchestrator.results.descriptions import measure_text
from orchestrator.results.numbers import LOG_SCALE_SPREAD

HTML_FILE = "tradeoff.html"
WIDTH, HEIGHT = 860, 520
LEFT, RIGHT, TOP, BOTTOM = 70, 210, 20, 55  # plot margins; the legend sits in the right one
TABLE_COLUMNS = {
    "test_accuracy": "test acc",
    "accuracy_drop": "acc drop",
    "latency_ms": "latency b1",
    "latency_b256_ms": "latency b256",
    "size_bytes": "size",
    "param_count": "params",
    "speedup": "speedup",
    "compression": "compression",
    "runtime": "runtime",
}
"""The table's columns (report row keys) and their headers; a column no row has is left out."""


def tradeoff_html(rows: list[dict], title: str = "sweep") -> str:
    """The interactive trade-off page of a sweep, as one HTML string.

    Args:
        rows: from `rows.sweep_rows`; trials without a measured accuracy, latency and size are
            listed in the table but not plotted.
        title: the sweep's name.

    Returns:
        The page: inline SVG plot, a table of every trial, inline CSS and JavaScript only.

    Example:
        >>> Path("tradeoff.html").write_text(tradeoff_html(sweep_rows(client, parent), "quickstart"))  # doctest: +SKIP
    """
    points = [row for row in rows if _plottable(row)]
    heading = f"{title}: test accuracy vs latency of {len(points)} measured trials"
    return _PAGE.format(
        title=html.escape(heading),
        svg=_svg(points) if points else "<p>No trial was measured: nothing to plot.</p>",
        table=_table(rows),
        width=WIDTH,
    )


def _plottable(row):
    values = [row.get(key) for key in ("test_accuracy", "latency_ms", "size_bytes")]
    measured = all(isinstance(value, (int, float)) and math.isfinite(value) for value in values)
    return row["status"] == "finished" and measured and values[1] > 0 and values[2] > 0


def _svg(points):
    latencies = [row["latency_ms"] for row in points]
    log_x = max(latencies) > LOG_SCALE_SPREAD * min(latencies)
    to_x = math.log10 if log_x else float
    x_low, x_high, x_of = _scale([to_x(value) for value in latencies], LEFT, WIDTH - RIGHT)
    y_low, y_high, y_of = _scale([row["test_accuracy"] for row in points], HEIGHT - BOTTOM, TOP)
    largest = max(row["size_bytes"] for row in points)
    y_step = (y_high - y_low) / 5

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" role="img">']
    for tick in _log_ticks(x_low, x_high) if log_x else _linear_ticks(x_low, x_high):
        at = x_of(tick)
        parts.append(f'<line x1="{at:.1f}" x2="{at:.1f}" y1="{TOP}" y2="{HEIGHT - BOTTOM}" class="grid"/>')
        text = f"{10 ** tick:.3g}" if log_x else f"{tick:.3g}"
        parts.append(f'<text x="{at:.1f}" y="{HEIGHT - BOTTOM + 15}" class="tick" text-anchor="middle">{text}</text>')
    for tick in _linear_ticks(y_low, y_high):
        at = y_of(tick)
        parts.append(f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{at:.1f}" y2="{at:.1f}" class="grid"/>')
        text = f"{tick:.{0 if y_step >= 0.05 else 1 if y_step >= 0.005 else 2}%}"
        parts.append(f'<text x="{LEFT - 6}" y="{at + 4:.1f}" class="tick" text-anchor="end">{text}</text>')
    parts.append(
        f'<rect x="{LEFT}" y="{TOP}" width="{WIDTH - LEFT - RIGHT}" height="{HEIGHT - TOP - BOTTOM}" class="frame"/>'
    )
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2}" y="{HEIGHT - 14}" class="axis-title">'
        f'inference latency, batch 1, median (ms){", log scale" if log_x else ""}</text>'
    )
    parts.append(
        f'<text transform="translate(18 {(TOP + HEIGHT - BOTTOM) / 2}) rotate(-90)" class="axis-title">test accuracy</text>'
    )
    for row in sorted(points, key=lambda row: (row["baseline"], bool(row["front"]))):  # baseline, front on top
        cx, cy = x_of(to_x(row["latency_ms"])), y_of(row["test_accuracy"])
        parts.append(_marker(row, cx, cy, _radius(row["size_bytes"], largest)))
    parts += _legend(points, largest)
    parts.append("</svg>")
    return "\n".join(parts)


def _scale(values, start, end):
    low, high = min(values), max(values)
    pad = (high - low) * 0.1 or abs(high) * 0.05 or 1.0
    low, high = low - pad, high + pad
    return low, high, lambda value: start + (value - low) / (high - low) * (end - start)


def _linear_ticks(low, high):
    step = 10 ** math.floor(math.log10((high - low) / 5))
    step *= next(multiple for multiple in (1, 2, 5, 10) if (high - low) / (step * multiple) <= 6)
    first = math.ceil(low / step) * step
    return [first + index * step for index in range(int((high - first) / step + 1e-9) + 1)]


def _log_ticks(low, high):
    decades = range(math.floor(low), math.ceil(high) + 1)
    ticks = [math.log10(mantissa * 10**decade) for decade in decades for mantissa in (1, 2, 5)]
    return [tick for tick in ticks if low <= tick <= high]


def _marker(row, cx, cy, radius):
    kind = "baseline" if row["baseline"] else "front" if row["front"] else "other"
    if kind == "baseline":
        shape = f'<polygon points="{_star(cx, cy, radius + 4)}" class="{kind}"/>'
    else:
        shape = f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{radius:.1f}" class="{kind}"/>'
    label = ""
    if kind != "other":
        label = f'<text x="{cx + radius + 5:.1f}" y="{cy - radius - 2:.1f}" class="label">{html.escape(row["mode"])}</text>'
    return f'<g {_hover_attributes(row)}>{shape}{label}</g>'


def _hover_attributes(row, css=""):
    tip = html.escape(_tip(row), quote=True).replace("\n", "&#10;")
    classes = f"trial {css}".strip()
    return f'class="{classes}" data-run="{html.escape(row["run_id"])}" data-tip="{tip}"'


def _tip(row):
    standing = "baseline" if row["baseline"] else "on the Pareto front" if row["front"] else "not on the front"
    lines = [
        f"{row['mode']}  (trial {row['trial_id']}, {standing})",
        f"test accuracy {measure_text(row, 'test_accuracy')}, drop {measure_text(row, 'accuracy_drop')}",
        f"latency {measure_text(row, 'latency_ms')} at batch 1, {measure_text(row, 'latency_b256_ms')} at batch 256",
        f"size {measure_text(row, 'size_bytes')}, {measure_text(row, 'param_count')} parameters",
        f"speedup {measure_text(row, 'speedup')}, compression {measure_text(row, 'compression')}",
    ]
    if "runtime" in row:
        lines.append(f"runtime {measure_text(row, 'runtime')}")
    return "\n".join(lines)


def _radius(size_bytes, largest):
    return 4 + 14 * math.sqrt(size_bytes / largest)


def _star(cx, cy, radius):
    corners = []
    for index in range(10):
        angle = math.pi / 2 + index * math.pi / 5
        r = radius if index % 2 == 0 else radius * 0.45
        corners.append(f"{cx + r * math.cos(angle):.1f},{cy - r * math.sin(angle):.1f}")
    return " ".join(corners)


def _legend(points, largest):
    x, y = WIDTH - RIGHT + 18, TOP + 12
    parts = []
    if any(row["baseline"] for row in points):
        parts.append(f'<polygon points="{_star(x, y, 8)}" class="baseline"/>')
        parts.append(f'<text x="{x + 16}" y="{y + 4}" class="legend">baseline (dense fp32)</text>')
        y += 24
    for kind, text in (("front", "on the Pareto front"), ("other", "other trials")):
        parts.append(f'<circle cx="{x}" cy="{y}" r="7" class="{kind}"/>')
        parts.append(f'<text x="{x + 16}" y="{y + 4}" class="legend">{text}</text>')
        y += 24
    for size in sorted({min(row["size_bytes"] for row in points), largest}):
        radius = _radius(size, largest)
        y += radius
        parts.append(f'<circle cx="{x}" cy="{y:.1f}" r="{radius:.1f}" class="other"/>')
        parts.append(f'<text x="{x + 24}" y="{y + 4:.1f}" class="legend">stored size {measure_text({"size_bytes": size}, "size_bytes")}</text>')
        y += radius + 8
    return parts


def _table(rows):
    columns = [key for key in TABLE_COLUMNS if any(key in row for row in rows)]
    headers = ("", "mode", "trial", "status", *(TABLE_COLUMNS[key] for key in columns))
    head = "".join(f"<th>{header}</th>" for header in headers)
    body = []
    for row in rows:
        cells = [
            "*" if row.get("front") else "",
            html.escape(row["mode"]),
            html.escape(str(row["trial_id"])),
            html.escape(row["status"]),
            *(html.escape(measure_text(row, key)) for key in columns),
        ]
        css = "baseline" if row.get("baseline") else "front" if row.get("front") else ""
        body.append(
            f'<tr {_hover_attributes(row, css)}>'
            + "".join(f"<td>{cell}</td>" for cell in cells)
            + "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font: 13px sans-serif; margin: 12px; color: #222; }}
h1 {{ font-size: 15px; }}
svg {{ max-width: {width}px; display: block; }}
.frame {{ fill: none; stroke: #444; }}
.grid {{ stroke: #ddd; }}
.tick, .axis-title, .legend {{ font-size: 11px; fill: #333; }}
.axis-title {{ text-anchor: middle; font-size: 12px; }}
.label {{ font-size: 11px; fill: #1f4e79; }}
circle.other {{ fill: #bbb; fill-opacity: 0.75; stroke: #555; }}
circle.front {{ fill: #1f77b4; fill-opacity: 0.85; stroke: #0b3c61; }}
polygon.baseline {{ fill: #d62728; stroke: #600; }}
.trial {{ cursor: pointer; }}
g.trial.hover circle, g.trial.hover polygon {{ stroke: #000; stroke-width: 3; }}
table {{ border-collapse: collapse; margin-top: 12px; }}
th, td {{ border-bottom: 1px solid #ddd; padding: 3px 8px; text-align: left; white-space: nowrap; }}
tr.front td {{ background: #e8f1fa; }}
tr.baseline td {{ background: #fbeaea; }}
tr.trial.hover td {{ background: #ffe9a8; }}
#tip {{ position: absolute; display: none; white-space: pre; background: #fff; border: 1px solid #888;
        padding: 6px 8px; box-shadow: 2px 2px 6px rgba(0,0,0,.2); pointer-events: none; }}
</style></head>
<body>
<h1>{title}</h1>
<div>Hover over a trial for its numbers. Marker area = stored size; blue = on the Pareto front of
(test accuracy up, latency down, size down); red star = the dense fp32 baseline; ratios are against it.</div>
{svg}
{table}
<div id="tip"></div>
<script>
const tip = document.getElementById("tip");
for (const trial of document.querySelectorAll(".trial")) {{
  const same = document.querySelectorAll('.trial[data-run="' + trial.dataset.run + '"]');
  trial.addEventListener("mousemove", (event) => {{
    tip.textContent = trial.dataset.tip;
    tip.style.display = "block";
    tip.style.left = (event.pageX + 14) + "px";
    tip.style.top = (event.pageY + 14) + "px";
    same.forEach((element) => element.classList.add("hover"));
  }});
  trial.addEventListener("mouseleave", () => {{
    tip.style.display = "none";
    same.forEach((element) => element.classList.remove("hover"));
  }});
}}
</script>
</body></html>
"""
