"""Dependency-free SVG charts for the eval report: bars with intervals, per-query win/loss,
and the embedding map's scatter."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from eval.report_text import escape

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]


GROUP_COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860", "#da8bc3"]


def svg_bars(
    labels: Sequence[str],
    means: Sequence[float],
    lows: Sequence[float],
    highs: Sequence[float],
    title: str,
    width: int = 640,
) -> str:
    """Horizontal bar chart with error bars (0..1 scale unless values exceed it)."""
    row_h, left, right, top = 26, 190, 60, 28
    height = top + row_h * len(labels) + 24
    vmax = max([1.0, *[h for h in highs if not math.isnan(h)]])
    scale = (width - left - right) / vmax
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="16" font-size="13" font-weight="600">{escape(title)}</text>',
    ]
    for i, (label, mean, low, high) in enumerate(zip(labels, means, lows, highs, strict=True)):
        y = top + i * row_h
        colour = PALETTE[i % len(PALETTE)]
        parts.append(
            f'<text x="{left - 6}" y="{y + 15}" font-size="12" text-anchor="end">{escape(label)}</text>'
        )
        if math.isnan(mean):
            continue
        parts.append(
            f'<rect x="{left}" y="{y + 3}" width="{max(mean * scale, 0):.1f}" height="{row_h - 8}" '
            f'fill="{colour}" opacity="0.85"/>'
        )
        if not (math.isnan(low) or math.isnan(high)):
            x1, x2, cy = left + low * scale, left + high * scale, y + row_h / 2 - 1
            parts.append(
                f'<line x1="{x1:.1f}" x2="{x2:.1f}" y1="{cy}" y2="{cy}" stroke="#222" '
                f'stroke-width="1.5"/><line x1="{x1:.1f}" x2="{x1:.1f}" y1="{cy - 5}" '
                f'y2="{cy + 5}" stroke="#222"/><line x1="{x2:.1f}" x2="{x2:.1f}" y1="{cy - 5}" '
                f'y2="{cy + 5}" stroke="#222"/>'
            )
        parts.append(
            f'<text x="{left + max(high if not math.isnan(high) else mean, mean) * scale + 6:.1f}" '
            f'y="{y + 15}" font-size="11">{mean:.3f}</text>'
        )
    axis_y = top + row_h * len(labels) + 4
    parts.append(
        f'<line x1="{left}" x2="{left + vmax * scale:.1f}" y1="{axis_y}" y2="{axis_y}" '
        f'stroke="#999"/>'
    )
    for tick in np.linspace(0, vmax, 6):
        x = left + tick * scale
        parts.append(
            f'<text x="{x:.1f}" y="{axis_y + 14}" font-size="10" text-anchor="middle">'
            f"{tick:.1f}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def svg_winloss(deltas: Sequence[float], title: str, width: int = 640, height: int = 180) -> str:
    """Per-query score change (candidate - base), sorted: green up = win, red down = loss."""
    values = sorted(deltas, reverse=True)
    n = max(len(values), 1)
    left, top, bottom = 40, 24, 20
    plot_h = height - top - bottom
    mid = top + plot_h / 2
    vmax = max([abs(v) for v in values] + [1e-9])
    bar_w = (width - left - 10) / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{left}" y="15" font-size="13" font-weight="600">{escape(title)}</text>',
        f'<line x1="{left}" x2="{width - 10}" y1="{mid}" y2="{mid}" stroke="#999"/>',
        f'<text x="{left - 4}" y="{top + 8}" font-size="10" text-anchor="end">+{vmax:.2f}</text>',
        f'<text x="{left - 4}" y="{top + plot_h}" font-size="10" text-anchor="end">'
        f"-{vmax:.2f}</text>",
    ]
    for i, v in enumerate(values):
        h = abs(v) / vmax * (plot_h / 2)
        if h == 0:
            continue
        y = mid - h if v > 0 else mid
        colour = "#1a7f37" if v > 0 else "#c62828"
        parts.append(
            f'<rect x="{left + i * bar_w:.2f}" y="{y:.2f}" width="{max(bar_w - 0.5, 0.5):.2f}" '
            f'height="{h:.2f}" fill="{colour}"/>'
        )
    wins = sum(v > 0 for v in values)
    losses = sum(v < 0 for v in values)
    parts.append(
        f'<text x="{width - 10}" y="15" font-size="11" text-anchor="end">{wins} wins, '
        f"{losses} losses, {len(values) - wins - losses} ties</text></svg>"
    )
    return "".join(parts)


def svg_scatter(points: Sequence[Sequence[float]], groups: Sequence[str], title: str) -> str:
    """2-D scatter of PCA points, the most common groups coloured, the rest grey."""
    width, height, pad = 320, 300, 14
    arr = np.asarray(points, dtype=np.float64)
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{escape(title)}">',
        f'<text x="{pad}" y="14" font-size="12" font-weight="600">{escape(title)}</text>',
        f'<rect x="{pad}" y="22" width="{width - 2 * pad}" height="{height - 22 - pad}" '
        f'fill="none" stroke="#ddd"/>',
    ]
    if arr.size:
        lo, hi = arr.min(axis=0), arr.max(axis=0)
        span = np.where(hi - lo == 0, 1, hi - lo)
        scaled = (arr - lo) / span
        counts: dict[str, int] = {}
        for g in groups:
            counts[g] = counts.get(g, 0) + 1
        top = [g for g, _ in sorted(counts.items(), key=lambda kv: -kv[1])[: len(GROUP_COLOURS)]]
        colour_of = {g: GROUP_COLOURS[i] for i, g in enumerate(top) if counts[g] > 1}
        for (x, y), g in zip(scaled, groups, strict=True):
            cx = pad + 4 + x * (width - 2 * pad - 8)
            cy = 26 + (1 - y) * (height - 30 - pad - 4)
            parts.append(
                f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="2.6" fill="{colour_of.get(g, "#bbb")}" '
                f'opacity="0.8"><title>{escape(g)}</title></circle>'
            )
    parts.append("</svg>")
    return "".join(parts)
