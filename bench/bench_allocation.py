"""Adaptive allocation + anytime-valid stopping against the fixed design (issue #22), by simulation.

    .venv/bin/python bench/bench_allocation.py [--studies 1000] [--seed 0] [--batch 1 25] [--write docs/benchmarks.md]

Each simulated study asks one pre-registered question with K = 4 parts: "is policy A's f(k) above
policy B's?" at each of k = 1, 2, 4, 8, each part answered "A above", "B above" or "no difference
that matters" (the paired difference within ±δ, δ = 0.08), at a family-wise error rate α = 0.05
(each part at α/K: Bonferroni, for the sequential and the fixed design alike). The study is
answered when every part is. Prompts come i.i.d. from a universe of 4,000; every prompt a part gets
has J = 4 judgments in each of its two cells (A's and B's, paired by prompt: 8 judgments), each by an
annotator drawn from a pool of 200 whose lean (sd 0.03 on the pick probability) they keep. Per prompt
and cell the pick probability is θ + u (the prompt's, shared by all its cells, sd 0.12) + v (the
cell's own, sd 0.08), clipped to [0.01, 0.99]; in the tie-heavy designs a share q ~ Beta(2, 2) of a
prompt's items credits k/(k+m) = ¾ whoever picks (texts drawn by both sides, items decided by
construction). The truth of a cell is the universe mean of its expected credit (as bench_sequential).

**Adaptive + sequential** runs the product's rule, `workers.stats.allocation.allocate` (the one the
periodic job `studies.allocation` runs), on each part's units (paired per-prompt differences,
`max_variance` 1, the part's threshold 0 and margin δ): its priorities choose which part's items the
next prompt goes to (highest priority first, then the part with the fewest prompts, as the claim's
`priority DESC, live_assignments` order does), recomputed every `batch` prompts (1: after every
prompt; 25: a job that runs while 25 prompts are judged, 200 judgments); a part once answered is
handed to nobody at the next recompute (the question marks it answered). The study is watched after
every prompt (a part's CS changes only when a prompt's last judgment is in, so this is watching after
every judgment) and stops when every part has answered, or when no part has items left (each part
has 2 × the fixed design's prompts: its cap), unanswered. ρ of each part is tuned at the fixed
design's prompts with the part's sd (`sequential.tuned_rho`), fixed before the data.
**Sequential, no allocation**: the same stopping rule, every part getting prompts in turn until the
whole question is answered (a fixed design watched with the CS).
**Fixed design**: the prompts a fixed-time test needs per part for α/K two-sided and power 0.9 at δ,
with the oracle sd of the part's units (`sequential.fixed_sample_size`; generous to the fixed
design, which in practice plans with a pilot's sd), the largest over the parts (one prompt set carries
all cells), times K parts × 8 judgments.

Monte Carlo standard errors: sd/√S for means and ratios, binomial for rates.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import command_line, publish  # noqa: E402

from workers.stats import allocation as al  # noqa: E402
from workers.stats import sequential as sq  # noqa: E402

HEADING = "## Adaptive allocation + anytime-valid stopping (issue #22)"
UNIVERSE, J, POOL, LEAN = 4000, 4, 200, 0.03
DELTA, ALPHA, POWER, TIE_CREDIT = 0.08, 0.05, 0.9, 0.75
K_VALUES = (1, 2, 4, 8)
NONE, ABOVE, BELOW, EQUIVALENT = 0, 1, 2, 3


@dataclass(frozen=True)
class Design:
    name: str
    theta_a: tuple[float, ...]  # A's pick probability at each k
    theta_b: tuple[float, ...]
    ties: bool


DESIGNS = (
    Design("policies differ (Δ from δ up, growing with k)", (0.70, 0.72, 0.74, 0.76), (0.62,) * 4, False),
    Design("policies equal", (0.62, 0.66, 0.70, 0.74), (0.62, 0.66, 0.70, 0.74), False),
    Design("tie-heavy, policies differ", (0.78, 0.82, 0.86, 0.90), (0.62,) * 4, True),
    Design("tie-heavy, policies equal", (0.62, 0.66, 0.70, 0.74), (0.62, 0.66, 0.70, 0.74), True),
)


@dataclass(frozen=True)
class Universe:
    p: np.ndarray  # (U, K, 2) pick probabilities of A's and B's cell of each part
    q: np.ndarray  # (U,) share of items crediting ¾ whoever picks
    delta: np.ndarray  # (K,) the parts' true differences
    lean: np.ndarray  # (POOL,)


def universe(d: Design, rng: np.random.Generator) -> Universe:
    k = len(d.theta_a)
    theta = np.stack([d.theta_a, d.theta_b], axis=-1)  # (K, 2)
    u = rng.normal(0, 0.12, UNIVERSE)[:, None, None]
    p = np.clip(theta + u + rng.normal(0, 0.08, (UNIVERSE, k, 2)), 0.01, 0.99)
    q = rng.beta(2, 2, UNIVERSE) if d.ties else np.zeros(UNIVERSE)
    truth = (q[:, None, None] * TIE_CREDIT + (1 - q[:, None, None]) * p).mean(axis=0)
    return Universe(p, q, truth[:, 0] - truth[:, 1], rng.normal(0, LEAN, POOL))


def units(uni: Universe, part: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One prompt's paired difference of prompt means for each study's `part` (S,)."""
    r = rng.integers(0, UNIVERSE, part.size)
    p = np.clip(uni.p[r, part][..., None] + uni.lean[rng.integers(0, POOL, (part.size, 2, J))], 0, 1)
    credit = np.where(rng.random(p.shape) < uni.q[r][:, None, None], TIE_CREDIT, rng.random(p.shape) < p)
    return credit[:, 0].mean(axis=-1) - credit[:, 1].mean(axis=-1)


@dataclass
class Outcome:
    judgments: np.ndarray  # (S,) at the stop
    answered: np.ndarray  # (S,) every part answered before the cap
    answers: np.ndarray  # (S, K) first answer of each part (NONE: unanswered)
    cover_at_answer: np.ndarray  # (S, K) the part's CS covered Δ when it answered (True if it never did)
    cover_at_stop: np.ndarray  # (S,) every part's CS covers its Δ at the study's stop
    prompts: np.ndarray  # (S, K) prompts each part got


def simulate(uni: Universe, studies: int, n_fixed: int, rho: np.ndarray, *, batch: int, adaptive: bool,
             rng: np.random.Generator) -> Outcome:  # fmt: skip
    """Studies run side by side, one prompt per study and step, watched after every prompt."""
    k = uni.delta.size
    alpha, cap = ALPHA / k, 2 * n_fixed
    stats = al.CellStats.empty((studies, k))
    answers = np.zeros((studies, k), dtype=np.int64)
    cover_at_answer = np.ones((studies, k), dtype=bool)
    running = np.ones(studies, dtype=bool)
    stop_cover = np.zeros(studies, dtype=bool)
    priority = np.zeros((studies, k), dtype=np.int64)
    rule = {"alpha": alpha, "rho": rho, "half_width": 1e-9, "threshold": 0.0, "margin": DELTA, "max_variance": 1.0}
    for step in range(cap * k + 1):
        out = al.allocate(stats, **rule)  # type: ignore[arg-type]
        new = running[:, None] & (answers == NONE) & (out.state == al.ANSWERED)
        kind = np.where(out.low > 0, ABOVE, np.where(out.high < 0, BELOW, EQUIVALENT))
        answers[new] = kind[new]
        cover_at_answer[new] = ((out.low <= uni.delta) & (uni.delta <= out.high))[new]
        done = (answers != NONE).all(axis=1)
        room = (stats.n < cap) & (answers == NONE)
        finished = running & (done | ~room.any(axis=1))
        stop_cover[finished] = ((out.low <= uni.delta) & (uni.delta <= out.high)).all(axis=1)[finished]
        running &= ~finished
        if not running.any():
            break
        if step % batch == 0:
            priority = np.where(answers == NONE, out.priority, 0) if adaptive else np.zeros_like(priority)
        # The claim: highest priority first, then the part with the fewest prompts, then at random.
        key = np.where(stats.n < cap, priority * 1e6 - stats.n + rng.random((studies, k)) * 0.5, -np.inf)
        part = np.argmax(key, axis=1)
        take = running[:, None] & (np.arange(k) == part[:, None])
        stats = stats.add(take, units(uni, part, rng)[:, None])
    return Outcome(stats.n.sum(axis=1) * 2 * J, (answers != NONE).all(axis=1), answers, cover_at_answer,
                   stop_cover, stats.n)  # fmt: skip


def wrong(answers: np.ndarray, delta: np.ndarray) -> np.ndarray:
    """(S,) any part answered against the truth (EQUIVALENT claims |Δ| < δ)."""
    return (
        ((answers == ABOVE) & (delta <= 0)) | ((answers == BELOW) & (delta >= 0))
        | ((answers == EQUIVALENT) & (np.abs(delta) >= DELTA))
    ).any(axis=1)  # fmt: skip


def rate(x: np.ndarray) -> str:
    m = float(np.mean(x))
    return f"{m:.3f} ± {math.sqrt(max(m * (1 - m), 1e-12) / x.size):.3f}"


def ratio(x: np.ndarray, fixed: float) -> str:
    return f"{np.mean(x) / fixed:.3f} ± {np.std(x) / fixed / math.sqrt(x.size):.3f}"


def run(d: Design, studies: int, batches: tuple[int, ...], rng: np.random.Generator, *,
        baseline: bool = True) -> list[dict[str, str]]:  # fmt: skip
    uni = universe(d, rng)
    k = uni.delta.size
    big = np.stack([units(uni, np.full(100_000, i), rng) for i in range(k)], axis=1)
    sd = big.std(axis=0)
    n_each = [sq.fixed_sample_size(float(s), DELTA, alpha=ALPHA / k, power=POWER) for s in sd]
    n_fixed = max(n_each)
    rho = np.array([sq.tuned_rho(n_fixed, alpha=ALPHA / k, sd=float(s)) for s in sd])
    fixed = n_fixed * k * 2 * J
    rows = []
    runs = [(f"adaptive + sequential, batch {b}", b, True) for b in batches]
    runs += [("sequential, no allocation", 1, False)] if baseline else []
    for label, batch, adaptive in runs:
        o = simulate(uni, studies, n_fixed, rho, batch=batch, adaptive=adaptive, rng=rng)
        rows.append({
            "design": d.name, "truth": " / ".join(f"{x:+.3f}" for x in uni.delta), "method": label,
            "fixed": str(fixed), "mean": f"{np.mean(o.judgments):.0f} ± {np.std(o.judgments) / math.sqrt(studies):.0f}",
            "ratio": ratio(o.judgments, fixed), "saving": f"{1 - np.mean(o.judgments) / fixed:.3f}",
            "per_part": " / ".join(f"{x:.2f}" for x in o.prompts.mean(axis=0) / n_fixed),
            "answered": rate(o.answered), "wrong": rate(wrong(o.answers, uni.delta)),
            "cover_answer": rate(o.cover_at_answer.all(axis=1)), "cover_stop": rate(o.cover_at_stop),
        })  # fmt: skip
    return rows


def section(rows: list[dict[str, str]], studies: int, argv: list[str] | None, machine: str) -> str:
    lines = [
        HEADING,
        "",
        f"`{command_line('bench/bench_allocation.py', argv)}` ({studies} simulated studies per design and method; {machine}).",
        "The question, the designs, the rule and the fixed design are in the script's docstring and docs/theory.md §11:",
        "\"is A's f(k) above B's?\" at k = 1, 2, 4, 8, each part answered A above / B above / within ±0.08, family-wise",
        "α = 0.05; watched after every prompt (every judgment: the CS changes only when a prompt's last judgment is in).",
        "Judgments to the study's answer (or to the cap, 2× the fixed design per part, unanswered); ± is the Monte Carlo",
        "standard error. *saving* = 1 − mean / fixed. *per part*: the mean prompts each part got ÷ the fixed design's.",
        "",
        "| design | true Δ per k | method | fixed design (judgments) | mean judgments | mean / fixed | saving | per part / fixed | answered | false answer (any part) | every CS covers at its answer | every CS covers at the stop |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['design']} | {r['truth']} | {r['method']} | {r['fixed']} | {r['mean']} | {r['ratio']} | {r['saving']} "
            f"| {r['per_part']} | {r['answered']} | {r['wrong']} | {r['cover_answer']} | {r['cover_stop']} |"
        )
    return "\n".join(lines) + "\n"


def _machine() -> str:
    import os
    import platform
    from datetime import UTC, datetime

    return (f"{os.cpu_count()} cores ({platform.machine()}), Python {platform.python_version()}, "
            f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC")  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, nargs="+", default=[1, 25])
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rows = [r for d in DESIGNS for r in run(d, args.studies, tuple(args.batch), rng)]
    publish(section(rows, args.studies, argv, _machine()), HEADING, args.write)


if __name__ == "__main__":
    main()
