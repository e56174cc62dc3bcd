"""Anytime-valid monitoring and stopping rules (issue #22), validated by simulation.

    .venv/bin/python bench/bench_sequential.py [--studies 1000] [--seed 0] [--write docs/benchmarks.md]

Each simulated study compares two policies A and B, each against its adversary at one k (two cells),
on prompts drawn i.i.d. from a universe of 4,000 prompts. Every prompt gets J = 4 judgments per cell
(8 per prompt), each by an annotator drawn from a pool of 200 whose lean (sd 0.03 on the pick
probability) they keep across prompts. Per prompt and cell the pick probability is
θ + u (shared by the prompt's two cells, sd 0.12) + v (the cell's own, sd 0.08), clipped to
[0.01, 0.99]. In the tie-heavy designs a share q of a prompt's items (q ~ Beta(2, 2) per prompt) show
a text drawn by both sides or are decided by construction, crediting k/(k+m) = ¾ whoever picks;
the rest are picks. The truth of a cell is the universe mean of its expected credit.

The study is watched after every judgment. The anytime-valid interval is
`workers.stats.sequential.confidence_sequence` on the prompt means (its units; it changes only when a
prompt's last judgment is in, so watching after every judgment is watching after every prompt, which
is what is simulated; the column "read after every judgment" also counts the prompt in progress by its
partial mean, as the results page does, with judgments arriving prompt by prompt), ρ tuned at the fixed
design's size. Three pre-registered questions:

- "is A's f(k) above B's?": the CS of the paired per-prompt difference; answered when it excludes 0
  (A above / B above) or lies inside ±δ (no difference that matters; δ = 0.08, the planned effect);
- "is A's f(k) ≥ c?": c = θ_A − δ where the policies differ (true answer: yes), c = θ_A where they
  do not (the boundary, where any answer is a false one);
- "every headline to ±0.05": both cells' CS radius ≤ 0.05.

Each runs to an answer or to its cap (2× the fixed design for the tests, 3× for the precision
question), unanswered at the cap. The fixed designs it is compared with are sized for the same error
rates: for the tests α = 0.05 two-sided and power 0.9 at δ, with the oracle sd of the units
(`sequential.fixed_sample_size`; for the one-cell question through the planner,
`workers.stats.planning.plan_sample_size`, at the half-width δ·z_{.975}/(z_{.975} + z_{.9}) that gives
a fixed-time interval that power, with components `planning.estimate_components` measured on a
4,000-prompt pilot of the same design); for the precision question the planner's prompts for ±0.05
on the headline. "Fixed, monitored" is the fixed-time t-interval read after every prompt (what the
results page invites today). Monte Carlo standard errors: binomial for rates, sd/√S for means.

Adaptive + sequential (`many_cells`): four policies' cells (truth ≈ 0.85, 0.78, 0.62, 0.70), one
question each, "is f(k) ≥ 0.70?" (yes / no / within ±δ); successive elimination: a cell whose question
is answered gets no more prompts, the others go on (cap 2×); against the planner's fixed design for
every cell at the same error rates. The saving depends on how far the cells sit from c: this is one
design, not a general figure. The product's allocation rule (workers.stats.allocation, run by the periodic
job studies.allocation) is simulated by bench/bench_allocation.py.
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _report import command_line, publish  # noqa: E402

from workers.stats import planning  # noqa: E402
from workers.stats import sequential as sq  # noqa: E402
from workers.stats.study_design import ADVERSARY, Design  # noqa: E402

HEADING = "## Anytime-valid monitoring and stopping (issue #22)"
UNIVERSE, J, POOL, LEAN = 4000, 4, 200, 0.03
DELTA, HALF_WIDTH, ALPHA, POWER = 0.08, 0.05, 0.05, 0.9
TIE_CREDIT = 0.75  # k/(k+m) at k = 3, m = 1


@dataclass(frozen=True)
class Scenario:
    name: str
    theta_a: float
    theta_b: float
    ties: bool


SCENARIOS = (
    Scenario("policies differ (Δ ≈ 0.09)", 0.71, 0.62, False),
    Scenario("policies differ by the planned Δ = 0.08", 0.70, 0.62, False),
    Scenario("policies equal", 0.66, 0.66, False),
    Scenario("tie-heavy, differ (Δ ≈ 0.09)", 0.76, 0.57, True),
    Scenario("tie-heavy, equal", 0.66, 0.66, True),
)


@dataclass(frozen=True)
class Universe:
    p: np.ndarray  # (U, 2) pick probabilities of cells A, B
    q: np.ndarray  # (U,) share of items whose credit is ¾ whoever picks
    truth: np.ndarray  # (2,)


def universe(sc: Scenario, rng: np.random.Generator) -> Universe:
    u = rng.normal(0, 0.12, UNIVERSE)
    v = rng.normal(0, 0.08, (UNIVERSE, 2))
    p = np.clip(np.array([sc.theta_a, sc.theta_b]) + u[:, None] + v, 0.01, 0.99)
    q = rng.beta(2, 2, UNIVERSE) if sc.ties else np.zeros(UNIVERSE)
    truth = (q[:, None] * TIE_CREDIT + (1 - q[:, None]) * p).mean(axis=0)
    return Universe(p, q, truth)


def judge(
    uni: Universe, lean: np.ndarray, shape: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Credits (S, N, 2, J), prompts (S, N) and annotators (S, N, 2, J) of `shape` = (S, N) prompts."""
    prompts = rng.integers(0, UNIVERSE, shape)
    who = rng.integers(0, POOL, (*shape, 2, J))
    p = np.clip(uni.p[prompts][..., None] + lean[who], 0.0, 1.0)
    pick = (rng.random(p.shape) < p).astype(np.float64)
    tied = rng.random(p.shape) < uni.q[prompts][..., None, None]
    return np.where(tied, TIE_CREDIT, pick), prompts, who


def planner_prompts(
    uni: Universe,
    lean: np.ndarray,
    policies: tuple[str, ...],
    half: float,
    rng: np.random.Generator,
) -> int:
    """The planner's prompts for ±half on the headline of `policies`, components from a pilot."""
    credit, prompts, who = judge(uni, lean, (1, UNIVERSE), rng)
    cells = np.broadcast_to(np.arange(2)[None, None, :, None], credit.shape)
    keep = cells < len(policies)
    comps = planning.estimate_components(
        credit[keep],
        np.broadcast_to(prompts[..., None, None], credit.shape)[keep],
        who[keep],
        cell_ids=cells[keep],
    )
    design = Design(
        prompts=50, k_values=(3,), policies=policies, annotations_per_item=J,
        items_per_participant=20, opponents=dict.fromkeys(policies, (ADVERSARY,)),
    )  # fmt: skip
    means = {(p, 3, ADVERSARY): float(uni.truth[i]) for i, p in enumerate(policies)}
    plan = planning.plan_sample_size(
        design, comps, half_width=half, cell_means=means, confidence=1 - ALPHA
    )
    assert plan.recommended is not None
    return plan.recommended.design.prompts


def per_judgment_false(
    credit: np.ndarray, true_diff: float, n_diff: int, sd_diff: float, cap: int
) -> np.ndarray:
    """Whether the comparison ever answers falsely when read after *every* judgment, the prompt in
    progress counted by its partial mean (what the results page does: it cannot tell a finished
    prompt from one in progress). Judgments arrive prompt by prompt, one per cell at a time."""
    rho = sq.tuned_rho(n_diff, alpha=ALPHA, sd=sd_diff)
    diff = credit[:, :cap, 0, :] - credit[:, :cap, 1, :]  # (S, N, J) paired judgments
    full = diff.mean(axis=-1)
    prev_sum = np.cumsum(full, axis=1) - full  # over the t − 1 finished prompts
    prev_sq = np.cumsum(full**2, axis=1) - full**2
    t = np.arange(1, cap + 1, dtype=np.float64)
    false = np.zeros(credit.shape[0], dtype=bool)
    for j in range(1, J + 1):
        unit = diff[..., :j].mean(axis=-1)
        mean = (prev_sum + unit) / t
        squares = np.maximum(prev_sq + unit**2 - t * mean**2, 0.0)
        radius = sq.mixture_radius(t, squares, alpha=ALPHA, rho=rho, max_variance=1.0)
        seq = sq.Sequence(
            mean, radius, np.broadcast_to(t, mean.shape).copy(), ALPHA, "partial"
        )
        ans = sq.answer_difference(seq, DELTA)
        wrong = (
            ((ans == sq.ABOVE) & (true_diff <= 0))
            | ((ans == sq.BELOW) & (true_diff >= 0))
            | ((ans == sq.EQUIVALENT) & (abs(true_diff) >= DELTA))
        )
        false |= wrong.any(axis=1)
    return false


def rate(x: np.ndarray) -> str:
    m = float(np.mean(x))
    return f"{m:.3f} ± {math.sqrt(max(m * (1 - m), 1e-12) / x.size):.3f}"


def mean_se(x: np.ndarray) -> str:
    return f"{float(np.mean(x)):.0f} ± {float(np.std(x)) / math.sqrt(x.size):.0f}"


def stop(answers: np.ndarray, cap: int) -> tuple[np.ndarray, np.ndarray]:
    """Stopping prompt count (cap when unanswered) and the answer there (0 = unanswered)."""
    first = sq.first_answer(answers[:, :cap])
    tau = np.where(first > 0, first, cap)
    return tau, answers[np.arange(answers.shape[0]), tau - 1] * (first > 0)


def covered(seq: sq.Sequence, tau: np.ndarray, theta: float) -> np.ndarray:
    i = np.arange(tau.size), tau - 1
    return (seq.low[i] <= theta) & (theta <= seq.high[i])


def run(sc: Scenario, studies: int, rng: np.random.Generator) -> dict[str, str | float]:
    uni = universe(sc, rng)
    lean = rng.normal(0, LEAN, POOL)
    big, _, _ = judge(uni, lean, (1, 100_000), rng)
    units_big = big[0].mean(axis=-1)  # (N, 2) prompt means
    sd_diff = float(np.std(units_big[:, 0] - units_big[:, 1]))
    sd_a = float(np.std(units_big[:, 0]))
    n_diff = sq.fixed_sample_size(sd_diff, DELTA, alpha=ALPHA, power=POWER)
    z = stats.norm.ppf(1 - ALPHA / 2)
    n_thr = planner_prompts(
        uni, lean, ("A",), DELTA * z / (z + stats.norm.ppf(POWER)), rng
    )
    n_prec = planner_prompts(uni, lean, ("A", "B"), HALF_WIDTH, rng)
    cap_diff, cap_thr, cap_prec = 2 * n_diff, 2 * n_thr, 3 * n_prec
    credit, _, _ = judge(uni, lean, (studies, max(cap_diff, cap_thr, cap_prec)), rng)
    units = credit.mean(axis=-1)  # (S, N, 2)
    diff = units[..., 0] - units[..., 1]
    true_diff = float(uni.truth[0] - uni.truth[1])
    differ = sc.theta_a != sc.theta_b
    out: dict[str, str | float] = {
        "scenario": sc.name,
        "truth": f"{uni.truth[0]:.3f} / {uni.truth[1]:.3f}",
    }
    # Q1: is A above B?
    cs = sq.confidence_sequence(
        diff[:, :cap_diff],
        alpha=ALPHA,
        rho=sq.tuned_rho(n_diff, alpha=ALPHA, sd=sd_diff),
        max_variance=1.0,
    )
    tau, ans = stop(sq.answer_difference(cs, DELTA), cap_diff)
    # An answer is false when the truth contradicts it (EQUIVALENT claims |Δ| < δ).
    wrong = (
        ((ans == sq.ABOVE) & (true_diff <= 0))
        | ((ans == sq.BELOW) & (true_diff >= 0))
        | ((ans == sq.EQUIVALENT) & (abs(true_diff) >= DELTA))
    )
    right = (ans != 0) & ~wrong
    fixed = sq.fixed_interval(diff[:, :cap_diff], alpha=ALPHA)
    fixed_at = (fixed.low[:, n_diff - 1] > 0) | (fixed.high[:, n_diff - 1] < 0)
    peek = sq.first_answer(sq.answer_difference(fixed, 0.0)[:, :n_diff]) > 0
    out |= {
        "diff_fixed": n_diff * 2 * J, "diff_mean": mean_se(tau * 2 * J), "diff_median": float(np.median(tau)) * 2 * J,
        "diff_ratio": f"{np.mean(tau) / n_diff:.2f} ± {np.std(tau) / n_diff / math.sqrt(studies):.2f}",
        "diff_right": rate(right), "diff_wrong": rate(wrong), "diff_unanswered": rate(ans == 0),
        "diff_cover": rate(covered(cs, tau, true_diff)),
        "diff_uniform": rate(((cs.low <= true_diff) & (true_diff <= cs.high)).all(axis=1)),
        "diff_judgment": rate(per_judgment_false(credit, true_diff, n_diff, sd_diff, cap_diff)),
        "diff_fixed_reject": rate(fixed_at), "diff_peek": rate(peek),
    }  # fmt: skip
    # Q2: is A's f(k) ≥ c?
    c = float(uni.truth[0]) - (DELTA if differ else 0.0)
    cs_a = sq.confidence_sequence(
        units[:, :cap_thr, 0],
        alpha=ALPHA,
        rho=sq.tuned_rho(n_thr, alpha=ALPHA, sd=sd_a),
    )
    tau, ans = stop(sq.answer_threshold(cs_a, c), cap_thr)
    out |= {
        "thr_fixed": n_thr * J, "thr_mean": mean_se(tau * J),
        "thr_ratio": f"{np.mean(tau) / n_thr:.2f} ± {np.std(tau) / n_thr / math.sqrt(studies):.2f}",
        "thr_right": rate(ans == sq.ABOVE) if differ else "–",
        "thr_wrong": rate((ans == sq.BELOW) | ((ans == sq.ABOVE) & (not differ))),
        "thr_cover": rate(covered(cs_a, tau, float(uni.truth[0]))),
    }  # fmt: skip
    # Q3: every headline to ±h
    seqs = [
        sq.confidence_sequence(units[:, :cap_prec, i], alpha=ALPHA, rho=sq.tuned_rho(n_prec, alpha=ALPHA, sd=float(np.std(units_big[:, i]))))
        for i in range(2)
    ]  # fmt: skip
    tau, done = stop(sq.answer_precision(seqs, HALF_WIDTH).astype(np.int8), cap_prec)
    both = covered(seqs[0], tau, float(uni.truth[0])) & covered(
        seqs[1], tau, float(uni.truth[1])
    )
    out |= {
        "prec_fixed": n_prec * 2 * J, "prec_mean": mean_se(tau * 2 * J),
        "prec_ratio": f"{np.mean(tau) / n_prec:.2f} ± {np.std(tau) / n_prec / math.sqrt(studies):.2f}",
        "prec_done": rate(done > 0), "prec_cover": rate(both),
    }  # fmt: skip
    return out


#: Several policies, one question each ("is f(k) ≥ c?", answered yes / no / within ±δ of c).
CELL_THETAS, CELL_C = (0.86, 0.78, 0.62, 0.70), 0.70


def many_cells(studies: int, rng: np.random.Generator) -> dict[str, str | float]:
    """Successive elimination: every cell whose question is answered gets no more prompts.

    The fixed design gives every cell the planner's prompts for the same error rates; the adaptive
    one gives each cell prompts until its own CS answers (cap 2× the fixed size). Binary credits,
    no ties; the cells share prompts (u) as in `universe`.
    """
    thetas = np.array(CELL_THETAS)
    n_cells = thetas.size
    u = rng.normal(0, 0.12, UNIVERSE)
    p = np.clip(
        thetas + u[:, None] + rng.normal(0, 0.08, (UNIVERSE, n_cells)), 0.01, 0.99
    )
    truth = p.mean(axis=0)
    lean = rng.normal(0, LEAN, POOL)
    names = tuple(f"P{i}" for i in range(n_cells))
    # The planner, on a pilot of all cells (the `planner_prompts` path for C cells).
    prompts = rng.integers(0, UNIVERSE, UNIVERSE)
    who = rng.integers(0, POOL, (UNIVERSE, n_cells, J))
    pp = np.clip(p[prompts][..., None] + lean[who], 0, 1)
    credit = (rng.random(pp.shape) < pp).astype(np.float64)
    cells = np.broadcast_to(np.arange(n_cells)[None, :, None], credit.shape)
    comps = planning.estimate_components(
        credit.ravel(), np.broadcast_to(prompts[:, None, None], credit.shape).ravel(), who.ravel(),
        cell_ids=cells.ravel(),
    )  # fmt: skip
    design = Design(
        prompts=50, k_values=(3,), policies=names, annotations_per_item=J,
        items_per_participant=20, opponents=dict.fromkeys(names, (ADVERSARY,)),
    )  # fmt: skip
    z = stats.norm.ppf(1 - ALPHA / 2)
    plan = planning.plan_sample_size(
        design, comps, half_width=DELTA * z / (z + stats.norm.ppf(POWER)),
        cell_means={(n, 3, ADVERSARY): float(t) for n, t in zip(names, truth, strict=True)},
        confidence=1 - ALPHA,
    )  # fmt: skip
    assert plan.recommended is not None
    n_fixed = plan.recommended.design.prompts
    cap = 2 * n_fixed
    prompts = rng.integers(0, UNIVERSE, (studies, cap))
    who = rng.integers(0, POOL, (studies, cap, n_cells, J))
    pp = np.clip(p[prompts][..., None] + lean[who], 0, 1)
    units = (rng.random(pp.shape) < pp).mean(axis=-1)  # (S, cap, C)
    sd = units.reshape(-1, n_cells).std(axis=0)
    taus, wrong, cover = [], [], []
    for c in range(n_cells):
        cs = sq.confidence_sequence(
            units[..., c],
            alpha=ALPHA,
            rho=sq.tuned_rho(n_fixed, alpha=ALPHA, sd=float(sd[c])),
        )
        tau, ans = stop(sq.answer_threshold(cs, CELL_C, DELTA), cap)
        d = float(truth[c]) - CELL_C
        wrong.append(
            ((ans == sq.ABOVE) & (d <= 0))
            | ((ans == sq.BELOW) & (d >= 0))
            | ((ans == sq.EQUIVALENT) & (abs(d) >= DELTA))
        )
        cover.append(covered(cs, tau, float(truth[c])))
        taus.append(tau)
    total = np.sum(taus, axis=0)
    return {
        "truth": " / ".join(f"{t:.3f}" for t in truth), "fixed": n_fixed * n_cells * J,
        "mean": mean_se(total * J),
        "ratio": f"{np.mean(total) / (n_fixed * n_cells):.2f} ± {np.std(total) / (n_fixed * n_cells) / math.sqrt(studies):.2f}",
        "per_cell": " / ".join(f"{np.mean(t) / n_fixed:.2f}" for t in taus),
        "wrong": rate(np.any(wrong, axis=0)), "cover": rate(np.all(cover, axis=0)),
    }  # fmt: skip


def section(
    rows: list[dict[str, str | float]],
    cells: dict[str, str | float],
    studies: int,
    argv: list[str] | None,
) -> str:
    lines = [
        HEADING,
        "",
        f"`{command_line('bench/bench_sequential.py', argv)}` ({studies} simulated studies per design; the",
        "design, the questions and the fixed designs compared with are in the script's docstring and",
        "docs/theory.md §11). Judgments are counted over the cells the question needs; ± is the Monte",
        'Carlo standard error. Monitoring: after every prompt\'s last judgment (the CS only changes then); "read after every judgment": also the prompt in progress, by its partial mean.',
        "",
        "**\"Is A's f(k) above B's?\"** (paired by prompt; answered: A above, B above, or within ±0.08)",
        "",
        "| design | truth A / B | fixed design (judgments) | sequential: mean judgments | median | mean / fixed | right answer | false answer | unanswered at cap (2×) | CS covers Δ at the stop | CS covers Δ at every prompt | ever false, read after every judgment | fixed design: rejects Δ = 0 | fixed interval watched: ever rejects |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['truth']} | {r['diff_fixed']} | {r['diff_mean']} | {r['diff_median']:.0f} | {r['diff_ratio']} "
            f"| {r['diff_right']} | {r['diff_wrong']} | {r['diff_unanswered']} | {r['diff_cover']} | {r['diff_uniform']} "
            f"| {r['diff_judgment']} | {r['diff_fixed_reject']} | {r['diff_peek']} |"
        )
    lines += [
        "",
        '**"Is A\'s f(k) ≥ c?"** (c = θ_A − 0.08 where the policies differ, c = θ_A, the boundary, where they do not; fixed design from the planner)',
        "",
        "| design | fixed design (judgments) | sequential: mean judgments | mean / fixed | right answer (yes) | false answer | CS covers θ_A at the stop |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['thr_fixed']} | {r['thr_mean']} | {r['thr_ratio']} | {r['thr_right']} | {r['thr_wrong']} | {r['thr_cover']} |"
        )
    lines += [
        "",
        '**"Every headline to ±0.05"** (both cells; fixed design: the planner\'s prompts for ±0.05 on the headline)',
        "",
        "| design | planner (judgments) | sequential: mean judgments | mean / planner | reached by the cap (3×) | both CSs cover at the stop |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['scenario']} | {r['prec_fixed']} | {r['prec_mean']} | {r['prec_ratio']} | {r['prec_done']} | {r['prec_cover']} |"
        )
    lines += [
        "",
        f'**Adaptive + sequential: four policies, "is f(k) ≥ {CELL_C}?" for each** (answered yes, no, or within ±{DELTA}; '
        "successive elimination: a cell whose question is answered gets no more prompts; fixed design: the planner's prompts "
        "for every cell at the same error rates)",
        "",
        "| truth per cell | fixed design (judgments) | adaptive + sequential: mean judgments | mean / fixed | per cell: mean prompts / fixed | any false answer | every CS covers at its stop |",
        "|---|---|---|---|---|---|---|",
        f"| {cells['truth']} | {cells['fixed']} | {cells['mean']} | {cells['ratio']} | {cells['per_cell']} | {cells['wrong']} | {cells['cover']} |",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--write", type=Path, default=None)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rows = [run(sc, args.studies, rng) for sc in SCENARIOS]
    cells = many_cells(args.studies, rng)
    publish(section(rows, cells, args.studies, argv), HEADING, args.write)


if __name__ == "__main__":
    main()
