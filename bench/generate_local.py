"""Local hf teacher throughput: batched per-row sampling vs a per-prompt `model.generate` loop.

Both decode the same SmolLM2-135M (the embedded GGUF, dequantized to fp32) on the same prompts;
tokens/s counts generated tokens. Target: >= 3 x the loop. Also prints the fraction of this
machine's measured matmul roofline reached (~0.27 GFLOP per token for SmolLM2-135M).

    python bench/generate_local.py [--prompts 32] [--max-tokens 64] [--batch-size 32] [--baseline 6]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FLOP_PER_TOKEN = 2 * 135e6  # 2 x parameters, the usual forward-pass estimate


def machine_gflops() -> float:
    """Measured fp32 matmul throughput of this machine (the roofline for decoding compute)."""
    import torch

    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    for _ in range(3):
        a @ b
    started, reps = time.perf_counter(), 20
    for _ in range(reps):
        a @ b
    return 2 * 1024**3 * reps / (time.perf_counter() - started) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=32)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--baseline", type=int, default=6, help="prompts decoded by the per-prompt loop")
    args = parser.parse_args()

    import torch

    from cotfactory.config.generate import GenerateConfig
    from cotfactory.plan import Plan, SamplingGrid
    from cotfactory.problems import load_problems
    from cotfactory.prompts import load_template
    from cotfactory.teachers.hf import HFTeacher

    problems = load_problems("gsm8k", ROOT / "data" / "gsm8k" / "train_sample.jsonl", limit=args.prompts // 4)
    config = GenerateConfig(input="-", out="-", teacher="hf", batch_size=args.batch_size)
    teacher = HFTeacher(config.teacher)
    plan = Plan(
        problems,
        [load_template("zero-shot-cot")],
        SamplingGrid([0.7], [1, 2, 3, 4], 1, 1.0, args.max_tokens),
        "hf",
        teacher.model_label,
    )
    requests = list(plan.requests())
    model, tokenizer = teacher.model, teacher.tokenizer

    # baseline: one prompt at a time through plain `model.generate` with sampling
    tokens, started = 0, time.perf_counter()
    for request in requests[: args.baseline]:
        ids = tokenizer(teacher.prompt_text(request.prompt), return_tensors="pt", add_special_tokens=False)
        torch.manual_seed(request.sample_seed)
        with torch.inference_mode():
            out = model.generate(
                **ids,
                max_new_tokens=args.max_tokens,
                do_sample=True,
                temperature=0.7,
                pad_token_id=tokenizer.pad_token_id,
            )
        tokens += out.shape[1] - ids["input_ids"].shape[1]
    loop_tps = tokens / (time.perf_counter() - started)

    async def batched() -> int:
        count = 0
        async for samples in teacher.generate(iter(requests)):
            count += sum(s.completion_tokens for s in samples)
        return count

    started = time.perf_counter()
    tokens = asyncio.run(batched())
    batched_tps = tokens / (time.perf_counter() - started)
    gflops = machine_gflops()
    roofline_tps = gflops * 1e9 / FLOP_PER_TOKEN
    print(f"per-prompt generate loop : {loop_tps:7.1f} tok/s ({args.baseline} prompts)")
    print(
        f"cotfactory hf teacher    : {batched_tps:7.1f} tok/s ({len(requests)} prompts, batch {args.batch_size}) "
        f"= {batched_tps / loop_tps:.1f} x the loop"
    )
    print(
        f"machine matmul roofline  : {gflops:.0f} GFLOP/s = {roofline_tps:.0f} tok/s at "
        f"{FLOP_PER_TOKEN / 1e9:.2f} GFLOP/token; batched decoding reaches {batched_tps / roofline_tps:.1%}"
    )


if __name__ == "__main__":
    main()
