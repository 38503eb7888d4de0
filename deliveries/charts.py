"""Server-rendered SVG line charts for the admin dashboard: no JavaScript, no CDN, works offline."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from django.utils.safestring import SafeString, mark_safe

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 12, 12, 28


@dataclass(frozen=True)
class Line:
    label: str
    values: Sequence[float | None]  # None: no data at that point (the line breaks)
    color: str


def _fmt(value: float, unit: str, top: float | None = None) -> str:
    """A value in `unit`; durations in seconds when the axis (`top`, else the value itself)
    reaches 10 s, so that every label of one axis is in one unit."""
    if unit == "%":
        return f"{value * 100:.1f}%"
    if unit == "ms":
        seconds = (value if top is None else top) >= 10_000
        return f"{value / 1000:.1f} s" if seconds else f"{value:.0f} ms"
    return f"{value:.0f}" if value >= 10 else f"{value:.3g}"


def line_chart(
    lines: Sequence[Line],
    x_labels: Sequence[str],
    *,
    unit: str = "",
    y_max: float | None = None,
    title: str = "",
) -> SafeString:
    """An SVG document fragment: one polyline per line (broken where values are None), four
    horizontal grid lines labelled in `unit` ("%" for ratios, "ms"), and the first, middle and
    last x labels. Every point has a hover title with its value."""
    count = max((len(line.values) for line in lines), default=0)
    present = [v for line in lines for v in line.values if v is not None]
    top = y_max if y_max is not None else (max(present) if present else 1.0)
    top = top or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(i: int) -> float:
        return LEFT + (plot_w * i / (count - 1) if count > 1 else plot_w / 2)

    def y(v: float) -> float:
        return TOP + plot_h * (1 - min(v, top) / top)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" role="img" '
        f'viewBox="0 0 {WIDTH} {HEIGHT}" width="100%" aria-label="{escape(title)}">',
    ]
    for k in range(5):
        value = top * k / 4
        gy = y(value)
        # no data and no fixed scale: a scale of nothing would read "1 ms, 1 ms, 0 ms, 0 ms"
        label = _fmt(value, unit, top) if present or y_max is not None else ""
        parts.append(
            f'<line x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{gy:.1f}" y2="{gy:.1f}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text x="{LEFT - 6}" y="{gy + 4:.1f}" font-size="11" text-anchor="end" '
            f'fill="#666">{escape(label)}</text>'
        )
    if count:
        for i in sorted({0, count // 2, count - 1}):
            if i < len(x_labels):
                anchor = "start" if i == 0 else "end" if i == count - 1 else "middle"
                parts.append(
                    f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" font-size="11" '
                    f'text-anchor="{anchor}" fill="#666">{escape(x_labels[i])}</text>'
                )
    for line in lines:
        runs: list[list[tuple[float, float, float]]] = [[]]
        for i, v in enumerate(line.values):
            if v is None:
                if runs[-1]:
                    runs.append([])
                continue
            runs[-1].append((x(i), y(v), v))
        for run in runs:
            if len(run) > 1:
                points = " ".join(f"{px:.1f},{py:.1f}" for px, py, _ in run)
                parts.append(
                    f'<polyline fill="none" stroke="{escape(line.color)}" stroke-width="2" '
                    f'points="{points}"/>'
                )
            for px, py, v in run:
                label = escape(f"{line.label}: {_fmt(v, unit)}")
                parts.append(
                    f'<circle cx="{px:.1f}" cy="{py:.1f}" r="2.5" fill="{escape(line.color)}">'
                    f"<title>{label}</title></circle>"
                )
    if not present:
        parts.append(
            f'<text x="{WIDTH / 2}" y="{HEIGHT / 2}" font-size="13" text-anchor="middle" '
            f'fill="#999">No deliveries finished in this window</text>'
        )
    parts.append("</svg>")
    # every text in it went through escape(); the rest is numbers and our own markup
    return mark_safe("".join(parts))  # noqa: S308
