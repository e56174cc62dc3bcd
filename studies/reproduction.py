"""The reproduction check: known populations (theory.md §7), simulated annotators, measured f̂(k).

A study is built whose prompts all carry the same small candidate set and PopulationMatrix,
with utilities given directly (no model). Policies are fitted with the fit step's own code
(`studies.steps.fit.fit_prompt_policies`), items built with the items step's `build_items`
(the adversary opponent, the worst m-multiset, plus the other policies), and the study goes
live. Nothing is held out of fitting: the given responses are the whole response set Y of the
theory. Simulated annotators then answer every item through the app over HTTP
(`studies.simulated_annotators`, theory.md §1's per-position tie rule), and
`studies.estimate.results.compute_results` gives, per policy and k, the headline f̂(k) (the adversary cell,
two-way interval) and the conservative min over opponents (simultaneous band). The check passes
when both intervals cover the theoretical robust win rate.

Theory used (theory.md §1–§4, §7):

- Condorcet cycle (three equal types a≻b≻c, b≻c≻a, c≻a≻b): NLHF and every (k+1)-player
  equilibrium are uniform, and f(k) = k/(k+1). Against m = 2 outputs the uniform policy's
  robust rate is the exact minimum over pairs (`workers.policies.robust_win_rate_m` evaluated on
  the closed-form uniform policy, not on a fit): 0.278, 0.444, 0.627 at k = 1, 2, 4, inside the
  band [1 − 2/(k+1), k/(k+2)] of theory.md §2, and below the 0.611 that two copies give at k = 2.
- Two responses, a majority α prefers a: the multiplayer equilibrium has f(k) = k/(k+1);
  NLHF is δ_a, whose f(1) = ½ and, for k ≥ 2, f(k) = min(α, k/(k+1)). theory.md §7 says α;
  the min matters when α > k/(k+1) (e.g. α = 0.7, k = 2): against an opponent who copies a,
  the k copies of a earn k/(k+1), and the study's adversary is that copy.
- Tied utilities (five Likert-style types over four responses, ties at the top everywhere):
  the multiplayer equilibrium has f(k) = k/(k+1) under the per-position rule (it would lose
  0.04–0.05 at k = 3, 4 if ties were split per distinct text); response a is a strict Condorcet
  winner, so NLHF is δ_a with theory.md §4's f(k) = min(k/(k+1), min_y P(a≻y) + k/(k+1)·P(a~y))
  for k ≥ 2 (0.72 at k = 4) and ½ at k = 1.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from django.db import transaction

import workers.policies as wp
from studies.estimate.results import compute_results
from studies.models import GeneratorModel, Policy, Prompt, Study
from studies.simulated_annotators import simulate_annotators
from studies.steps.fit import fit_prompt_policies
from studies.steps.items import build_items
from studies.steps.population import save_population

GIVEN_GENERATOR = "given-utilities"
POLICY_KINDS = (Policy.Kind.NLHF, Policy.Kind.MULTIPLAYER)


@dataclass(frozen=True)
class GivenPopulation:
    """A population with utilities given directly: `utilities` (T, N) over `texts` (N,).

    uniform_equilibrium: the population is symmetric under a cyclic relabelling of the responses
    (the Condorcet cycle), so NLHF and every (k+1)-player equilibrium are uniform.
    """

    name: str
    texts: tuple[str, ...]
    utilities: np.ndarray
    weights: np.ndarray
    labels: tuple[str, ...]
    alpha: float | None = None
    uniform_equilibrium: bool = False

    @property
    def pop(self) -> wp.Population:
        return wp.Population(self.utilities, self.weights)

    def condorcet_winner(self) -> int | None:
        """The response that beats every other in a strict pairwise majority, if there is one."""
        u, w = self.utilities, self.weights
        for a in range(u.shape[1]):
            if all(w @ (u[:, a] > u[:, y]) > w @ (u[:, y] > u[:, a]) for y in range(u.shape[1]) if y != a):
                return a
        return None

    def _condorcet_winner_rate(self, a: int, k: int) -> float:
        """theory.md §4: δ_a's robust win rate, min(k/(k+1), min_y P(a≻y) + k/(k+1)·P(a~y)) (k ≥ 2; ½ at k = 1)."""
        u, w, share = self.utilities, self.weights, k / (k + 1)
        worst = min(w @ (u[:, a] > u[:, y]) + share * (w @ (u[:, a] == u[:, y])) for y in range(u.shape[1]) if y != a)
        return 0.5 if k == 1 else float(min(share, worst))

    def theory(self, kind: str, k: int, m: int = 1) -> float:
        """The robust win rate the policy `kind` reaches on this population against m outputs.

        From the closed-form policy, never from a fit: k/(k+1) for any (k+1)-player equilibrium
        at m = 1; NLHF is δ_a when a is a Condorcet winner (theory.md §4); both are uniform on the
        cycle. For m > 1 the closed-form policy's exact minimum over m-multisets
        (`workers.policies.robust_win_rate_m`).
        """
        n = len(self.texts)
        winner = self.condorcet_winner()
        if kind == Policy.Kind.MULTIPLAYER and m == 1:
            return k / (k + 1)
        if self.uniform_equilibrium and kind in (Policy.Kind.MULTIPLAYER, Policy.Kind.NLHF):
            return wp.robust_win_rate_m(self.pop, np.full(n, 1 / n), k, m)
        if kind == Policy.Kind.NLHF and winner is not None:
            if m == 1:
                return self._condorcet_winner_rate(winner, k)
            return wp.robust_win_rate_m(self.pop, np.eye(n)[winner], k, m)
        raise ValueError(f"no theory for policy kind {kind!r} with m = {m} on {self.name}")


def majority(alpha: float) -> GivenPopulation:
    """Two responses; a fraction α ∈ (½, 1) prefers the first (theory.md §7)."""
    if not 0.5 < alpha < 1:
        raise ValueError(f"alpha must lie in (1/2, 1), got {alpha}")
    return GivenPopulation(
        name=f"majority-{alpha:g}",
        texts=("Response A: the answer most people prefer.", "Response B: the answer a minority prefers."),
        utilities=np.array([[1.0, 0.0], [0.0, 1.0]]),
        weights=np.array([alpha, 1 - alpha]),
        labels=("prefers A", "prefers B"),
        alpha=alpha,
    )


def condorcet() -> GivenPopulation:
    """Three equal types with the cyclic rankings a≻b≻c, b≻c≻a, c≻a≻b (theory.md §7)."""
    return GivenPopulation(
        name="condorcet",
        texts=("Response A.", "Response B.", "Response C."),
        utilities=np.array([[3.0, 2.0, 1.0], [1.0, 3.0, 2.0], [2.0, 1.0, 3.0]]),
        weights=np.full(3, 1 / 3),
        labels=("a>b>c", "b>c>a", "c>a>b"),
        uniform_equilibrium=True,
    )


def tied() -> GivenPopulation:
    """Five equal Likert-style types (scores 1–3) over four responses, with ties at the top of every type."""
    return GivenPopulation(
        name="tied",
        texts=("Response A.", "Response B.", "Response C.", "Response D."),
        utilities=np.array([[3.0, 3, 1, 2], [1, 3, 3, 1], [3, 1, 3, 3], [3, 2, 3, 1], [3, 2, 2, 3]]),
        weights=np.full(5, 1 / 5),
        labels=("A=B>D>C", "B=C>A=D", "A=C=D>B", "A=C>B>D", "A=D>B=C"),
    )


def parse_population(spec: str) -> GivenPopulation:
    """'condorcet', 'tied' or 'majority:<alpha>' (e.g. 'majority:0.6')."""
    if spec == "condorcet":
        return condorcet()
    if spec == "tied":
        return tied()
    name, _, value = spec.partition(":")
    if name == "majority" and value:
        try:
            return majority(float(value))
        except ValueError as exc:
            raise ValueError(f"{spec!r}: {exc}") from None
    raise ValueError(f"unknown population {spec!r}: use 'condorcet', 'tied' or 'majority:<alpha>'")


def parse_check(spec: str) -> tuple[GivenPopulation, int]:
    """A population spec with an optional opponent size: 'condorcet@m=2' → (condorcet(), 2); default m = 1."""
    population, _, outputs = spec.partition("@")
    if not outputs:
        return parse_population(population), 1
    key, _, value = outputs.partition("=")
    if key != "m" or not value.isdigit() or int(value) < 1:
        raise ValueError(f"{spec!r}: write the opponent size as '@m=<outputs>', e.g. 'condorcet@m=2'")
    return parse_population(population), int(value)


@dataclass(frozen=True)
class ReproductionDesign:
    """The size of a reproduction study. Annotators: enough to fill every item's quota."""

    prompts: int = 12
    k_values: tuple[int, ...] = (1, 2, 4)
    replicates: int = 2
    annotations_per_item: int = 3
    items_per_participant: int = 12
    seed: int = 0
    policies: tuple[str, ...] = POLICY_KINDS
    attention_check_rate: float = 0.0
    opponent_outputs: int = 1  # m

    @property
    def items(self) -> int:
        # (policy, k, opponent) cells: each policy meets the adversary and every other policy.
        return self.prompts * len(self.policies) * len(self.k_values) * len(self.policies) * self.replicates


def build_study(population: GivenPopulation, design: ReproductionDesign, *, slug: str) -> Study:
    """A live study on `population`, fitted and itemised by the steps' own functions."""
    generator, _ = GeneratorModel.objects.get_or_create(
        name=GIVEN_GENERATOR, defaults={"model_ref": GIVEN_GENERATOR, "decoding": {"note": "utilities given directly"}}
    )
    with transaction.atomic():
        study = Study.objects.create(
            slug=slug,
            title=f"Reproduction check: {population.name}",
            consent_text="Simulated annotators only.",
            instructions="Pick the response you prefer.",
            generator=generator,
            pool_size=len(population.texts),
            k_values=list(design.k_values),
            opponent_outputs=design.opponent_outputs,
            held_out_fraction=0.0,  # the given responses are the theory's whole response set
            replicates=design.replicates,
            annotations_per_item=design.annotations_per_item,
            items_per_participant=design.items_per_participant,
            attention_check_rate=design.attention_check_rate,
            seed=design.seed,
        )
        policies = [Policy.objects.create(study=study, name=str(kind), kind=kind) for kind in design.policies]
        for i in range(design.prompts):
            prompt = Prompt.objects.create(study=study, text=f"Reproduction prompt {i + 1}", external_id=f"p{i + 1}")
            candidates = [
                prompt.candidates.create(generator=generator, sample_index=j, text=text, multiplicity=1)
                for j, text in enumerate(population.texts)
            ]
            save_population(prompt, candidates, population.utilities, population.weights,
                            list(population.labels), {"given": population.name})
    for prompt in study.prompts.order_by("id"):
        fit_prompt_policies(prompt, policies, list(design.k_values))
    build_items(study)  # regular items, then attention checks spread over the prompts
    for status in (Study.Status.PREPARING, Study.Status.READY, Study.Status.LIVE):
        study.move_to(status)
    return study


def discard_study(study: Study) -> None:
    """Delete a reproduction study: judgments, then items, then the rest (the study's record is
    protected from accidental deletion in that order)."""
    with transaction.atomic():
        study.participants.all().delete()
        study.items.all().delete()
        study.delete()


@dataclass(frozen=True)
class Row:
    """One policy and k: the headline (adversary cell, two-way interval) and the conservative min."""

    population: str
    policy: str
    k: int
    m: int
    estimate: float  # the headline: the adversary cell
    low: float
    high: float
    theory: float
    predicted: float | None  # the fitted policies' exact robust rate vs m outputs (PolicyFit.predicted_robust_win_rate)
    n: int  # judgments in the adversary cell
    min_estimate: float  # the conservative summary: min over opponents
    min_low: float
    min_high: float
    worst_opponent: str

    @property
    def covered(self) -> bool:
        return self.low <= self.theory <= self.high and self.min_low <= self.theory <= self.min_high


@dataclass(frozen=True)
class Check:
    population: GivenPopulation
    study: Study
    rows: list[Row]
    annotators: int
    judgments: int

    @property
    def passed(self) -> bool:
        return bool(self.rows) and all(row.covered for row in self.rows)

    def row(self, policy: str, k: int) -> Row:
        return next(r for r in self.rows if r.policy == policy and r.k == k)


def run_check(population: GivenPopulation, design: ReproductionDesign, *, base_url: str, slug: str,
              luce_temperature: float | None = None, concurrency: int = 1, confidence: float = 0.95,
              n_resamples: int = 2000) -> Check:
    """Build the study, fill it with simulated annotators over HTTP at `base_url`, and measure f̂(k)."""
    study = build_study(population, design, slug=slug)
    # Enough annotators for every item's quota; the last few may find nothing left they haven't
    # seen, and the run stops at the first one the app turns away as full.
    needed = math.ceil(study.items.filter(needs_judgment=True).count() * design.annotations_per_item
                       / design.items_per_participant)
    report = simulate_annotators(study, annotators=needed + design.annotations_per_item, base_url=base_url,
                                 luce_temperature=luce_temperature, seed=design.seed, concurrency=concurrency)
    results = compute_results(study, origin="simulated", confidence=confidence, n_resamples=n_resamples,
                              seed=design.seed)
    kinds = {p.name: p.kind for p in study.policies.all()}
    rows = []
    for r in results.robust:
        if r.headline is None:
            raise ValueError(f"{population.name}: {r.policy} at k={r.k} has no judgment against the adversary")
        rows.append(Row(
            population.name, r.policy, r.k, r.m, r.headline.estimate, r.headline.low, r.headline.high,
            population.theory(kinds[r.policy], r.k, r.m), r.predicted, r.headline.n + r.headline.n_decided,
            r.result.estimate, r.result.low, r.result.high, str(r.result.worst_opponent),
        ))  # fmt: skip
    return Check(population, study, rows, len(report.annotators), report.judgments)


@contextmanager
def local_server() -> Iterator[str]:
    """Serve this project's WSGI app on a free local port in background threads; yields its URL.

    For commands that need "the running app" without one: the requests still go through
    Django's full stack (middleware, CSRF, sessions), on the configured database.
    """
    from django.core.servers.basehttp import (
        ThreadedWSGIServer,
        WSGIRequestHandler,
        get_internal_wsgi_application,
    )

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, *args) -> None:
            pass

    server = ThreadedWSGIServer(("127.0.0.1", 0), QuietHandler, allow_reuse_address=False)
    server.set_app(get_internal_wsgi_application())
    thread = threading.Thread(target=server.serve_forever, name="reproduction-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        server.server_close()


HEADER = ("population", "policy", "k", "m", "headline f̂(k)", "interval", "theory", "exact rate of the fit", "n",
          "min over opponents", "band", "worst opponent", "covers")


def table(checks: list[Check], *, confidence: float = 0.95) -> str:
    """A Markdown table of every check's rows (n: judgments plus decided items in the adversary cell)."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for check in checks:
        for r in check.rows:
            predicted = "" if r.predicted is None else f"{r.predicted:.3f}"
            lines.append(
                f"| {r.population} | {r.policy} | {r.k} | {r.m} | {r.estimate:.3f} | [{r.low:.3f}, {r.high:.3f}] | "
                f"{r.theory:.3f} | {predicted} | {r.n} | {r.min_estimate:.3f} | [{r.min_low:.3f}, {r.min_high:.3f}] | "
                f"{r.worst_opponent} | {'yes' if r.covered else '**no**'} |"
            )
    return "\n".join(lines)
