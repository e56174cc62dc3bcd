"""Candidate pipeline seconds per prompt for pool sizes N = 16 and N = 64 (issue #4).

Runs the four step tasks in this process (no broker), on a throwaway SQLite database, for a
study of the demo configuration: the shipped SmolLM2-135M-Instruct as generator and persona
judge (2 personas), five policies (sample, best_of_n, nlhf, ctrl, multiplayer), k = 1, 2, 4,
m = 1, 1 replicate, 10% attention checks. Reports seconds per prompt for each step and the
N = 64 / N = 16 ratio measured in the same run. `--quick` uses a tiny random model instead
(exercises the code path in seconds; its figures say nothing about real models).

    .venv/bin/python bench/bench_pipeline.py [--prompts 2] [--max-new-tokens 32] [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

PROMPTS = [
    "Give me one tip for brewing green tea.",
    "Explain in two sentences why the sky is blue.",
    "Suggest a name for a small bakery.",
    "How do I politely decline a meeting?",
]
PERSONAS = ["A tea master who values precision.", "A busy student who wants short answers."]
STEPS = [("generate", "generate_candidates"), ("populate", "build_populations"), ("fit", "fit_policies"),
         ("build_items", "build_items")]


def setup_django(folder: str) -> None:
    os.environ["DATABASE_URL"] = f"sqlite:///{folder}/bench.sqlite3"
    os.environ["UALIGN_VAR_DIR"] = os.environ.get("UALIGN_VAR_DIR", str(ROOT / "var"))
    os.environ.pop("REDIS_URL", None)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "ualign_web.settings")
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)


def run_study(n: int, args, model_ref: str) -> dict[str, float]:
    from studies import services, tasks
    from studies.models import GeneratorModel, Policy, PreferenceSource, Prompt, Study

    generator = GeneratorModel.objects.create(
        name=f"gen-{n}", model_ref=model_ref, batch_size=8,
        decoding={"max_new_tokens": args.max_new_tokens, "temperature": 1.0},
    )
    study = Study.objects.create(slug=f"bench-{n}", title=f"N={n}", consent_text="-", generator=generator,
                                 pool_size=n, k_values=[1, 2, 4], attention_check_rate=0.1)
    for text in PROMPTS[: args.prompts]:
        Prompt.objects.create(study=study, text=text)
    for kind in ("sample", "best_of_n", "nlhf", "ctrl", "multiplayer"):
        Policy.objects.create(study=study, name=kind, kind=kind)
    PreferenceSource.objects.create(study=study, kind="persona_judge", params={"model": model_ref, "personas": PERSONAS})
    with mock.patch.object(tasks, "enqueue_step"):  # run the steps here, not through a broker
        parent = services.prepare_study(study=study)
        seconds = {}
        for kind, name in STEPS:
            started = time.perf_counter()
            getattr(tasks, name)(parent.steps.get(kind=kind).pk)
            seconds[kind] = (time.perf_counter() - started) / args.prompts
    study.refresh_from_db()
    assert study.status == "ready", parent.steps.values_list("kind", "error")
    seconds["total"] = sum(seconds.values())
    tokens = parent.steps.get(kind="generate").result["tokens"]
    seconds["tokens_per_prompt"] = tokens / args.prompts
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=2)
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="tiny random model instead of SmolLM2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        setup_django(folder)
        if args.quick:
            from tests.tinymodels import tiny_model_dir

            model_ref = str(tiny_model_dir(Path(folder) / "tiny"))
        else:
            from workers.generation import DEMO_CHAT_MODEL, load_model

            model_ref = DEMO_CHAT_MODEL
            load_model(model_ref)  # load (and convert, once) before timing
        results = {n: run_study(n, args, model_ref) for n in (16, 64)}
    import torch

    print(f"# bench_pipeline: {platform.node()} · {platform.processor() or platform.machine()} · "
          f"{os.cpu_count()} CPUs · torch {torch.__version__}, {torch.get_num_threads()} thread(s) · "
          f"{time.strftime('%Y-%m-%d')}")
    print(f"# model {model_ref if not args.quick else 'tiny random llama'} · {args.prompts} prompts · "
          f"max_new_tokens {args.max_new_tokens} · persona judge with {len(PERSONAS)} personas · 5 policies · k 1,2,4")
    print(f"{'seconds per prompt':<20}{'N = 16':>10}{'N = 64':>10}{'64 / 16':>10}")
    for key in ["generate", "populate", "fit", "build_items", "total", "tokens_per_prompt"]:
        a, b = results[16][key], results[64][key]
        print(f"{key:<20}{a:>10.2f}{b:>10.2f}{b / a:>10.2f}")


if __name__ == "__main__":
    main()
