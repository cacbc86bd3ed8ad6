"""Small bar charts as server-side SVG: no script, nothing for a Content-Security-Policy to allow."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def bar_chart(
    values: Sequence[int],
    labels: Sequence[str],
    *,
    title: str,
    width: int = 720,
    height: int = 160,
    secondary: Sequence[int] | None = None,
) -> str:
    """Bars of `values` (and `secondary`, drawn inside them: e.g. junk of all reports), labelled."""
    count = max(1, len(values))
    top = max([*values, *(secondary or []), 1])
    step = width / count
    bar = max(1.0, step * 0.8)
    plot = height - 20
    parts = [
        f'<svg class="chart" role="img" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>',
        f'<text class="axis" x="0" y="10">{top}</text>',
        f'<line class="axis" x1="0" y1="{plot}" x2="{width}" y2="{plot}"/>',
    ]
    for index, value in enumerate(values):
        x = index * step
        h = plot * value / top
        label = escape(labels[index] if index < len(labels) else "")
        parts.append(
            f'<rect class="bar" x="{x:.1f}" y="{plot - h:.1f}" width="{bar:.1f}" height="{h:.1f}">'
            f"<title>{label}: {value}</title></rect>"
        )
        if secondary is not None and index < len(secondary):
            h2 = plot * secondary[index] / top
            y2 = plot - h2
            parts.append(
                f'<rect class="bar junk" x="{x:.1f}" y="{y2:.1f}" width="{bar:.1f}" height="{h2:.1f}"/>'
            )
    if labels:
        parts.append(f'<text class="axis" x="0" y="{height - 4}">{escape(labels[0])}</text>')
        parts.append(
            f'<text class="axis" x="{width}" y="{height - 4}" text-anchor="end">{escape(labels[-1])}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
