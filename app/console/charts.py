"""Inline SVG charts: fixed viewBox, so a refresh never changes the layout."""

from html import escape
from typing import Any

from markupsafe import Markup

from app.console.format import human_bytes

WIDTH, HEIGHT, PAD = 600, 160, 24


def _empty(label: str) -> Markup:
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{escape(label)}: no data"><text x="{WIDTH / 2}" y="{HEIGHT / 2}" '
        'text-anchor="middle" class="chart-empty">no data yet</text></svg>')


def per_day_chart(days: list[dict[str, Any]]) -> Markup:
    """Stacked bars per day: completed below, failed above."""
    label = "Backups per day by status, last 30 days"
    if not days:
        return _empty(label)
    top = max(1, max(int(d["completed"]) + int(d["failed"]) for d in days))
    slot = (WIDTH - PAD) / len(days)
    bar = max(1.0, slot * 0.7)
    scale = (HEIGHT - PAD) / top
    parts = [f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
             f'aria-label="{label}">',
             f'<text x="0" y="12" class="chart-axis">{top}</text>',
             f'<line x1="{PAD}" y1="{HEIGHT - PAD}" x2="{WIDTH}" y2="{HEIGHT - PAD}" '
             'class="chart-base"/>']
    for i, day in enumerate(days):
        x = PAD + i * slot
        done, failed = int(day["completed"]), int(day["failed"])
        h_done, h_failed = done * scale, failed * scale
        y_done = HEIGHT - PAD - h_done
        title = escape(f"{day['date']}: {done} completed, {failed} failed")
        parts.append(f'<g><title>{title}</title>'
                     f'<rect class="bar-ok" x="{x:.1f}" y="{y_done:.1f}" width="{bar:.1f}" '
                     f'height="{h_done:.1f}"/>'
                     f'<rect class="bar-failed" x="{x:.1f}" y="{y_done - h_failed:.1f}" '
                     f'width="{bar:.1f}" height="{h_failed:.1f}"/></g>')
    parts.append(f'<text x="{PAD}" y="{HEIGHT - 6}" class="chart-axis">'
                 f'{escape(str(days[0]["date"]))}</text>')
    parts.append(f'<text x="{WIDTH}" y="{HEIGHT - 6}" text-anchor="end" class="chart-axis">'
                 f'{escape(str(days[-1]["date"]))}</text></svg>')
    return Markup("".join(parts))


def storage_chart(points: list[dict[str, Any]]) -> Markup:
    """Bytes stored at the end of each day, as an area."""
    label = "Storage used over time"
    if not points:
        return _empty(label)
    top = max(1, max(int(p["bytes"]) for p in points))
    step = (WIDTH - PAD) / max(1, len(points) - 1)
    scale = (HEIGHT - PAD) / top
    coords = [(PAD + i * step, HEIGHT - PAD - int(p["bytes"]) * scale)
              for i, p in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in coords)
    area = f"{PAD},{HEIGHT - PAD} {line} {coords[-1][0]:.1f},{HEIGHT - PAD}"
    return Markup(
        f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-label="{label}"><text x="0" y="12" class="chart-axis">'
        f'{escape(human_bytes(top))}</text>'
        f'<polygon class="area" points="{area}"/><polyline class="line" points="{line}"/>'
        f'<text x="{PAD}" y="{HEIGHT - 6}" class="chart-axis">'
        f'{escape(str(points[0]["date"]))}</text>'
        f'<text x="{WIDTH}" y="{HEIGHT - 6}" text-anchor="end" class="chart-axis">'
        f'{escape(str(points[-1]["date"]))}</text></svg>')
