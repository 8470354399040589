"""A target's history as an inline SVG line chart (pass rate per suite over its runs):
no scripts, no external assets, readable without JavaScript."""

from __future__ import annotations

import html
from typing import Any

WIDTH, HEIGHT, MARGIN, LEGEND = 760, 240, 40, 120
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def history_svg(history: list[dict[str, Any]]) -> str:
    """Pass rate (0-100 %) of each suite, one point per run, oldest left."""
    suites = sorted({s for run in history for s in run["suites"]})
    if not history or not suites:
        return "<p>没有运行记录 / No runs yet</p>"
    span = WIDTH - 2 * MARGIN - LEGEND
    step = span / max(len(history) - 1, 1)
    first = MARGIN + (span / 2 if len(history) == 1 else 0)

    def y(rate: float) -> float:
        return HEIGHT - MARGIN - rate * (HEIGHT - 2 * MARGIN)

    parts = [f"<svg xmlns='http://www.w3.org/2000/svg' class='history' width='{WIDTH}' "
             f"height='{HEIGHT}' role='img' aria-label='pass rate per suite over runs'>",
             f"<line x1='{MARGIN}' y1='{y(0)}' x2='{WIDTH - MARGIN - LEGEND}' y2='{y(0)}' "
             "stroke='#999'/>",
             f"<line x1='{MARGIN}' y1='{y(0)}' x2='{MARGIN}' y2='{y(1)}' stroke='#999'/>"]
    for tick in (0.0, 0.5, 1.0):
        parts.append(f"<text x='4' y='{y(tick) + 4:.1f}' font-size='11'>{tick:.0%}</text>")
    for i, run in enumerate(history):
        label = html.escape(f"{run['runtime']} {run['runtime_version']}")
        parts.append(f"<text x='{first + i * step:.1f}' y='{HEIGHT - 12}' font-size='10' "
                     f"text-anchor='middle'>{label}</text>")
    for n, suite in enumerate(suites):
        colour = COLOURS[n % len(COLOURS)]
        points = [(first + i * step, y(run["suites"][suite]["pass_rate"]))
                  for i, run in enumerate(history)
                  if run["suites"].get(suite, {}).get("pass_rate") is not None]
        path = " ".join(f"{x:.1f},{yy:.1f}" for x, yy in points)
        parts.append(f"<polyline fill='none' stroke='{colour}' stroke-width='2' "
                     f"points='{path}' data-suite='{html.escape(suite)}'/>")
        parts += [f"<circle cx='{x:.1f}' cy='{yy:.1f}' r='3' fill='{colour}'/>"
                  for x, yy in points]
        parts.append(f"<text x='{WIDTH - LEGEND}' y='{MARGIN + 14 * n}' font-size='11' "
                     f"fill='{colour}'>{html.escape(suite)}</text>")
    parts.append("</svg>")
    return "".join(parts)
