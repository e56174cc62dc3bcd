"""The reproduction check: known populations (theory.md §7), simulated annotators, measured f̂(k).

A study is built whose prompts all carry the same small candidate set and PopulationMatrix,
with utilities given directly (no model). Policies are fitted with the fit step's own code
(`studies.steps.fit.fit_prompt_policies`), items built with the items step's `build_items`
(adversary opponent plus the other policies), and the study goes live. Simulated annotators
then answer every item through the app over HTTP (`studies.simulated_annotators`), and `studies.results.compute_results`
gives f̂(k) (min over opponents, simultaneous intervals). The check passes when every interval
covers the theoretical robust win rate.

Theory used (theory.md §1–§4, §7):

- Condorcet cycle (three equal types a≻b≻c, b≻c≻a, c≻a≻b): NLHF and every (k+1)-player
  equilibrium are uniform, and f(k) = k/(k+1).
- Two responses, a majority α prefers a: the multiplayer equilibrium has f(k) = k/(k+1);
  NLHF is δ_a, whose f(1) = ½ and, for k ≥ 2, f(k) = min(α, k/(k+1)). theory.md §7 says α;
  the min matters when α > k/(k+1) (e.g. α = 0.7, k = 2): against an opponent who copies a,
  the k copies of a earn k/(k+1), and the study's adversary is that copy.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
from django.db import transaction

from studies.models import GeneratorModel, Policy, Prompt, Study
from studies.results import compute_results
from studies.simulated_annotators import simulate_annotators
from studies.steps.fit import fit_prompt_policies
from studies.steps.items import build_items
from studies.steps.population import save_population

GIVEN_GENERATOR = "given-utilities"
POLICY_KINDS = (Policy.Kind.NLHF, Policy.Kind.MULTIPLAYER)


@dataclass(frozen=True)
class GivenPopulation:
    """A population with utilities given directly: `utilities` (T, N) over `texts` (N,)."""

    name: str
    texts: tuple[str, ...]
    utilities: np.ndarray
    weights: np.ndarray
    labels: tuple[str, ...]
    alpha: float | None = None

    def theory(self, kind: str, k: int) -> float:
        """The robust win rate f(k) the policy `kind` reaches on this population."""
        if kind == Policy.Kind.MULTIPLAYER or self.alpha is None:
            return k / (k + 1)
        if kind == Policy.Kind.NLHF:
            return 0.5 if k == 1 else min(self.alpha, k / (k + 1))
        raise ValueError(f"no theory for policy kind {kind!r}")


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
    )


def parse_population(spec: str) -> GivenPopulation:
    """'condorcet' or 'majority:<alpha>' (e.g. 'majority:0.6')."""
    if spec == "condorcet":
        return condorcet()
    name, _, value = spec.partition(":")
    if name == "majority" and value:
        try:
            return majority(float(value))
        except ValueError as exc:
            raise ValueError(f"{spec!r}: {exc}") from None
    raise ValueError(f"unknown population {spec!r}: use 'condorcet' or 'majority:<alpha>'")


@dataclass(frozen=True)
class Design:
    """The size of a reproduction study. Annotators: enough to fill every item's quota."""

    prompts: int = 12
    k_values: tuple[int, ...] = (1, 2, 4)
    replicates: int = 2
    annotations_per_item: int = 3
    items_per_participant: int = 12
    seed: int = 0
    policies: tuple[str, ...] = POLICY_KINDS
    attention_check_rate: float = 0.0

    @property
    def items(self) -> int:
        # (policy, k, opponent) cells: each policy meets the adversary and every other policy.
        return self.prompts * len(self.policies) * len(self.k_values) * len(self.policies) * self.replicates


def build_study(population: GivenPopulation, design: Design, *, slug: str) -> Study:
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
            opponent_outputs=1,
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
    population: str
    policy: str
    k: int
    estimate: float
    low: float
    high: float
    theory: float
    predicted: float | None  # the fitted policies' exact f(k) (mean PolicyFit.predicted_robust_win_rate)
    n: int
    worst_opponent: str

    @property
    def covered(self) -> bool:
        return self.low <= self.theory <= self.high


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


def run_check(population: GivenPopulation, design: Design, *, base_url: str, slug: str,
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
    rows = [
        Row(population.name, r.policy, r.k, r.result.estimate, r.result.low, r.result.high,
            population.theory(kinds[r.policy], r.k), r.predicted,
            sum(c.n for c in r.result.per_opponent), str(r.result.worst_opponent))
        for r in results.robust
    ]
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


HEADER = ("population", "policy", "k", "f̂(k)", "interval", "theory", "exact f(k) of the fit", "n", "worst opponent", "covers")


def table(checks: list[Check], *, confidence: float = 0.95) -> str:
    """A Markdown table of every check's rows."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    for check in checks:
        for r in check.rows:
            predicted = "" if r.predicted is None else f"{r.predicted:.3f}"
            lines.append(
                f"| {r.population} | {r.policy} | {r.k} | {r.estimate:.3f} | [{r.low:.3f}, {r.high:.3f}] | "
                f"{r.theory:.3f} | {predicted} | {r.n} | {r.worst_opponent} | {'yes' if r.covered else '**no**'} |"
            )
    return "\n".join(lines)
