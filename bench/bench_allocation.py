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

**The annotators' adversary** (`MIN_DESIGNS`): one policy against five opponents at one k, pick
probabilities 0.60, 0.64, 0.70, 0.78, 0.86 (+ u, v and leans as above, no ties); the question "is f
against the worst opponent, f_H(k) = min over them, ≥ c?", answered yes / no / within ±δ on the
minimum's CS [min of the lows, min of the highs] (each cell's CS at α/5, so all cover at once with
probability ≥ 1 − α), once every cell has 10 prompts; c = f_H − δ (yes is right) or c = f_H (only
"within ±δ" is right). Units: a cell's prompt means of J judgments (`max_variance` ¼). The rule runs
with the opponents as one group (successive elimination and LUCB, threshold c and margin δ per cell);
"no groups" runs it without the group (each cell only its own threshold), to show what the group
adds. The fixed design: per cell α/5 two-sided and power 0.9 at δ with the oracle sd, the largest,
times 5 cells × J judgments.

Monte Carlo standard errors: sd/√S for means and ratios, binomial for rates.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Callable
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
    answered: np.ndarray  # (S,) the question answered before the cap
    answers: np.ndarray  # (S, Q) first answer of each part (NONE: unanswered); Q = 1 for "is the minimum ≥ c?"
    cover_at_answer: np.ndarray  # (S,) every CS covered its truth when its part answered
    cover_at_stop: np.ndarray  # (S,) every CS covers its truth at the study's stop
    prompts: np.ndarray  # (S, C) prompts each cell (part) got


@dataclass(frozen=True)
class Problem:
    """One simulated study's question and cells: each part its own "is Δ ≥ 0?" (`minimum` None), or
    "is the minimum over the cells ≥ c?" (`minimum` c, the annotators' adversary)."""

    truth: np.ndarray  # (C,) each cell's parameter
    draw: Callable[[np.ndarray, np.random.Generator], np.ndarray]  # cells (S,) → one prompt's units (S,)
    rule: dict[str, object]  # allocate's keywords besides alpha and rho
    per_prompt: int  # judgments a prompt of a cell takes
    minimum: float | None = None


def _answer(low: np.ndarray, high: np.ndarray, c: float | np.ndarray) -> np.ndarray:
    return np.where(low > c, ABOVE, np.where(high < c, BELOW,
                    np.where((low > c - DELTA) & (high < c + DELTA), EQUIVALENT, NONE)))  # fmt: skip


def simulate(pb: Problem, studies: int, n_fixed: int, rho: np.ndarray, *, batch: int, adaptive: bool,
             rng: np.random.Generator) -> Outcome:  # fmt: skip
    """Studies run side by side, one prompt per study and step, watched after every prompt."""
    c_n = pb.truth.size
    cap = 2 * n_fixed
    parts = 1 if pb.minimum is not None else c_n
    stats = al.CellStats.empty((studies, c_n))
    answers = np.zeros((studies, parts), dtype=np.int64)
    cover_at_answer = np.ones(studies, dtype=bool)
    running = np.ones(studies, dtype=bool)
    stop_cover = np.zeros(studies, dtype=bool)
    priority = np.zeros((studies, c_n), dtype=np.int64)
    for step in range(cap * c_n + 1):
        out = al.allocate(stats, alpha=ALPHA / c_n, rho=rho, **pb.rule)  # type: ignore[arg-type]
        covers = ((out.low <= pb.truth) & (pb.truth <= out.high)).all(axis=1)
        if pb.minimum is None:
            new = running[:, None] & (answers == NONE) & (out.state == al.ANSWERED)
            answers[new] = _answer(out.low, out.high, 0.0)[new]
            open_ = answers == NONE
        else:  # the minimum's CS: [min low, min high], once no cell is early
            ready = ~(out.state == al.EARLY).any(axis=1)
            kind = np.where(ready, _answer(out.low.min(axis=1), out.high.min(axis=1), pb.minimum), NONE)
            new = (running & (answers[:, 0] == NONE) & (kind != NONE))[:, None]
            answers[new[:, 0], 0] = kind[new[:, 0]]
            open_ = np.broadcast_to(answers == NONE, (studies, c_n))
        cover_at_answer &= ~new.any(axis=1) | covers
        room = (stats.n < cap) & open_
        finished = running & ((answers != NONE).all(axis=1) | ~room.any(axis=1))
        stop_cover[finished] = covers[finished]
        running &= ~finished
        if not running.any():
            break
        if step % batch == 0:
            priority = np.where(open_, out.priority, 0) if adaptive else np.zeros_like(priority)
        # The claim: highest priority first, then the cell with the fewest prompts, then at random.
        # Without allocation every cell is judged in turn until the whole question is answered; with
        # it, a part once answered waits for the next recompute to get priority 0 (as in the product).
        key = np.where(stats.n < cap, priority * 1e6 - stats.n + rng.random((studies, c_n)) * 0.5, -np.inf)
        cell = np.argmax(key, axis=1)
        take = running[:, None] & (np.arange(c_n) == cell[:, None])
        stats = stats.add(take, pb.draw(cell, rng)[:, None])
    return Outcome(stats.n.sum(axis=1) * pb.per_prompt, (answers != NONE).all(axis=1), answers, cover_at_answer,
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


def _rows(name: str, truth: str, pb: Problem, target: np.ndarray, sd: np.ndarray, studies: int,
          runs: list[tuple[str, int, bool, Problem]], rng: np.random.Generator) -> list[dict[str, str]]:  # fmt: skip
    """Each method's row: the fixed design for α/C two-sided and power 0.9 at δ, per cell with the
    oracle sd, the largest over the cells (one prompt set carries them all), against the runs."""
    c_n = pb.truth.size
    n_fixed = max(sq.fixed_sample_size(float(s), DELTA, alpha=ALPHA / c_n, power=POWER) for s in sd)
    rho = np.array([sq.tuned_rho(n_fixed, alpha=ALPHA / c_n, sd=float(s)) for s in sd])
    fixed = n_fixed * c_n * pb.per_prompt
    rows = []
    for label, batch, adaptive, problem in runs:
        o = simulate(problem, studies, n_fixed, rho, batch=batch, adaptive=adaptive, rng=rng)
        rows.append({
            "design": name, "truth": truth, "method": label,
            "fixed": str(fixed), "mean": f"{np.mean(o.judgments):.0f} ± {np.std(o.judgments) / math.sqrt(studies):.0f}",
            "ratio": ratio(o.judgments, fixed), "saving": f"{1 - np.mean(o.judgments) / fixed:.3f}",
            "per_part": " / ".join(f"{x:.2f}" for x in o.prompts.mean(axis=0) / n_fixed),
            "answered": rate(o.answered), "wrong": rate(wrong(o.answers, target)),
            "cover_answer": rate(o.cover_at_answer), "cover_stop": rate(o.cover_at_stop),
        })  # fmt: skip
    return rows


def _methods(pb: Problem, batches: tuple[int, ...], baseline: bool) -> list[tuple[str, int, bool, Problem]]:
    runs = [(f"adaptive + sequential, batch {b}", b, True, pb) for b in batches]
    return runs + ([("sequential, no allocation", 1, False, pb)] if baseline else [])


def run(d: Design, studies: int, batches: tuple[int, ...], rng: np.random.Generator, *,
        baseline: bool = True) -> list[dict[str, str]]:  # fmt: skip
    """The K-part question "is A above B at k?" on design `d`."""
    uni = universe(d, rng)
    k = uni.delta.size
    sd = np.stack([units(uni, np.full(100_000, i), rng) for i in range(k)], axis=1).std(axis=0)
    pb = Problem(uni.delta, lambda cells, g: units(uni, cells, g),
                 {"threshold": 0.0, "margin": DELTA, "max_variance": 1.0}, 2 * J)  # fmt: skip
    truth = " / ".join(f"{x:+.3f}" for x in uni.delta)
    return _rows(d.name, truth, pb, uni.delta, sd, studies, _methods(pb, batches, baseline), rng)


@dataclass(frozen=True)
class MinDesign:
    """One policy against several opponents; "is f against the worst ≥ c?", c = f_H − offset."""

    name: str
    theta: tuple[float, ...]  # the policy's pick probability against each opponent
    offset: float


MIN_DESIGNS = (
    MinDesign("annotators' adversary: the worst of 5 opponents δ above c", (0.60, 0.64, 0.70, 0.78, 0.86), DELTA),
    MinDesign("annotators' adversary: the worst of 5 opponents at c", (0.60, 0.64, 0.70, 0.78, 0.86), 0.0),
)


def run_minimum(d: MinDesign, studies: int, batches: tuple[int, ...], rng: np.random.Generator, *,
                baseline: bool = True) -> list[dict[str, str]]:  # fmt: skip
    """The question "is f_H(k) = min over opponents ≥ c?": each cell is the policy against one opponent
    (units: prompt means of J judgments), the opponents one group of the rule (elimination, LUCB)."""
    c_n = len(d.theta)
    u = rng.normal(0, 0.12, UNIVERSE)[:, None]
    p = np.clip(np.array(d.theta) + u + rng.normal(0, 0.08, (UNIVERSE, c_n)), 0.01, 0.99)
    truth = p.mean(axis=0)
    lean = rng.normal(0, LEAN, POOL)
    c = float(truth.min()) - d.offset

    def draw(cells: np.ndarray, g: np.random.Generator) -> np.ndarray:
        r = g.integers(0, UNIVERSE, cells.size)
        q = np.clip(p[r, cells][:, None] + lean[g.integers(0, POOL, (cells.size, J))], 0, 1)
        return (g.random(q.shape) < q).mean(axis=-1)

    sd = np.stack([draw(np.full(100_000, i), rng) for i in range(c_n)], axis=1).std(axis=0)
    rule: dict[str, object] = {"threshold": c, "margin": DELTA, "max_variance": 0.25}
    pb = Problem(truth, draw, {**rule, "groups": np.zeros(c_n, dtype=np.int64)}, J, c)
    runs = _methods(pb, batches, baseline)
    runs.insert(len(batches), ("adaptive + sequential, no groups (no elimination, no LUCB), batch 1", 1, True,
                               Problem(truth, draw, rule, J, c)))  # fmt: skip
    label = " / ".join(f"{x:.3f}" for x in truth) + f"; c = {c:.3f}"
    return _rows(d.name, label, pb, np.array([truth.min() - c]), sd, studies, runs, rng)


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
        "The last designs ask \"is f against the worst of five opponents ≥ c?\" (the annotators' adversary; its parts are",
        "the five opponents' cells, its truth f per opponent and c; docstring).",
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
    rows += [r for d in MIN_DESIGNS for r in run_minimum(d, args.studies, tuple(args.batch), rng)]
    publish(section(rows, args.studies, argv, _machine()), HEADING, args.write)


if __name__ == "__main__":
    main()
