"""The results page's plot: each policy's headline f̂(k) with its interval against k, beside the bound
that holds for each m (docs/theory.md §2). Drawn from `compute_results`' `StudyResults`."""

from __future__ import annotations

import io
from collections import defaultdict
from typing import Any, cast

import numpy as np

from studies.estimate.results import RobustRow, StudyResults
from studies.models import Study
from workers.stats import intervals

MARKERS = ("o", "s", "D", "^", "v", "P", "X", "*")


def _plot_bounds(ax: Any, ks: list[int], ms: list[int]) -> None:
    """The bound that holds for each m (theory.md §2): k/(k+1) at m = 1; for m > 1 the band from
    what an equilibrium is guaranteed, 1 − m/(k+1), to what no policy exceeds, k/(k+m)."""
    grid = np.linspace(min(ks), max(ks), 200) if len(ks) > 1 else np.array([ks[0] - 0.5, ks[0] + 0.5])
    for m in ms:
        ceiling = grid / (grid + m)
        if m == 1:
            ax.plot(grid, ceiling, color="black", linestyle="--", linewidth=1.2,
                    label="k/(k+1): the (k+1)-player equilibrium's guarantee")
            continue
        guaranteed = np.clip(1 - m / (grid + 1), 0, None)
        ax.fill_between(grid, guaranteed, ceiling, color="grey", alpha=0.15,
                        label=f"m = {m}: from 1−{m}/(k+1) (an equilibrium's guarantee) to k/(k+{m}) (no policy exceeds)")
        ax.plot(grid, ceiling, color="black", linestyle="--", linewidth=1)
        ax.plot(grid, guaranteed, color="black", linestyle=":", linewidth=1)


def results_plot_svg(results: StudyResults) -> str:
    """The headline f̂(k) per policy against k: the adversary cell with its two-way interval, one
    marker shape per policy at each k, the bound that holds for m, and ½ (SVG text).

    Drawn with matplotlib's SVG canvas on a bare Figure (no pyplot, so no global state and no
    GUI backend: safe in a threaded web process); matplotlib is imported here so that only this view
    loads it. The legend sits outside the axes, right of the lines.
    """
    from matplotlib.backends.backend_svg import FigureCanvasSVG
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 5.2))
    FigureCanvasSVG(fig)
    ax = fig.add_subplot()
    screened = results.adversary == Study.Adversary.ANNOTATORS  # the annotators' adversary is the headline
    rows = [row for row in results.robust if (row.screened if screened else row.headline) is not None]
    ks = sorted({row.k for row in rows}) or [1, 2, 4]
    ms = sorted({row.m for row in rows}) or [1]
    _plot_bounds(ax, ks, ms)
    ax.axhline(0.5, color="grey", linestyle=":", linewidth=1, label="½")
    series: dict[tuple[str, int], list[RobustRow]] = defaultdict(list)
    for row in rows:
        series[(row.policy, row.m)].append(row)
    spread = min(0.3, 0.05 * len(series))  # side by side at each k, so the interval bars don't overlap
    offsets = np.linspace(-spread, spread, len(series)) if len(series) > 1 else [0.0] * len(series)
    for n, (offset, ((policy, m), members)) in enumerate(zip(offsets, sorted(series.items()), strict=True)):
        x = np.array([row.k for row in members], dtype=float) + offset
        heads = [cast(intervals.WinRateInterval, row.screened if screened else row.headline) for row in members]
        y = np.array([h.estimate for h in heads])
        err = [y - np.array([h.low for h in heads]), np.array([h.high for h in heads]) - y]
        label = policy if len(ms) == 1 else f"{policy} (m={m})"
        if members[0].regularised:
            label += " (regularised, β > 0)"
        ax.errorbar(x, y, yerr=err, marker=MARKERS[n % len(MARKERS)], markersize=7, capsize=4, linewidth=1.5,
                    label=label)
    ax.set_xticks(ks)
    ax.set_xlabel("k (responses shown by the policy)")
    ax.set_ylabel("f̂(k) against the adversary")
    ax.set_ylim(0, 1)
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0, fontsize="small", frameon=False)
    if not rows:
        ax.text(0.5, 0.5, "no judgments against the adversary yet", transform=ax.transAxes, ha="center", va="center")
    ax.set_title(f"Headline f̂(k): the annotators' adversary, {round(results.confidence * 100)}% intervals" if screened else
                 f"Headline f̂(k): the pre-registered adversary cell, {round(results.confidence * 100)}% two-way intervals")
    fig.tight_layout()
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None}, bbox_inches="tight")
    return buffer.getvalue()


