"""The annotators' adversary against the model's: bias and coverage of the people's true f(k) (issue #21).

    .venv/bin/python bench/bench_annotators_adversary.py [--studies 200] [--write docs/benchmarks.md]

Truth per prompt: T = 10 annotator types of equal weight, N = 8 candidate responses, utilities
i.i.d. N(0, 1.5²); an annotator is one type and picks the shown position of largest utility
(theory.md §1, the rule of `workers.policies.choice`; continuous utilities, so no ties between
texts). The population model is the truth plus i.i.d. N(0, sd²) on every utility, sd ∈ {0, 0.5,
1.0}. The policy is fitted on the model: the (k+1)-player equilibrium (`solve_multiplayer`) or
NLHF (`solve_nlhf`), shown at k ∈ {1, 3} against m = 1 opponent. The people's true f(k) of a
prompt is min over every response y of the exact win rate under the truth; the study's target is
its mean over the universe of prompts.

Each (sd, policy, k) has a universe of 300 such prompts; a simulated study draws P = 30 prompts
with replacement and a pool of 40 annotators (types drawn uniformly).

* Today's headline: R judgments per prompt against the model's adversary (argmin of the model's
  win rate), `intervals.design_interval`.
* The annotators' adversary: `workers.stats.adversary.screening_opponents` (4 opponents: the
  model's 2 strongest, then the most frequent worst under 64 perturbed/resampled models) screened
  with S judgments each, then R confirmation judgments against the opponent the screen found worst;
  `workers.stats.adversary.screened_minimum`.

Bias and coverage (95% intervals) are against the universe's true f(k); their Monte Carlo errors
are stated in the section.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import workers.policies as wp  # noqa: E402
from workers.stats import intervals, planning, planning_screen  # noqa: E402
from workers.stats.adversary import screened_minimum, screening_opponents  # noqa: E402
from workers.stats.study_design import ADVERSARY, Design  # noqa: E402

HEADING = "## The annotators' adversary: bias and coverage of the people's f(k) (issue #21)"
N_TYPES, N_RESPONSES, TRUTH_SD = 10, 8, 1.5
NOISE_SDS = (0.0, 0.5, 1.0)
POLICIES = ("equilibrium", "NLHF")
KS = (1, 3)
N_OPPONENTS = 4
DEFAULT_SCREEN, DEFAULT_CONFIRM = 8, 12


@dataclass(frozen=True)
class Universe:
    """Per prompt: true utilities, the fitted policy, the screened opponents, true win rates."""

    utilities: np.ndarray  # (P, T, N) truth
    policies: np.ndarray  # (P, N)
    model_adversary: np.ndarray  # (P,) response
    screened: np.ndarray  # (P, N_OPPONENTS) responses (-1 pads when fewer were found)
    true_wins: np.ndarray  # (P, N) exact win rate against each single response under the truth
    k: int

    @property
    def truth(self) -> float:
        return float(self.true_wins.min(axis=1).mean())


def universe(noise_sd: float, kind: str, k: int, *, n_prompts: int = 300, seed: int = 21) -> Universe:
    rng = np.random.default_rng([seed, int(noise_sd * 10), POLICIES.index(kind), k])
    w = np.full(N_TYPES, 1 / N_TYPES)
    us, pis, advs, scr, wins = [], [], [], [], []
    for _ in range(n_prompts):
        u = rng.normal(0.0, TRUTH_SD, size=(N_TYPES, N_RESPONSES))
        model = wp.Population(u + rng.normal(0.0, noise_sd, size=u.shape) if noise_sd else u, w)
        sol = wp.solve_multiplayer(model, k, tol=1e-7) if kind == "equilibrium" else wp.solve_nlhf(model, tol=1e-7)
        pi = np.clip(np.asarray(sol.policy), 0, None)
        pi /= pi.sum()
        truth = wp.Population(u, w)
        opp = screening_opponents(model.utilities, w, pi, k, 1, n_opponents=N_OPPONENTS, rng=rng)
        us.append(u)
        pis.append(pi)
        advs.append(opp[0][0])
        scr.append([y[0] for y in opp] + [-1] * (N_OPPONENTS - len(opp)))
        wins.append([wp.multiset_win_rate(truth, pi, k, [i]) for i in range(N_RESPONSES)])
    return Universe(np.array(us), np.array(pis), np.array(advs), np.array(scr), np.array(wins), k)


def judge(uni: Universe, prompt: int, opponent: int, n: int, types: np.ndarray, rng: np.random.Generator
          ) -> tuple[np.ndarray, np.ndarray]:
    """n judgments of (k draws of the policy, the opponent): credits and annotators."""
    k = uni.k
    draws = rng.choice(N_RESPONSES, size=(n, k), p=uni.policies[prompt])
    c_a = np.zeros((n, N_RESPONSES))
    np.add.at(c_a, (np.repeat(np.arange(n), k), draws.reshape(-1)), 1.0)
    counts = c_a.copy()
    counts[:, opponent] += 1.0
    annotators = rng.integers(0, types.size, size=n)
    util = np.where(counts > 0, uni.utilities[prompt][types[annotators]], -np.inf)
    chosen = util.argmax(axis=1)
    rows = np.arange(n)
    return c_a[rows, chosen] / counts[rows, chosen], annotators


@dataclass(frozen=True)
class Row:
    noise_sd: float
    policy: str
    k: int
    truth: float
    studies: int
    screen_judgments: int
    model_adv_worst: float
    screen_has_worst: float
    old_bias: float
    old_bias_sd: float
    old_cover: float
    new_bias: float
    new_bias_sd: float
    new_cover: float
    new_half: float
    old_half: float


def run(uni: Universe, n_studies: int, *, prompts: int = 30, annotators: int = 40, screen: int = 8,
        confirm: int = 12, seed: int = 7, study_design: bool = False, gaps: list[float] | None = None,
        curses: list[float] | None = None) -> tuple[list[float], list[bool], list[float], list[bool], list[float],
                                                    list[float]]:
    """Simulated studies of one universe. study_design: every screened opponent gets the R confirmation
    judgments too (as `studies/steps/screening.py` builds items: no second stage), and `gaps`/`curses`
    collect θ̂ − μ̂ and the tied loser's curse e_J·s (`workers.stats.planning_screen`) per study."""
    rng = np.random.default_rng([seed, uni.k, int(uni.truth * 1e6)])
    old_e, old_c, new_e, new_c, new_h, old_h = [], [], [], [], [], []
    truth = uni.truth
    for _ in range(n_studies):
        types = rng.integers(0, N_TYPES, size=annotators)
        old: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        cols: list[list[np.ndarray]] = [[], [], [], [], []]
        for p, drawn in enumerate(rng.choice(uni.true_wins.shape[0], size=prompts)):
            y, a = judge(uni, drawn, int(uni.model_adversary[drawn]), confirm, types, rng)
            old.append((y, np.full(y.size, p), a))
            opponents = [int(o) for o in uni.screened[drawn] if o >= 0]
            means = []
            for o in opponents:
                y, a = judge(uni, drawn, o, screen, types, rng)
                means.append(y.mean())
                for c, v in zip(cols, (y, np.full(y.size, p), a, np.full(y.size, o), np.zeros(y.size, bool)), strict=True):
                    c.append(v)
            best = opponents[int(np.argmin(means))]  # ties: the model's order (first is its adversary)
            for o in opponents if study_design else [best]:
                y, a = judge(uni, drawn, o, confirm, types, rng)
                for c, v in zip(cols, (y, np.full(y.size, p), a, np.full(y.size, o), np.ones(y.size, bool)), strict=True):
                    c.append(v)
        oy, op, oa = (np.concatenate(x) for x in zip(*old, strict=True))
        cell = intervals.design_interval(oy, op, oa)
        old_e.append(cell.estimate)
        old_c.append(cell.low <= truth <= cell.high)
        old_h.append((cell.high - cell.low) / 2)
        arrays = [np.concatenate(c) for c in cols]
        res = screened_minimum(*arrays)
        if gaps is not None and curses is not None:
            sd, n_opp = planning_screen.tied_bracket_parts(arrays[0], arrays[1], arrays[3])
            gaps.append(res.estimate - res.plug_in)
            curses.append(planning_screen.expected_max_normal(n_opp) * sd)
        new_e.append(res.estimate)
        new_c.append(res.low <= truth <= res.high)
        new_h.append((res.high - res.low) / 2)
    return old_e, old_c, new_e, new_c, new_h, old_h


def cell(noise_sd: float, kind: str, k: int, n_studies: int, **design: int) -> Row:
    uni = universe(noise_sd, kind, k)
    old_e, old_c, new_e, new_c, new_h, old_h = run(uni, n_studies, **design)
    worst = uni.true_wins.argmin(axis=1)
    adv_is_worst = np.isclose(uni.true_wins[np.arange(worst.size), uni.model_adversary], uni.true_wins.min(axis=1))
    has_worst = np.array([np.isclose(uni.true_wins[p, [o for o in uni.screened[p] if o >= 0]].min(),
                                     uni.true_wins[p].min()) for p in range(worst.size)])
    n_screened = int((uni.screened >= 0).sum(axis=1).mean() * design.get("screen", 8))
    return Row(noise_sd, kind, k, uni.truth, n_studies, n_screened, float(adv_is_worst.mean()),
               float(has_worst.mean()), float(np.mean(old_e)) - uni.truth, float(np.std(old_e, ddof=1)),
               float(np.mean(old_c)), float(np.mean(new_e)) - uni.truth, float(np.std(new_e, ddof=1)),
               float(np.mean(new_c)), float(np.mean(new_h)), float(np.mean(old_h)))


CALIBRATION_HEADING = "## The annotators' adversary: the planner's predicted headline width against the bench (issue #21)"


@dataclass(frozen=True)
class Calibration:
    noise_sd: float
    policy: str
    k: int
    measured: float  # mean half-width of the headline bracket
    measured_se: float
    gap: float  # mean θ̂ − μ̂
    gap_se: float
    tied_curse: float  # mean e_J · s from the data
    predicted_tied: float
    predicted_separated: float
    predicted: float  # at planning_screen.CURSE_FACTOR
    bias: float  # mean headline − the people's true f(k)
    bias_sd: float
    coverage: float


def _components(uni: Universe, per_opponent: int, types: np.ndarray, rng: np.random.Generator
                ) -> planning.VarianceComponents:
    """The planner's variance components estimated from one large simulated study over the whole universe."""
    credit, prompts, annotators, cells = [], [], [], []
    for p in range(uni.true_wins.shape[0]):
        for position, o in enumerate(int(x) for x in uni.screened[p] if x >= 0):
            y, a = judge(uni, p, o, per_opponent, types, rng)
            credit.append(y)
            prompts.append(np.full(y.size, p))
            annotators.append(a)
            cells.append(np.full(y.size, position))
    return planning.estimate_components(np.concatenate(credit), np.concatenate(prompts), np.concatenate(annotators),
                                        cell_ids=np.concatenate(cells), fallback=planning.literature_components())


def calibrate(noise_sd: float, kind: str, k: int, n_studies: int, *, prompts: int = 30, annotators: int = 40,
              per_opponent: int = 20) -> Calibration:
    """The study's design (every screened opponent: per_opponent judgments, half screening, half
    confirmation, one judgment per item) simulated, against `planning_screen.predict_screened` for it."""
    uni = universe(noise_sd, kind, k)
    screen = per_opponent // 2
    gaps: list[float] = []
    curses: list[float] = []
    out = run(uni, n_studies, prompts=prompts, annotators=annotators, screen=screen, confirm=per_opponent - screen,
              study_design=True, gaps=gaps, curses=curses)
    rng = np.random.default_rng([99, k, int(noise_sd * 10)])
    comp = _components(uni, per_opponent, rng.integers(0, N_TYPES, size=annotators), rng)
    n_opp = int(round(float((uni.screened >= 0).sum(axis=1).mean())))
    judgments = prompts * n_opp * per_opponent
    design = Design(prompts=prompts, k_values=(k,), policies=("policy",), annotations_per_item=1,
                    items_per_participant=max(1, judgments // annotators), replicates=per_opponent)
    means = {("policy", k, ADVERSARY): uni.truth}
    pred = {f: planning_screen.predict_screened(design, comp, n_opponents=n_opp, cell_means=means, curse_factor=f)
            for f in (0.0, 1.0, planning_screen.CURSE_FACTOR)}
    half, gap, est = np.array(out[4]), np.array(gaps), np.array(out[2])
    return Calibration(noise_sd, kind, k, float(half.mean()), float(half.std(ddof=1) / math.sqrt(half.size)),
                       float(gap.mean()), float(gap.std(ddof=1) / math.sqrt(gap.size)), float(np.mean(curses)),
                       pred[1.0].headline, pred[0.0].headline, pred[planning_screen.CURSE_FACTOR].headline,
                       float(est.mean()) - uni.truth, float(est.std(ddof=1)), float(np.mean(out[3])))


def calibration_section(rows: list[Calibration], seconds: float, design: dict[str, int]) -> str:
    from _report import command_line

    lines = [
        CALIBRATION_HEADING,
        "",
        "The study's design (`studies/steps/screening.py`: every screened opponent gets all its items up front, "
        f"half screening and half confirming; here {design['per_opponent']} judgments per opponent and prompt, one per "
        f"item) simulated as above, P = {design['prompts']} prompts, {design['annotators']} annotators, "
        f"{design['studies']} studies per row, against `workers.stats.planning_screen.predict_screened` "
        "for the same design with variance components estimated (`planning.estimate_components`) from one large simulated "
        "study of the universe. Measured: the mean half-width (high − low)/2 of the headline bracket, and the mean "
        "θ̂ − μ̂ (confirmed estimate minus plug-in minimum: the screen's miss plus the loser's curse), each ± its Monte "
        "Carlo SE; tied curse: the mean over studies of e_J·s from the study's own data. Predicted: with every screened "
        "opponent of a prompt tied (the loser's curse at its largest, what the planner plans for: curse factor "
        f"{planning_screen.CURSE_FACTOR}) and well separated (no curse, no miss). Bias of the headline against the people's "
        "true f(k) (min over every response) with the sd of the estimates (Monte Carlo SE = sd/√n), and the coverage of "
        f"that true value by the 95% interval (Monte Carlo SE ±{math.sqrt(0.95 * 0.05 / design['studies']):.3f} near 0.95).",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the shared 2-core VM; {seconds:.0f} s; "
        f"command `{command_line('bench/bench_annotators_adversary.py', None)}`.",
        "",
        "| sd | policy | k | measured half-width | measured θ̂ − μ̂ | tied curse e_J·s | predicted: tied (planned) | "
        "separated | planned / measured | bias (sd) | coverage |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.noise_sd:.1f} | {r.policy} | {r.k} | {r.measured:.4f} ± {r.measured_se:.4f} | {r.gap:.4f} ± "
            f"{r.gap_se:.4f} | {r.tied_curse:.4f} | {r.predicted_tied:.4f} | {r.predicted_separated:.4f} | "
            f"{r.predicted / r.measured:.2f} | {r.bias:+.3f} ({r.bias_sd:.3f}) | {r.coverage:.3f} |"
        )
    return "\n".join(lines) + "\n"


def heading(design: dict[str, int]) -> str:
    """The default design's heading, or one of its own for another budget (a section each)."""
    if (design["screen"], design["confirm"]) == (DEFAULT_SCREEN, DEFAULT_CONFIRM):
        return HEADING
    return f"{HEADING}, S = {design['screen']}, R = {design['confirm']}"


def section(rows: list[Row], seconds: float, design: dict[str, int]) -> str:
    from _report import command_line

    n = rows[0].studies
    mc_cov = math.sqrt(0.95 * 0.05 / n)
    lines = [
        heading(design),
        "",
        "Today's headline (R judgments per prompt against the model's adversary) against the annotators' "
        "adversary (`workers.stats.adversary`: 4 screened opponents × S judgments per prompt, then R "
        "confirmation judgments against the one the people found worst; docs/theory.md §12). Truth: 10 "
        "annotator types × 8 responses, utilities N(0, 1.5²); model = truth + N(0, sd²) per utility; "
        "policy fitted on the model; m = 1. Target: the universe's mean over prompts of the people's "
        "true min over **every** response (300 prompts per row). "
        f"Design: P = {design['prompts']} prompts, {design['annotators']} annotators, S = {design['screen']}, "
        f"R = {design['confirm']}. Bias = mean estimate − true f(k); its Monte Carlo SE is sd/√n "
        f"(sd columns); coverage of the 95% interval, Monte Carlo SE ±{mc_cov:.3f} near 0.95 "
        f"({n} studies per row). \"adv. = worst\": share of prompts whose model adversary is the people's "
        "worst response; \"screen has worst\": share whose screened set contains it. The same annotator pool "
        "screens and confirms, so the selection can follow the pool's own tastes (see docs/theory.md §12).",
        "",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; the shared 2-core VM; {seconds:.0f} s; "
        f"command `{command_line('bench/bench_annotators_adversary.py', None)}`.",
        "",
        "| sd | policy | k | true f(k) | adv. = worst | screen has worst | screening judgments / prompt "
        "| today: bias (sd) | coverage | half-width | annotators' adversary: bias (sd) | coverage | half-width |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r.noise_sd:.1f} | {r.policy} | {r.k} | {r.truth:.3f} | {r.model_adv_worst:.0%} | "
            f"{r.screen_has_worst:.0%} | {r.screen_judgments} | {r.old_bias:+.3f} ({r.old_bias_sd:.3f}) | "
            f"{r.old_cover:.3f} | {r.old_half:.3f} | {r.new_bias:+.3f} ({r.new_bias_sd:.3f}) | {r.new_cover:.3f} "
            f"| {r.new_half:.3f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    from _report import publish

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--studies", type=int, default=200)
    parser.add_argument("--screen", type=int, default=DEFAULT_SCREEN, help="screening judgments per opponent per prompt")
    parser.add_argument("--confirm", type=int, default=DEFAULT_CONFIRM, help="judgments per prompt on the headline's opponent")
    parser.add_argument("--noise", type=float, nargs="*", default=list(NOISE_SDS))
    parser.add_argument("--write", type=Path, help="replace this benchmark's section of docs/benchmarks.md")
    parser.add_argument("--calibrate", action="store_true",
                        help="the study's design against the planner's prediction (its own section)")
    parser.add_argument("--per-opponent", type=int, default=20, help="with --calibrate: judgments per opponent")
    args = parser.parse_args(argv)
    if args.calibrate:
        started = time.perf_counter()
        cal = []
        for sd in args.noise:
            for kind in POLICIES:
                for k in KS:
                    cal.append(calibrate(sd, kind, k, args.studies, per_opponent=args.per_opponent))
                    print(cal[-1], flush=True)
        design = {"prompts": 30, "annotators": 40, "per_opponent": args.per_opponent, "studies": args.studies}
        publish(calibration_section(cal, time.perf_counter() - started, design), CALIBRATION_HEADING, args.write)
        return
    design = {"prompts": 30, "annotators": 40, "screen": args.screen, "confirm": args.confirm}
    started = time.perf_counter()
    rows = []
    for sd in args.noise:
        for kind in POLICIES:
            for k in KS:
                rows.append(cell(sd, kind, k, args.studies, **design))
                print(rows[-1], flush=True)
    publish(section(rows, time.perf_counter() - started, design), heading(design), args.write)


if __name__ == "__main__":
    main()
