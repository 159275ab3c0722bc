"""Inline SVG charts of a report (no JavaScript, no external files): lines over epochs, points."""

from __future__ import annotations

import math
from html import escape

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]
W, H, L, R, T, B = 520, 260, 56, 150, 24, 36


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        return [lo]
    step = (hi - lo) / (n - 1)
    return [lo + i * step for i in range(n)]


def _fmt(v: float) -> str:
    return f"{v:.3g}"


def chart(
    title: str,
    series: dict[str, list[tuple[float, float]]],
    *,
    xlabel: str = "epoch",
    lines: bool = True,
    labels: dict[str, str] | None = None,
) -> str:
    """An SVG chart of ``series`` ({name: [(x, y), ...]}); non-finite points are left out.

    ``lines=False`` draws points only (a scatter); ``labels`` ({name: text}) writes a text beside each
    series' last point. Returns '' when no series has a finite point.
    """
    pts = {k: [(x, y) for x, y in v if _finite(x) and _finite(y)] for k, v in series.items()}
    pts = {k: v for k, v in pts.items() if v}
    if not pts:
        return ""
    xs = [x for v in pts.values() for x, _ in v]
    ys = [y for v in pts.values() for _, y in v]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - (abs(y0) * 0.1 or 1), y1 + (abs(y1) * 0.1 or 1)

    def px(x):
        return L + (x - x0) / (x1 - x0) * (W - L - R)

    def py(y):
        return H - B - (y - y0) / (y1 - y0) * (H - T - B)

    out = [
        f'<svg class="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {W} {H}" width="{W}" height="{H}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{L}" y="16" font-size="13" font-weight="bold">{escape(title)}</text>',
        f'<line x1="{L}" y1="{H - B}" x2="{W - R}" y2="{H - B}" stroke="#444"/>',
        f'<line x1="{L}" y1="{T}" x2="{L}" y2="{H - B}" stroke="#444"/>',
    ]
    for t in _ticks(y0, y1):
        out.append(f'<line x1="{L - 4}" y1="{py(t):.1f}" x2="{W - R}" y2="{py(t):.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 6}" y="{py(t) + 4:.1f}" font-size="10" text-anchor="end">{_fmt(t)}</text>')
    for t in _ticks(x0, x1):
        out.append(
            f'<text x="{px(t):.1f}" y="{H - B + 14}" font-size="10" text-anchor="middle">{_fmt(t)}</text>'
        )
    out.append(
        f'<text x="{(L + W - R) / 2}" y="{H - 4}" font-size="11" text-anchor="middle">{escape(xlabel)}</text>'
    )
    for i, (name, v) in enumerate(pts.items()):
        c = COLORS[i % len(COLORS)]
        if lines and len(v) > 1:
            d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in v)
            out.append(f'<polyline fill="none" stroke="{c}" stroke-width="2" points="{d}"/>')
        for x, y in v:
            out.append(
                f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{c}"><title>{escape(name)}: '
                f"{_fmt(x)}, {_fmt(y)}</title></circle>"
            )
        if labels and name in labels:
            x, y = v[-1]
            out.append(
                f'<text x="{px(x) + 5:.1f}" y="{py(y) - 5:.1f}" font-size="10">{escape(labels[name])}</text>'
            )
        ly = T + 14 * i + 8
        out.append(f'<rect x="{W - R + 10}" y="{ly - 8}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{W - R + 24}" y="{ly + 1}" font-size="11">{escape(name[:22])}</text>')
    out.append("</svg>")
    return "\n".join(out)
