"""Server-side SVG charts for report pages: no JavaScript, no external assets.

One chart per check: a bar of −log10 p against two marks, the Holm threshold the check was
compared with (−log10 of its α) and the forgery-cost floor (−log10 2^-bits). A check
attributes only when its bar passes both; the chart shows at a glance which one it missed.
Values past the chart's right edge are drawn to the edge and labelled with their value.
"""
from __future__ import annotations

import math
from html import escape

_W, _H = 480, 64  # viewBox size; the SVG scales to its container
_LEFT, _RIGHT = 8, 8
_LOG10_2 = math.log10(2.0)


def _x(value: float, top: float) -> float:
    return _LEFT + (_W - _LEFT - _RIGHT) * min(value, top) / top


def check_chart(log10_p: float | None, alpha: float | None, min_forgery_bits: float,
                label: str) -> str:
    """An SVG of one check's evidence: −log10 p, the Holm threshold and the forgery floor.

    Args:
        log10_p: the check's log10 p-value (None when it did not run).
        alpha: the Holm threshold it was compared with (None when it did not run).
        min_forgery_bits: the registry's forgery floor, in bits.
        label: accessible name of the chart (scheme and model).

    Returns:
        An `<svg>` element as text (escape-safe), or "" when the check did not run.
    """
    if log10_p is None or alpha is None:
        return ""
    evidence = -max(log10_p, -1e308)
    holm = -math.log10(alpha)
    floor = min_forgery_bits * _LOG10_2
    top = max(floor, holm) * 1.5
    passed = evidence >= holm and evidence >= floor
    colour = "#0b6e3b" if passed else "#a4161a" if evidence >= holm else "#8a93a6"
    shown = f"{evidence:.1f}" if math.isfinite(evidence) and evidence < 1e6 else "≥ 10⁶"
    parts = [
        f'<svg class="chart" viewBox="0 0 {_W} {_H}" role="img" '
        f'aria-label="{escape(label)}: −log10 p = {shown}, Holm threshold {holm:.1f}, '
        f'forgery floor {floor:.1f}" xmlns="http://www.w3.org/2000/svg">',
        f'<rect x="{_LEFT}" y="14" width="{_W - _LEFT - _RIGHT}" height="18" fill="#eef0f4"/>',
        f'<rect x="{_LEFT}" y="14" width="{_x(evidence, top) - _LEFT:.1f}" height="18" '
        f'fill="{colour}"/>',
    ]
    for value, name, dy in ((holm, "Holm α", 46), (floor, f"floor {min_forgery_bits:g} bits", 60)):
        x = _x(value, top)
        parts.append(f'<line x1="{x:.1f}" x2="{x:.1f}" y1="8" y2="38" stroke="#1d2330" '
                     'stroke-width="2" stroke-dasharray="3 2"/>')
        anchor = "end" if x > _W * 0.7 else "start"
        parts.append(f'<text x="{x:.1f}" y="{dy}" font-size="11" text-anchor="{anchor}" '
                     f'fill="#1d2330">{escape(name)} ({value:.1f})</text>')
    parts.append(f'<text x="{_LEFT + 4}" y="11" font-size="11" fill="#1d2330">'
                 f'−log10 p = {escape(shown)}</text>')
    parts.append("</svg>")
    return "".join(parts)
