"""Generation throughput: batched sampling vs one candidate at a time, in one run.

Samples the same pool (same prompt, seed and indices) with ``batch_size=1`` (the baseline)
and with each requested batch size, through ``workers.generation.sample_pool``, and reports
generated tokens per second (stop tokens included: they cost a forward step too), the speed-up
against the baseline of the same run, and how many texts match the baseline's exactly.

    .venv/bin/python bench/bench_generation.py                  # real SmolLM2-135M-Instruct
    .venv/bin/python bench/bench_generation.py --quick          # tiny random model, seconds
    .venv/bin/python bench/bench_generation.py --write docs/benchmarks.md

``--write`` replaces this benchmark's own section of the file (or appends it), leaving the
other sections alone.
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

SECTION = "## Generation throughput (issue #4)"
PROMPT = "Give three tips for staying focused while studying."


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run(args: argparse.Namespace) -> dict:
    from workers.generation import generation_metadata, load_model, sample_pool

    if args.quick:
        from tests.tinymodels import tiny_model_dir

        handle = load_model(
            str(tiny_model_dir(Path(tempfile.mkdtemp(prefix="bench-tiny-")), "llama"))
        )
    else:
        handle = load_model("smollm2-135m-instruct")
    import torch

    decoding = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
    }
    sample_pool(
        handle, PROMPT, n=2, seed=args.seed + 1, max_new_tokens=4, batch_size=2
    )  # warm-up
    rows = []
    baseline = None
    load_before = os.getloadavg()
    for batch_size in [1, *args.batch_sizes]:
        started, cpu_started = time.perf_counter(), time.process_time()
        samples = sample_pool(
            handle, PROMPT, n=args.n, seed=args.seed, batch_size=batch_size, **decoding
        )
        seconds, cpu_seconds = (
            time.perf_counter() - started,
            time.process_time() - cpu_started,
        )
        tokens = sum(s.token_count + (s.finish_reason == "stop") for s in samples)
        texts = [s.text for s in samples]
        if baseline is None:
            baseline = {
                "tps": tokens / seconds,
                "cpu_tps": tokens / cpu_seconds,
                "texts": texts,
            }
        rows.append(
            {
                "batch_size": batch_size,
                "seconds": seconds,
                "tokens": tokens,
                "tps": tokens / seconds,
                "ratio": tokens / seconds / baseline["tps"],
                "cpu_seconds": cpu_seconds,
                "cpu_tps": tokens / cpu_seconds,
                "cpu_ratio": tokens / cpu_seconds / baseline["cpu_tps"],
                "same_texts": sum(
                    a == b for a, b in zip(texts, baseline["texts"], strict=True)
                ),
            }
        )
        print(
            f"batch {batch_size:>3}: {tokens} tokens in {seconds:.1f}s = {tokens / seconds:.1f} tok/s "
            f"(x{rows[-1]['ratio']:.2f}); {cpu_seconds:.1f} CPU s (x{rows[-1]['cpu_ratio']:.2f}); "
            f"texts equal to baseline {rows[-1]['same_texts']}/{args.n}",
            flush=True,
        )
    meta = generation_metadata(handle, seed=args.seed, **decoding)
    return {
        "rows": rows,
        "meta": meta,
        "threads": torch.get_num_threads(),
        "model": handle.ref,
        "load": (load_before, os.getloadavg()),
    }


def markdown(args: argparse.Namespace, result: dict, command: str) -> str:
    meta = result["meta"]
    device = meta["device"]
    if device.startswith("cuda"):
        import torch

        device = f"{device} ({torch.cuda.get_device_name()})"
    lines = [
        SECTION,
        "",
        f"- Date: {datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- Machine: {os.cpu_count()} CPUs (`nproc`), {cpu_model()}; device {device}, "
        f"{result['threads']} torch thread(s), dtype {meta['dtype']}; load average (1 min) "
        f"{result['load'][0][0]:.1f} before, {result['load'][1][0]:.1f} after (the machine is shared)",
        f"- Versions: torch {meta['versions']['torch']}, transformers {meta['versions']['transformers']}, "
        f"Python {meta['versions']['python']}",
        f"- Model: `{result['model']}`; prompt {PROMPT!r} through the chat template; "
        f"n = {args.n} candidates, max_new_tokens = {args.max_new_tokens}, temperature = {args.temperature}, "
        f"top_p = {args.top_p}, seed = {args.seed}",
        f"- Command: `{command}`",
        "",
        "Tokens/s counts generated tokens (stop tokens included) over the wall time of the whole",
        "pool; ratios are against the one-at-a-time run (batch size 1) measured in the same",
        "process just before. Other jobs share these CPUs, so the table also gives tokens per",
        "CPU-second of this process (one torch thread), which contention affects less.",
        '"Same texts" counts candidates whose text equals the one-at-a-time run\'s (per-candidate',
        "seeds make them equal unless float rounding that differs between batch shapes flips a",
        "sampled token; see the `workers/generation` package docstring).",
        "",
        "| batch size | tokens | wall s | tokens/s | ratio vs batch 1 | CPU s | tokens/CPU-s | ratio vs batch 1 | same texts as batch 1 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['batch_size']} | {row['tokens']} | {row['seconds']:.1f} | {row['tps']:.1f} | "
            f"{row['ratio']:.2f}× | {row['cpu_seconds']:.1f} | {row['cpu_tps']:.1f} | {row['cpu_ratio']:.2f}× | "
            f"{row['same_texts']}/{args.n} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick", action="store_true", help="tiny random model instead of SmolLM2"
    )
    parser.add_argument("--n", type=int, default=16, help="candidates per run")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument(
        "--batch-sizes", type=lambda s: [int(x) for x in s.split(",")], default=[8, 16]
    )
    parser.add_argument("--temperature", type=float, default=0.8)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--write", type=Path, help="markdown file whose section to write"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("UALIGN_TORCH_THREADS", "1")
    result = run(args)
    section = markdown(args, result, command_line("bench/bench_generation.py", argv))
    publish(section, SECTION, args.write)


if __name__ == "__main__":
    main()
