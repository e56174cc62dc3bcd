"""LLMdoctor costs, in one run: token rewards, TFPO training steps/s, guided vs plain decoding.

Samples a small pool per prompt from the patient, makes preference pairs from a seeded random
population over it (the pairs' content does not change the cost), scores the token rewards,
trains a LoRA doctor for ``--steps`` steps, then decodes the same pool (same prompt, seeds and
decoding) plainly, with one doctor and with two, through ``workers.generation.sample_pool``.
Ratios are against the plain decoding of the same run.

    .venv/bin/python bench/bench_doctor.py                  # real SmolLM2-135M-Instruct
    .venv/bin/python bench/bench_doctor.py --quick          # tiny random model, seconds
    .venv/bin/python bench/bench_doctor.py --write docs/benchmarks.md

``--write`` replaces this benchmark's own section of the file (or appends it).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

from _report import command_line, publish

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SECTION = "## LLMdoctor: token rewards, TFPO training, guided decoding (issue #15)"
PROMPTS = [
    "Give three tips for staying focused while studying.",
    "How do I make a good cup of coffee?",
]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def timed(fn):
    started, cpu = time.perf_counter(), time.process_time()
    value = fn()
    return value, time.perf_counter() - started, time.process_time() - cpu


def load_patient(quick: bool):
    from workers.generation import load_model

    if quick:
        from tests.tinymodels import tiny_model_dir

        return load_model(
            str(tiny_model_dir(Path(tempfile.mkdtemp(prefix="bench-doctor-")), "llama"))
        )
    return load_model("smollm2-135m-instruct")


def make_pairs(patient, args):
    import numpy as np

    from workers.doctor.pairs import pairs_from_population
    from workers.generation import sample_pool

    rng = np.random.default_rng(args.seed)
    pairs = []
    for prompt in PROMPTS:
        pool = sample_pool(patient, prompt, n=args.pool, seed=args.seed, max_new_tokens=args.max_new_tokens,
                           temperature=0.8, top_p=0.95, batch_size=args.pool)  # fmt: skip
        texts = list(dict.fromkeys(s.text.strip() for s in pool))
        pairs += pairs_from_population(
            prompt, texts, rng.normal(size=(2, len(texts))), mode="all"
        )
    return pairs


def decode_rows(patient, doctor, args):
    from workers.generation import sample_pool

    decoding = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": 0.8,
        "top_p": 0.95,
        "batch_size": args.n,
    }
    rows, baseline = [], None
    for label, guides in [
        ("plain", []),
        ("1 doctor", [(doctor, 0.7)]),
        ("2 doctors", [(doctor, 0.5), (doctor, 0.3)]),
    ]:
        alpha = 1.0 - sum(b for _, b in guides)
        samples, wall, cpu = timed(
            lambda guides=guides, alpha=alpha: sample_pool(
                patient,
                PROMPTS[0],
                n=args.n,
                seed=args.seed,
                guides=guides,
                alpha=alpha,
                **decoding,
            )
        )
        tokens = sum(s.token_count + (s.finish_reason == "stop") for s in samples)
        row = {
            "label": label,
            "tokens": tokens,
            "wall": wall,
            "cpu": cpu,
            "tps": tokens / wall,
            "cpu_tps": tokens / cpu,
        }
        baseline = baseline or row
        row["ratio"], row["cpu_ratio"] = (
            row["tps"] / baseline["tps"],
            row["cpu_tps"] / baseline["cpu_tps"],
        )
        rows.append(row)
        print(f"{label:>9}: {tokens} tokens, {row['tps']:.1f} tok/s (x{row['ratio']:.2f}), "
              f"{row['cpu_tps']:.1f} tok/CPU-s (x{row['cpu_ratio']:.2f})", flush=True)  # fmt: skip
    return rows


def run(args: argparse.Namespace) -> dict:
    import torch

    from workers.doctor.rewards import RewardConfig, score_responses
    from workers.doctor.tfpo import (
        TFPOConfig,
        doctor_key,
        prepare_examples,
        train_doctor,
    )
    from workers.generation import load_model

    load_before = os.getloadavg()
    patient = load_patient(args.quick)
    pairs = make_pairs(patient, args)
    rewards = RewardConfig()
    candidates = list(
        dict.fromkeys((p.prompt, t) for p in pairs for t in (p.chosen, p.rejected))
    )
    _, reward_wall, reward_cpu = timed(
        lambda: score_responses(patient, candidates, rewards, batch_size=8)
    )
    config = TFPOConfig(
        steps=args.steps,
        pairs_per_step=args.pairs_per_step,
        checkpoint_every=args.steps,
    )
    examples = prepare_examples(patient, pairs, rewards, config)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-doctor-run-"))
    trained, train_wall, train_cpu = timed(
        lambda: train_doctor(
            patient,
            examples,
            config,
            run_dir=run_dir,
            key=doctor_key(pairs, patient, rewards, config),
        )
    )
    print(f"rewards: {len(candidates)} candidates in {reward_wall:.1f}s; training: {args.steps} steps in "
          f"{train_wall:.1f}s = {args.steps / train_wall:.2f} steps/s", flush=True)  # fmt: skip
    doctor = load_model(str(trained.path))
    tokens_per_step = sum(
        len(e.prompt_ids) * 2 + len(e.chosen_ids) + len(e.rejected_ids)
        for e in examples
    )
    return {
        "model": patient.ref,
        "device": patient.device,
        "threads": torch.get_num_threads(),
        "pairs": len(pairs),
        "candidates": len(candidates),
        "reward": (reward_wall, reward_cpu),
        "train": (train_wall, train_cpu),
        "tokens_per_pair": tokens_per_step / len(examples),
        "loss": (trained.history[0].loss, trained.history[-1].loss),
        "decode": decode_rows(patient, doctor, args),
        "load": (load_before, os.getloadavg()),
    }


def markdown(args: argparse.Namespace, result: dict, command: str) -> str:
    import torch
    import transformers

    device = result["device"]
    if device.startswith("cuda"):
        device = f"{device} ({torch.cuda.get_device_name()})"
    reward_wall, reward_cpu = result["reward"]
    train_wall, train_cpu = result["train"]
    lines = [
        SECTION,
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}; device {device}, {result['threads']} torch "
        f"thread(s), float32; load average (1 min) {result['load'][0][0]:.1f} before, {result['load'][1][0]:.1f} "
        "after (the machine is shared)",
        f"- Versions: torch {torch.__version__}, transformers {transformers.__version__}, Python {platform.python_version()}",
        f"- Patient: `{result['model']}`; {len(PROMPTS)} prompts × pools of {args.pool} "
        f"(max_new_tokens {args.max_new_tokens}) → {result['pairs']} pairs over {result['candidates']} candidates",
        f"- Command: `{command}`",
        "",
        "| stage | work | wall s | rate | CPU s | rate per CPU-s |",
        "|---|---:|---:|---:|---:|---:|",
        f"| token rewards (2 system prompts) | {result['candidates']} candidates | {reward_wall:.1f} | "
        f"{result['candidates'] / reward_wall:.1f} candidates/s | {reward_cpu:.1f} | {result['candidates'] / reward_cpu:.1f} |",
        f"| TFPO training, LoRA r=8, {args.pairs_per_step} pairs/step (~{result['tokens_per_pair']:.0f} tokens/pair) | "
        f"{args.steps} steps | {train_wall:.1f} | {args.steps / train_wall:.2f} steps/s | {train_cpu:.1f} | "
        f"{args.steps / train_cpu:.2f} |",
        "",
        f"Training time includes building the doctor and saving it (LoRA merged). This is a timing run at the "
        f"default learning rate, not a training run: the loss of step 1's batch was {result['loss'][0]:.1f}, of step "
        f"{args.steps}'s {result['loss'][1]:.1f} (different pairs).",
        "",
        f"Guided decoding vs plain decoding of the same pool (n = {args.n} candidates, batch {args.n}, "
        f"max_new_tokens = {args.max_new_tokens}, temperature 0.8, top_p 0.95; α = 1 − Σβ). Each doctor is a "
        "full model the size of the patient (the LoRA merged), so every step runs one more forward pass per doctor:",
        "",
        "| decoding | tokens | wall s | tokens/s | ratio vs plain | tokens/CPU-s | ratio vs plain |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["decode"]:
        lines.append(
            f"| {row['label']} | {row['tokens']} | {row['wall']:.1f} | {row['tps']:.1f} | {row['ratio']:.2f}× | "
            f"{row['cpu_tps']:.1f} | {row['cpu_ratio']:.2f}× |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model instead of SmolLM2"
    )
    parser.add_argument(
        "--pool", type=int, default=6, help="samples per prompt for the pairs"
    )
    parser.add_argument("--steps", type=int, default=20, help="TFPO steps to time")
    parser.add_argument("--pairs-per-step", type=int, default=4)
    parser.add_argument("--n", type=int, default=16, help="candidates per decoding run")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write", type=Path, help="markdown file whose section to write"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("UALIGN_TORCH_THREADS", "1")
    result = run(args)
    section = markdown(args, result, command_line("bench/bench_doctor.py", argv))
    publish(section, SECTION, args.write)


if __name__ == "__main__":
    main()
