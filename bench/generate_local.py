"""Local hf teacher throughput against plain Hugging Face batched ``generate``, on the factory's grids.

Workload: GSM8K problems (data/gsm8k/train_sample.jsonl) × two templates — few-shot-cot-gsm8k (4
exemplars, ~860 shared prompt tokens) and zero-shot-cot — decoded by the embedded SmolLM2-135M
(GGUF dequantized to fp32), max_tokens 64, on two grids:
- multi-sample: 2 temperatures × 2 seeds (4 samples of every prompt);
- 1-sample: temperature 0.7, seed 1.

Three decoders on the same requests, in batches of --batch-size:
- plain HF: ``model.generate(do_sample=True)``, left padding, batches sorted by prompt length and split
  by temperature (one temperature per ``generate`` call): what a user would write;
- before: the hf teacher as it was — ``model.generate`` greedy over a per-row sampling logits processor;
- cotfactory: the hf teacher now (``decoders.shared_prefix``: shared prefix and each distinct prompt
  prefilled once, finished rows dropped).
Prints generated tokens/s of each, the ratios (targets: >= 2 x plain HF on the multi-sample grid, >= 1.2 x
on the 1-sample grid), prompt tokens prefilled vs sent, the fraction of this machine's measured matmul
roofline, and how many texts "before" and "cotfactory" share (same seeds: they should all match).

    python bench/generate_local.py [--problems 8] [--max-tokens 64] [--batch-size 32]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import former_hf_samples  # noqa: E402  the former decoding, the reference the tests use too

FLOP_PER_TOKEN = 2 * 135e6  # 2 x parameters, the usual forward-pass estimate
TEMPLATES = ["few-shot-cot-gsm8k", "zero-shot-cot"]
GRIDS = {"multi-sample (2 T x 2 seeds)": ([0.7, 1.0], [1, 2]), "1-sample": ([0.7], [1])}


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


def plain_hf(teacher: Any, requests: list[Any], batch_size: int) -> int:
    """Plain batched ``generate`` with HF's own sampling; returns generated tokens (up to EOS)."""
    import torch

    tokenizer, model = teacher.tokenizer, teacher.model
    encoded = sorted(
        ((r, teacher._encode(r.prompt)) for r in requests), key=lambda item: (item[0].temperature, len(item[1]))
    )
    tokens = 0
    for temperature, group in itertools.groupby(encoded, key=lambda item: item[0].temperature):
        members = list(group)
        for start in range(0, len(members), batch_size):
            batch = members[start : start + batch_size]
            padded = tokenizer.pad({"input_ids": [ids for _, ids in batch]}, return_tensors="pt")
            torch.manual_seed(batch[0][0].sample_seed)
            with torch.inference_mode():
                out = model.generate(
                    **padded,
                    max_new_tokens=batch[0][0].max_tokens,
                    do_sample=True,
                    temperature=temperature,
                    top_p=1.0,
                    top_k=None,
                    pad_token_id=tokenizer.pad_token_id,
                    stop_strings=list(batch[0][0].prompt.stop) or None,
                    tokenizer=tokenizer,
                )
            width, stop = padded["input_ids"].shape[1], list(batch[0][0].prompt.stop)
            tokens += sum(
                teacher._to_sample(r, len(ids), row, stop, 0.0).completion_tokens
                for (r, ids), row in zip(batch, out[:, width:].tolist(), strict=True)
            )
    return tokens


def before(teacher: Any, requests: list[Any], batch_size: int) -> dict[str, tuple[str, int]]:
    """The hf teacher as it was: batches sorted by prompt length, HF ``generate`` + per-row sampling."""
    ordered = sorted(requests, key=lambda r: len(teacher._encode(r.prompt)))
    texts = {}
    for start in range(0, len(ordered), batch_size):
        for sample in former_hf_samples(teacher, ordered[start : start + batch_size]):
            texts[sample.key] = (sample.text, sample.completion_tokens)
    return texts


def cotfactory(teacher: Any, requests: list[Any]) -> dict[str, tuple[str, int]]:
    async def collect() -> dict[str, tuple[str, int]]:
        out = {}
        async for samples in teacher.generate(iter(requests)):
            out.update({s.key: (s.text, s.completion_tokens) for s in samples})
        return out

    return asyncio.run(collect())


def timed(function: Any, *args: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    result = function(*args)
    return result, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--grids", default=",".join(GRIDS), help="comma-separated: " + ", ".join(GRIDS))
    args = parser.parse_args()

    from cotfactory.config.generate import GenerateConfig
    from cotfactory.plan import Plan, SamplingGrid
    from cotfactory.problems import load_problems
    from cotfactory.prompts import load_template
    from cotfactory.teachers.hf import HFTeacher

    problems = load_problems("gsm8k", ROOT / "data" / "gsm8k" / "train_sample.jsonl", limit=args.problems)
    config = GenerateConfig(input="-", out="-", teacher="hf", batch_size=args.batch_size)
    teacher = HFTeacher(config.teacher)
    templates = [load_template(name) for name in TEMPLATES]
    roofline_tps = machine_gflops() * 1e9 / FLOP_PER_TOKEN
    print(
        f"SmolLM2-135M fp32, {args.problems} GSM8K problems x {', '.join(TEMPLATES)}, max_tokens {args.max_tokens}, "
        f"batch {args.batch_size}; roofline {roofline_tps:.0f} tok/s at {FLOP_PER_TOKEN / 1e9:.2f} GFLOP/token"
    )
    for label in args.grids.split(","):
        temperatures, seeds = GRIDS[label]
        grid = SamplingGrid(temperatures, seeds, 1, 1.0, args.max_tokens)
        requests = list(Plan(problems, templates, grid, "hf", teacher.model_label).requests())
        for decode in (plain_hf, before):  # warm: first calls build HF's stop-string tables, allocate, …
            decode(teacher, requests[:2], args.batch_size)
        cotfactory(teacher, requests[:2])
        plain_tokens, plain_s = timed(plain_hf, teacher, requests, args.batch_size)
        old, old_s = timed(before, teacher, requests, args.batch_size)
        teacher.prompt_tokens = teacher.prefilled_tokens = 0
        new, new_s = timed(cotfactory, teacher, requests)
        old_tps = sum(n for _, n in old.values()) / old_s
        new_tps = sum(n for _, n in new.values()) / new_s
        plain_tps = plain_tokens / plain_s
        same = sum(old[k] == new[k] for k in new)
        print(f"{label}: {len(requests)} requests")
        print(f"  plain HF batched generate : {plain_tps:7.1f} tok/s")
        print(f"  hf teacher before         : {old_tps:7.1f} tok/s = {old_tps / plain_tps:.2f} x plain HF")
        print(
            f"  hf teacher (shared prefix): {new_tps:7.1f} tok/s = {new_tps / plain_tps:.2f} x plain HF, "
            f"{new_tps / old_tps:.2f} x before; {new_tps / roofline_tps:.1%} of the roofline; prefilled "
            f"{teacher.prefilled_tokens} of {teacher.prompt_tokens} prompt tokens "
            f"({teacher.prefilled_tokens / max(teacher.prompt_tokens, 1):.2f})"
        )
        print(f"  identical texts, before vs shared prefix: {same}/{len(new)}")


if __name__ == "__main__":
    main()
