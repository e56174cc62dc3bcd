"""A doctor's training curve as a small inline SVG (for the admin and the jobs page).

Pure Python: the input is the stored history (``StepLoss`` dicts: step, loss, subtb, hinge,
optional margin), the output an ``<svg>`` string built only from numbers this module formats
and fixed labels, so it is safe to mark as HTML without escaping anything from the run. Values
that are missing or not finite are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["history_svg"]

_SERIES = (
    ("subtb", "#1f77b4", "SubTB"),
    ("hinge", "#ff7f0e", "hinge"),
    ("margin", "#2ca02c", "held-out margin"),
)


def _points(
    history: Sequence[Mapping[str, Any]], key: str
) -> list[tuple[float, float]]:
    out = []
    for h in history:
        step, value = h.get("step"), h.get(key)
        if (
            isinstance(step, (int, float))
            and isinstance(value, (int, float))
            and math.isfinite(value)
        ):
            out.append((float(step), float(value)))
    return out


def history_svg(
    history: Sequence[Mapping[str, Any]], *, width: int = 320, height: int = 90
) -> str:
    """Each series on its own vertical scale (min..max of that series), steps on the x axis.

    Returns "" when there is no step to draw. The legend gives each series' last value.
    """
    series = [(label, colour, _points(history, key)) for key, colour, label in _SERIES]
    series = [s for s in series if s[2]]
    if not series:
        return ""
    steps = [x for _, _, pts in series for x, _ in pts]
    x0, x1 = min(steps), max(steps)
    plot_h = height - 16
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
             f'aria-label="training curve" style="background:#fff;border:1px solid #ddd">']  # fmt: skip
    legend = []
    for n, (label, colour, pts) in enumerate(series):
        lo, hi = min(v for _, v in pts), max(v for _, v in pts)
        coords = " ".join(
            f"{4 + (width - 8) * ((x - x0) / (x1 - x0) if x1 > x0 else 0.5):.1f},"
            f"{2 + plot_h * (1 - ((v - lo) / (hi - lo) if hi > lo else 0.5)):.1f}"
            for x, v in pts
        )
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.2" points="{coords}"/>'
        )
        legend.append(
            f'<tspan fill="{colour}" x="{4 + n * (width // 3)}">{label} {pts[-1][1]:.3g}</tspan>'
        )
    parts.append(f'<text y="{height - 3}" font-size="10">{"".join(legend)}</text>')
    parts.append("</svg>")
    return "".join(parts)
