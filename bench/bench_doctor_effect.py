"""Does a trained LLMdoctor steer its persona on prompts it never saw? (issue #23)

A doctor experiment that can fail. SmolLM2-135M-Instruct is the patient; the prompts are split
(``workers.doctor.pairs.split_prompts``) into training and held-out prompts. For each persona
(the demo's child and poet, whose tastes differ), the patient's pools on the *training* prompts
are ranked by an **independent judge**: the shipped MiniLM embedding model's similarity to the
persona's description (``workers.populations.embedding_utilities``), which neither is the
patient nor shares its weights. Its pairs (no held-out prompt and no held-out text among them,
``training_pairs``) train one LoRA doctor per persona with TFPO.

Then, on the **held-out** prompts only, plain samples and guided samples drawn with the same
seeds (common random numbers: sample i of a prompt uses the same random stream in both) are
scored by the same judge for *both* personas. Reported per doctor and per (β, α):

- the reward gain: mean over held-out prompts of (mean judge reward of the guided samples −
  that of the plain samples), with a 95% t-interval over prompts (the prompt is the cluster:
  samples of one prompt are averaged first, so the interval counts prompts, not samples);
- the same gain for the other persona (a doctor should move its own persona more);
- diversity (distinct-2 of the words of a prompt's samples; mean pairwise embedding distance
  1 − cos within a prompt's samples) and length (tokens), against the plain samples';

over β ∈ ``--betas`` with α = 1 − β (an untrained doctor would reproduce plain sampling) and with
α = 1 (the method's default, which also sharpens the patient). Training curves (SubTB, value
hinge, and the held-out pairs' chosen-minus-rejected log-likelihood margin against the
patient's) and the dose-response curves are drawn as PNGs.

    .venv/bin/python bench/bench_doctor_effect.py                     # the full design (sized for ~30 min on 2 free cores)
    .venv/bin/python bench/bench_doctor_effect.py --prompts 12 --steps 30 --betas 0,0.5,1
    .venv/bin/python bench/bench_doctor_effect.py --quick             # tiny random models, a smoke run
    .venv/bin/python bench/bench_doctor_effect.py --write              # also docs/benchmarks.md + docs/llmdoctor.md

``--write`` replaces this bench's section of docs/benchmarks.md and the results section of
docs/llmdoctor.md, and writes the figures and a JSON of every number under docs/figures/.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _report import command_line, publish, write_section

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTION = "## LLMdoctor's effect on held-out prompts: judge, dose-response, training curves (issue #23)"
DOC_SECTION = "## Measured: does a doctor steer its persona on held-out prompts? (issue #23)"
FIGURES = ROOT / "docs" / "figures"
SYSTEM_PROMPT = "You are a helpful assistant. Answer in one sentence."
PERSONAS = (  # studies/demo.py's two minorities: clearly different tastes
    ("child", "A ten-year-old who likes simple words, friendly tone and fun examples."),
    ("poet", "A poet who enjoys vivid, warm and imaginative language."),
)
PROMPTS = [  # studies/demo.py's twelve, then twelve more in the same style
    "In one sentence: how do I brew a good cup of green tea?",
    "In one sentence: why do rainbows appear after rain?",
    "Write a one-sentence reply that politely declines a meeting invitation.",
    "In one sentence: how can I stick to a monthly budget?",
    "In one sentence: what can I do to fall asleep faster?",
    "In one sentence: how often should I water a cactus?",
    "In one sentence: how should a beginner start running?",
    "In one sentence: why do stars twinkle?",
    "In one sentence: what is a good birthday gift for a friend who loves cooking?",
    "In one sentence: how can I stay focused while studying?",
    "In one sentence: why is the sea salty?",
    "Describe a walk in an autumn forest in one sentence.",
    "In one sentence: why do leaves change colour in autumn?",
    "In one sentence: how do bees make honey?",
    "Describe the first snowfall of winter in one sentence.",
    "In one sentence: what should I pack for a day at the beach?",
    "In one sentence: why does the moon change shape?",
    "In one sentence: how can I make a new friend at school?",
    "Describe a thunderstorm at night in one sentence.",
    "In one sentence: why do cats purr?",
    "In one sentence: how do I keep a houseplant alive?",
    "In one sentence: what makes a good breakfast?",
    "Describe the sound of the ocean in one sentence.",
    "In one sentence: why is the sky blue?",
]


@dataclasses.dataclass
class Setup:
    patient: object
    embedder: object
    train: tuple[str, ...]
    held_out: tuple[str, ...]
    decoding: dict


def parse_betas(raw: str) -> list[float]:
    betas = sorted({float(b) for b in raw.split(",") if b.strip()})
    if not betas or any(not 0 <= b <= 1 for b in betas):
        raise argparse.ArgumentTypeError("--betas: numbers in [0, 1], comma-separated")
    return betas


# -- models and data --------------------------------------------------------------------------


def load_models(quick: bool):
    from workers.generation import load_model

    if quick:
        from tests.tinymodels import tiny_bert_dir, tiny_model_dir

        tmp = Path(tempfile.mkdtemp(prefix="bench-doctor-effect-"))
        allow_model_dir(tmp)
        patient = load_model(str(tiny_model_dir(tmp / "lm", "llama", seed=1, initializer_range=0.3)))
        return patient, load_model(str(tiny_bert_dir(tmp / "bert")), kind="embedding")
    return load_model("smollm2-135m-instruct"), load_model("all-minilm-l6-v2")


def texts_of(samples) -> list[str]:
    return [s.text.strip() for s in samples]


def judge(setup: Setup, texts: list[str]) -> np.ndarray:
    """(personas, texts) cosine similarity of each text to each persona's description."""
    from workers.populations import embedding_utilities

    return embedding_utilities(setup.embedder, [t or " " for t in texts], [d for _, d in PERSONAS]).utilities


def embed(setup: Setup, texts: list[str]) -> np.ndarray:
    from workers.populations.judges import embed_texts

    return embed_texts(setup.embedder, [t or " " for t in texts])


def persona_rewards(persona: str):
    from workers.doctor.rewards import RewardConfig

    return RewardConfig(
        positive_system=f"{SYSTEM_PROMPT} You are answering for this person: {persona} Write the answer this person would love.",
        negative_system=f"{SYSTEM_PROMPT} You are answering for this person: {persona} Write an answer this person would dislike.",
        max_response_tokens=64,
    )  # fmt: skip


# -- training ---------------------------------------------------------------------------------


def pools(setup: Setup, prompts, n: int, seed: int) -> dict[str, list]:
    from workers.generation import sample_pool

    return {p: sample_pool(setup.patient, p, n=n, seed=seed, **setup.decoding) for p in prompts}


def persona_pairs(prompt_texts: dict[str, list[str]], utilities: dict[str, np.ndarray], t: int, mode: str):
    from workers.doctor.pairs import pairs_from_population

    out = []
    for prompt, texts in prompt_texts.items():
        keep = [i for i, x in enumerate(texts) if x]
        unique = list(dict.fromkeys(texts[i] for i in keep))
        if len(unique) < 2:
            continue
        first = [keep[[texts[i] for i in keep].index(x)] for x in unique]
        out += pairs_from_population(prompt, unique, utilities[prompt][t, first][None, :], mode=mode)
    return out


def train_persona_doctor(setup: Setup, args, t: int, train_texts, train_u, held_texts, held_u, root: Path):
    """One persona's doctor: pairs on training prompts only, trained with its held-out margin monitored."""
    from workers.doctor.pairs import training_pairs
    from workers.doctor.tfpo import (
        TFPOConfig,
        doctor_key,
        prepare_examples,
        train_doctor,
    )

    held_candidates = [x for texts in held_texts.values() for x in texts]
    pairs = training_pairs(persona_pairs(train_texts, train_u, t, args.mode), setup.held_out, held_candidates)
    monitor = persona_pairs(held_texts, held_u, t, "extremes")
    rewards = persona_rewards(PERSONAS[t][1])
    config = TFPOConfig(steps=args.steps, pairs_per_step=args.pairs_per_step, learning_rate=args.lr,
                        head_learning_rate=args.head_lr, value_hinge=args.value_hinge, checkpoint_every=args.steps,
                        seed=args.seed, system_prompt=SYSTEM_PROMPT)  # fmt: skip
    started = time.perf_counter()
    examples = prepare_examples(setup.patient, pairs, rewards, config)
    held_examples = prepare_examples(setup.patient, monitor, rewards, config)
    prep = time.perf_counter() - started
    print(f"{PERSONAS[t][0]}: {len(pairs)} pairs, token rewards and references in {prep:.0f} s", flush=True)
    key = doctor_key(pairs, setup.patient, rewards, config)

    def report(h) -> None:
        if h.step % 5 == 0 or h.margin is not None:
            print(f"  step {h.step}: loss {h.loss:.3f} subtb {h.subtb:.3f} hinge {h.hinge:.3f} margin {h.margin} "
                  f"[{time.perf_counter() - started:.0f} s]", flush=True)  # fmt: skip

    trained = train_doctor(setup.patient, examples, config, run_dir=root / key[:16], key=key, progress=report,
                           held_out=held_examples, monitor_every=max(1, args.steps // 10))  # fmt: skip
    return trained, {"pairs": len(pairs), "held_out_pairs": len(monitor), "prepare_seconds": prep,
                     "train_seconds": trained.seconds}  # fmt: skip


# -- evaluation -------------------------------------------------------------------------------


def distinct_2(texts: list[str]) -> float:
    bigrams = [tuple(w[i : i + 2]) for w in (t.lower().split() for t in texts) for i in range(len(w) - 1)]
    return len(set(bigrams)) / len(bigrams) if bigrams else 0.0


def pairwise_distance(vectors: np.ndarray) -> float:
    n = len(vectors)
    if n < 2:
        return 0.0
    cos = vectors @ vectors.T
    return float((1 - cos)[np.triu_indices(n, 1)].mean())


def describe(setup: Setup, samples_by_prompt: dict[str, list]) -> dict:
    """Per held-out prompt: each persona's mean reward, distinct-2, embedding spread, length."""
    out = {"reward": [], "distinct2": [], "spread": [], "length": []}
    for prompt in setup.held_out:
        samples = samples_by_prompt[prompt]
        texts = texts_of(samples)
        out["reward"].append(judge(setup, texts).mean(axis=1))
        out["distinct2"].append(distinct_2(texts))
        out["spread"].append(pairwise_distance(embed(setup, texts)))
        out["length"].append(float(np.mean([s.token_count for s in samples])))
    return {k: np.asarray(v) for k, v in out.items()}


def t_interval(diffs: np.ndarray) -> tuple[float, float, float]:
    """Mean and 95% t-interval of per-prompt differences (prompts are the clusters)."""
    from scipy import stats

    mean = float(diffs.mean())
    if len(diffs) < 2:
        return mean, float("nan"), float("nan")
    half = float(stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / np.sqrt(len(diffs)))
    return mean, mean - half, mean + half


def evaluate(setup: Setup, args, doctors, plain: dict) -> list[dict]:
    """Rows of the dose-response table; ``doctors`` are (persona index, loaded doctor) pairs."""
    from workers.generation import sample_pool

    base = describe(setup, plain)
    rows = []
    for t, doctor in doctors:
        for beta in args.betas:
            rules = (("plain", 1.0),) if beta == 0 else (("1-beta", 1.0 - beta), ("1", 1.0))
            rules = tuple(r for r in rules if r[0] in args.alpha_rules or r[0] == "plain")
            for mode, alpha in rules:
                if beta == 0:
                    stats = base  # no guidance: the plain samples themselves
                else:
                    guided = {p: sample_pool(setup.patient, p, n=args.eval, seed=args.seed + 1, guides=[(doctor, beta)],
                                             alpha=alpha, **setup.decoding) for p in setup.held_out}  # fmt: skip
                    stats = describe(setup, guided)
                row = {"doctor": PERSONAS[t][0], "beta": beta, "alpha_rule": mode, "alpha": alpha}
                for j, (name, _) in enumerate(PERSONAS):
                    gain = stats["reward"][:, j] - base["reward"][:, j]
                    row[f"gain_{name}"] = t_interval(gain)
                for key in ("distinct2", "spread", "length"):
                    row[key] = float(stats[key].mean())
                    row[f"{key}_plain"] = float(base[key].mean())
                rows.append(row)
                print(json.dumps(row, default=float), flush=True)
    return rows


# -- figures ----------------------------------------------------------------------------------


def draw_dose_response(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = [name for name, _ in PERSONAS if any(x["doctor"] == name for x in rows)]
    fig, axes = plt.subplots(len(present), 4, figsize=(15, 3.4 * len(present)), squeeze=False)
    for r, doctor in enumerate(present):
        for mode, style in (("1-beta", "-"), ("1", "--")):
            sel = [x for x in rows if x["doctor"] == doctor and x["alpha_rule"] in (mode, "plain")]
            betas = [x["beta"] for x in sel]
            for name, colour in zip([p for p, _ in PERSONAS], ("tab:orange", "tab:purple"), strict=True):
                mean = np.array([x[f"gain_{name}"][0] for x in sel])
                lo = np.array([x[f"gain_{name}"][1] for x in sel])
                hi = np.array([x[f"gain_{name}"][2] for x in sel])
                ax = axes[r, 0]
                ax.plot(betas, mean, style, color=colour, marker="o", label=f"{name} reward, α={mode.replace('-beta', '−β')}")
                ax.fill_between(betas, lo, hi, color=colour, alpha=0.12)
            axes[r, 1].plot(betas, [x["distinct2"] for x in sel], style, marker="o", color="tab:blue", label=f"α={mode}")
            axes[r, 2].plot(betas, [x["spread"] for x in sel], style, marker="o", color="tab:green", label=f"α={mode}")
            axes[r, 3].plot(betas, [x["length"] for x in sel], style, marker="o", color="tab:gray", label=f"α={mode}")
        axes[r, 0].axhline(0, color="black", lw=0.7)
        axes[r, 0].set_title(f"{doctor}'s doctor: reward gain vs plain (95% CI over prompts)", fontsize=9)
        axes[r, 1].set_title("distinct-2 within a prompt's samples", fontsize=9)
        axes[r, 2].set_title("mean pairwise embedding distance", fontsize=9)
        axes[r, 3].set_title("length (tokens)", fontsize=9)
        for ax in axes[r]:
            ax.set_xlabel("β")
            ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def draw_training(histories: dict[str, list], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for name, history in histories.items():
        steps = [h.step for h in history]
        axes[0].plot(steps, [h.subtb for h in history], label=name, lw=0.9)
        axes[1].plot(steps, [h.hinge for h in history], label=name, lw=0.9)
        marked = [h for h in history if h.margin is not None]
        axes[2].plot([h.step for h in marked], [h.margin for h in marked], marker="o", label=name)
    for ax, title in zip(axes, ("SubTB loss (batch)", "value hinge (batch)",
                                "held-out pairs: chosen − rejected log-lik., doctor − patient"), strict=True):  # fmt: skip
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    axes[2].axhline(0, color="black", lw=0.7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


# -- the run ----------------------------------------------------------------------------------


def allow_model_dir(folder: Path) -> None:
    """Let ``load_model`` read doctors trained into ``folder``: local models load only from the
    folders the project allows (``workers.generation.loading.allowed_model_roots``)."""
    listed = [x for x in os.environ.get("UALIGN_MODEL_DIRS", "").split(os.pathsep) if x]
    os.environ["UALIGN_MODEL_DIRS"] = os.pathsep.join([*listed, str(folder.resolve())])


def run(args) -> dict:
    from workers.doctor.pairs import split_prompts
    from workers.generation import load_model

    os.environ.setdefault("UALIGN_TORCH_THREADS", str(args.threads))
    started = time.perf_counter()
    patient, embedder = load_models(args.quick)
    split = split_prompts(PROMPTS[: args.prompts], args.held_out, args.seed)
    decoding = {"max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_p": 0.95,
                "batch_size": max(args.pool, args.eval), "system_prompt": SYSTEM_PROMPT}  # fmt: skip
    setup = Setup(patient, embedder, split.train, split.held_out, decoding)
    train_texts = {p: texts_of(s) for p, s in pools(setup, split.train, args.pool, args.seed).items()}
    plain = pools(setup, split.held_out, args.eval, args.seed + 1)
    held_texts = {p: texts_of(s) for p, s in plain.items()}
    print(f"[{time.perf_counter() - started:.0f} s] sampled pools and plain held-out samples", flush=True)
    train_u = {p: judge(setup, x) for p, x in train_texts.items()}
    held_u = {p: judge(setup, x) for p, x in held_texts.items()}
    sampled = time.perf_counter() - started
    root = Path(tempfile.mkdtemp(prefix="doctor-effect-"))
    allow_model_dir(root)
    doctors, histories, training = [], {}, {}
    for t, (name, _) in enumerate(PERSONAS):
        if args.personas and name not in args.personas:
            continue
        trained, info = train_persona_doctor(setup, args, t, train_texts, train_u, held_texts, held_u, root)
        doctors.append((t, load_model(str(trained.path))))
        histories[name], training[name] = list(trained.history), info
        print(name, json.dumps(info, default=float), flush=True)
    trained_at = time.perf_counter() - started
    rows = evaluate(setup, args, doctors, plain)
    return {"split": dataclasses.asdict(split), "rows": rows, "training": training,
            "histories": {k: [dataclasses.asdict(h) for h in v] for k, v in histories.items()},
            "seconds": {"sampling": sampled, "training": trained_at - sampled,
                        "evaluation": time.perf_counter() - trained_at, "total": time.perf_counter() - started},
            "_histories": histories}  # fmt: skip


def held_out_setup(args):
    """Models, split and decoding, and the plain held-out samples (the same seeds as a full run)."""
    from workers.doctor.pairs import split_prompts

    os.environ.setdefault("UALIGN_TORCH_THREADS", str(args.threads))
    patient, embedder = load_models(args.quick)
    split = split_prompts(PROMPTS[: args.prompts], args.held_out, args.seed)
    decoding = {"max_new_tokens": args.max_new_tokens, "temperature": 1.0, "top_p": 0.95,
                "batch_size": max(args.pool, args.eval), "system_prompt": SYSTEM_PROMPT}  # fmt: skip
    setup = Setup(patient, embedder, split.train, split.held_out, decoding)
    return setup, split, pools(setup, split.held_out, args.eval, args.seed + 1)


def run_evaluation_part(args) -> dict:
    """Evaluate already trained doctors (``--doctor NAME=FOLDER``): one part of a run split over
    processes, so that one doctor is evaluated while the next trains (a shared, slow CPU)."""
    from workers.generation import load_model

    started = time.perf_counter()
    setup, split, plain = held_out_setup(args)
    held_texts = {p: texts_of(s) for p, s in plain.items()}
    held_u = {p: judge(setup, x) for p, x in held_texts.items()}
    names = [n for n, _ in PERSONAS]
    part: dict = {"split": dataclasses.asdict(split), "histories": {}, "training": {}}
    doctors = []
    for spec in args.doctor:
        name, folder = spec.split("=", 1)
        t = names.index(name)
        allow_model_dir(Path(folder).parent)
        meta = json.loads((Path(folder) / "doctor.json").read_text())
        part["histories"][name] = meta["history"]
        part["training"][name] = {"pairs": meta["examples"], "train_seconds": None,
                                  "held_out_pairs": len(persona_pairs(held_texts, held_u, t, "extremes"))}  # fmt: skip
        doctors.append((t, load_model(folder)))
    part["rows"] = evaluate(setup, args, doctors, plain)
    part["seconds"] = {"evaluation": time.perf_counter() - started}
    return part


def merge_parts(paths: list[str]) -> dict:
    """One result from evaluation parts (rows in the personas' order)."""
    parts = [json.loads(Path(p).read_text()) for p in paths]
    order = [n for n, _ in PERSONAS]
    rules = ["plain", "1-beta", "1"]
    unique = {(r["doctor"], r["beta"], r["alpha_rule"]): r for part in parts for r in part["rows"]}
    rows = sorted(unique.values(), key=lambda r: (order.index(r["doctor"]), r["beta"], rules.index(r["alpha_rule"])))
    result = {"split": parts[0]["split"], "rows": rows, "training": {}, "histories": {},
              "seconds": {"evaluation parts": [part["seconds"]["evaluation"] for part in parts]}}  # fmt: skip
    for part in parts:
        result["training"].update(part["training"])
        result["histories"].update(part["histories"])
    return result


# -- report -----------------------------------------------------------------------------------


def _ci(value) -> str:
    mean, lo, hi = value
    return f"{mean:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def verdict(rows: list[dict]) -> list[str]:
    """One line per doctor, computed from the table: where its own persona's interval clears 0."""
    lines = []
    names = [p for p, _ in PERSONAS]
    for name in names:
        other = next(n for n in names if n != name)
        guided = [r for r in rows if r["doctor"] == name and r["beta"] > 0]
        if not guided:
            lines.append(f"- **{name}'s doctor**: not in this run.")
            continue
        clear = [r for r in guided if r[f"gain_{name}"][1] > 0]
        more = [r for r in guided if r[f"gain_{name}"][0] > r[f"gain_{other}"][0]]
        where = ", ".join(f"β={r['beta']:g} α={r['alpha']:g}" for r in clear) or "no setting"
        lines.append(f"- **{name}'s doctor**: its own persona's gain has a 95% interval above 0 at {where} "
                     f"(of {len(guided)} guided settings); its own persona moved more than the {other}'s "
                     f"in {len(more)} of {len(guided)}.")  # fmt: skip
    return lines


def training_table(result: dict) -> list[str]:
    lines = ["| doctor | pairs (training prompts) | held-out pairs | SubTB, first 5 → last 5 steps | "
             "hinge, first 5 → last 5 | held-out margin, step 1 → last | training s |",
             "|---|---:|---:|---:|---:|---:|---:|"]  # fmt: skip
    for name, history in result["histories"].items():
        info = result["training"][name]
        first, last = history[:5], history[-5:]
        margins = [h["margin"] for h in history if h["margin"] is not None]
        lines.append(
            f"| {name} | {info['pairs']} | {info['held_out_pairs']} | "
            f"{np.mean([h['subtb'] for h in first]):.3g} → {np.mean([h['subtb'] for h in last]):.3g} | "
            f"{np.mean([h['hinge'] for h in first]):.3g} → {np.mean([h['hinge'] for h in last]):.3g} | "
            f"{margins[0]:+.3f} → {margins[-1]:+.3f} | "
            f"{'–' if info['train_seconds'] is None else format(info['train_seconds'], '.0f')} |"
        )
    return lines


def dose_table(rows: list[dict]) -> list[str]:
    names = [p for p, _ in PERSONAS]
    lines = ["| doctor | β | α | " + " | ".join(f"{n} reward gain [95% CI]" for n in names)
             + " | distinct-2 | embedding spread | length (tokens) |",
             "|---|---:|---:|" + "---:|" * len(names) + "---:|---:|---:|"]  # fmt: skip
    for r in rows:
        gains = " | ".join(_ci(r[f"gain_{n}"]) for n in names)
        lines.append(f"| {r['doctor']} | {r['beta']:g} | {r['alpha']:g} | {gains} | {r['distinct2']:.3f} | "
                     f"{r['spread']:.3f} | {r['length']:.1f} |")  # fmt: skip
    return lines


def markdown(args, result: dict, command: str, heading: str) -> str:
    split, secs = result["split"], result["seconds"]
    model = "tiny random models (--quick: a smoke run, not a measurement)" if args.quick else (
        "SmolLM2-135M-Instruct (patient, LoRA doctors), all-MiniLM-L6-v2 (judge)")
    default = "the default configuration" if args.is_default else "a reduced configuration (the default is larger)"
    lines = [
        heading, "",
        f"`{command}`: {default}; {model}; {datetime.datetime.now(datetime.UTC).date().isoformat()}, {os.cpu_count()} CPU cores "
        f"(shared), torch threads {os.environ.get('UALIGN_TORCH_THREADS')}; " + (
            f"{secs['total'] / 60:.1f} min (sampling {secs['sampling']:.0f} s, training {secs['training']:.0f} s, "
            f"evaluation {secs['evaluation']:.0f} s)." if "total" in secs else
            "run in parts (`--doctor` evaluation parts merged with `--merge`): evaluation parts took "
            + ", ".join(f"{x / 60:.0f} min" for x in secs["evaluation parts"]) + "."),
        "",
        f"Prompts: {len(split['train'])} training, {len(split['held_out'])} held out (seed {args.seed}); pools of "
        f"{args.pool} on training prompts, {args.eval} plain and {args.eval} guided samples per held-out prompt "
        f"(same seeds), at most {args.max_new_tokens} new tokens, temperature 1, top-p 0.95, the demo's system "
        f"prompt. Pairs: `per_type`, mode `{args.mode}`, from the judge on training prompts only. TFPO: "
        f"{args.steps} steps × {args.pairs_per_step} pairs, learning rate {args.lr:g} (head {args.head_lr:g}), "
        f"value hinge `{args.value_hinge}`, γ 0.1, λ 1, LoRA rank 8. Judge: cosine similarity of the "
        f"MiniLM embeddings of a sample and of the persona's description (range [−1, 1]; the plain samples' "
        f"rewards are the baseline of every gain).",
        "", "Training (held-out margin: mean over held-out prompts' best-vs-worst pairs of the doctor's "
        "log-likelihood margin minus the patient's; 0 before training):", "",
        *training_table(result), "",
        "Dose-response on held-out prompts (gain: guided − plain mean judge reward, per prompt, then the mean "
        "and a 95% t-interval over prompts; β = 0 is plain sampling):", "",
        *dose_table(result["rows"]), "",
        *verdict(result["rows"]), "",
        "Figures: `docs/figures/doctor-effect-dose.png` (dose-response), `docs/figures/doctor-effect-training.png` "
        "(training curves); every number in `docs/figures/doctor-effect.json`.", "",
    ]  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=24, help="prompts used (of 24), split into training/held-out")
    parser.add_argument("--held-out", type=float, default=0.5, help="share of the prompts held out")
    parser.add_argument("--steps", type=int, default=80, help="TFPO steps per doctor")
    parser.add_argument("--pairs-per-step", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-3, help="learning rate of the LoRA adapters")
    parser.add_argument("--head-lr", type=float, default=1e-3, help="learning rate of the value head")
    parser.add_argument("--value-hinge", choices=("token", "sequence"), default="token")
    parser.add_argument("--mode", choices=("all", "extremes"), default="all", help="pairs per training prompt")
    parser.add_argument("--betas", type=parse_betas, default=parse_betas("0,0.25,0.5,0.75,1"))
    parser.add_argument("--pool", type=int, default=8, help="samples per training prompt")
    parser.add_argument("--eval", type=int, default=8, help="plain (and guided) samples per held-out prompt")
    parser.add_argument("--max-new-tokens", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (UALIGN_TORCH_THREADS)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="tiny random models: checks the script, measures nothing")
    parser.add_argument("--doctor", action="append", default=[], metavar="NAME=FOLDER",
                        help="evaluate this trained doctor only (a part; repeatable), written to --part-out")
    parser.add_argument("--personas", type=lambda v: [x for x in v.split(",") if x], default=[],
                        help="train and evaluate only these personas' doctors (a part, written to --part-out)")
    parser.add_argument("--alpha-rules", type=lambda v: v.split(","), default=["1-beta", "1"],
                        help="which α rules to evaluate: 1-beta, 1 (both by default)")
    parser.add_argument("--part-out", default="doctor-effect-part.json")
    parser.add_argument("--merge", default="", metavar="PART,PART", help="report from evaluation parts")
    parser.add_argument("--write", action="store_true", help="write docs/benchmarks.md, docs/llmdoctor.md, figures")
    args = parser.parse_args(argv)
    args.prompts = max(2, min(args.prompts, len(PROMPTS)))
    if args.doctor or args.personas:
        part = run_evaluation_part(args) if args.doctor else run(args)
        part.pop("_histories", None)
        part["seconds"].setdefault("evaluation", part["seconds"].get("total", 0.0))
        Path(args.part_out).write_text(json.dumps(part, default=float, indent=1))
        print(f"evaluation part in {args.part_out}")
        return
    args.is_default = all(getattr(args, k) == parser.get_default(k) for k in
                          ("prompts", "held_out", "steps", "pairs_per_step", "betas", "pool", "eval", "max_new_tokens"))  # fmt: skip
    from workers.doctor.tfpo import StepLoss

    result = merge_parts(args.merge.split(",")) if args.merge else run(args)
    histories = result.pop("_histories", None) or {
        k: [StepLoss(**h) for h in v] for k, v in result["histories"].items()
    }
    command = command_line("bench/bench_doctor_effect.py", argv)
    section = markdown(args, result, command, SECTION)
    out = FIGURES if args.write else Path(tempfile.mkdtemp(prefix="doctor-effect-figures-"))
    out.mkdir(parents=True, exist_ok=True)
    draw_dose_response(result["rows"], out / "doctor-effect-dose.png")
    draw_training(histories, out / "doctor-effect-training.png")
    (out / "doctor-effect.json").write_text(json.dumps(result, default=float, indent=1))
    publish(section, SECTION, ROOT / "docs" / "benchmarks.md" if args.write else None)
    if args.write:
        write_section(ROOT / "docs" / "llmdoctor.md", DOC_SECTION, markdown(args, result, command, DOC_SECTION))
    print(f"figures and JSON in {out}")


if __name__ == "__main__":
    main()
