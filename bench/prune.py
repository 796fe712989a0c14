"""Minitron-style pruning of SmolLM2-135M on real rationales: importance-based cuts vs naive ones.

Teacher: the embedded SmolLM2-135M-Instruct (fp32, CPU). Calibration: PaLM-540B chain-of-thought
rationales of CommonsenseQA *train* questions (the Distilling Step-by-Step release, under
shared/data/cqa_palm), each "Q: … Answer Choices: … A:" + the rationale, 1,024 drawn with seed 0 —
what a run directory of this teacher's rationales gives `cotfactory prune --calibration RUN`.
Held out: the PaLM rationales of the first CommonsenseQA *test* questions.

1. Cost: one calibration pass scores every block, head, neuron and channel (its time, tokens/s), then
   each cut is planned and sliced (its time); pruning time = pass + slice.
2. Quality right after pruning, no retraining: the mean NLL of the held-out rationale tokens given their
   question, for the teacher and for each cut at equal parameter count —
   depth: block importance vs evenly spaced layers (every other layer at 15 of 30; 11 of 30 ≈ 50 %);
   width (≈ 50 % of the parameters: hidden channels, MLP neurons, query heads per KV group):
   activation importance vs random channels of the same sizes (3 seeds, mean).
   Ratios are importance / naive NLL (below 1 = the importance cut keeps more of the teacher).

    python bench/prune.py [--samples 1024] [--heldout 64] [--batch-size 16] [--max-length 256]
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CQA = ROOT.parent / "shared" / "data" / "cqa_palm"
sys.path.insert(0, str(ROOT))

SHARD = 1000  # element j of llm/{split}_CoT_{i}.json belongs to example i * 1000 + j


def cqa_rationales(split: str) -> list[tuple[str, str]]:
    """(prompt, rationale) of every example of ``split`` whose PaLM completion is present."""
    examples = [json.loads(line) for line in (CQA / f"cqa_{split}.json").read_text().splitlines() if line.strip()]
    completions: dict[int, str] = {}
    for shard in sorted((CQA / "llm").glob(f"{split}_CoT_*.json")):
        start = int(shard.stem.rsplit("_", 1)[1]) * SHARD
        for offset, text in enumerate(json.loads(shard.read_text())):
            completions[start + offset] = text.split("\n\nQ:")[0].strip()
    pairs = []
    for index, example in enumerate(examples):
        rationale = completions.get(index, "")
        if not rationale:
            continue
        choices = "\n".join(f"({'abcde'[i]}) {choice}" for i, choice in enumerate(example["choices"]))
        pairs.append((f"Q: {example['question']}\nAnswer Choices:\n{choices}\nA:", rationale))
    return pairs


def heldout_nll(model: Any, tokenizer: Any, pairs: list[tuple[str, str]], batch_size: int) -> float:
    """Mean NLL (nats/token) of the rationale tokens given their prompt."""
    import torch
    import torch.nn.functional as F

    rows = []
    for prompt, rationale in pairs:
        head = tokenizer(prompt)["input_ids"]
        tail = tokenizer(" " + rationale, add_special_tokens=False)["input_ids"]
        rows.append((head + tail, len(head)))
    total, count = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            width = max(len(ids) for ids, _ in chunk)
            ids = torch.zeros(len(chunk), width, dtype=torch.long)
            mask = torch.zeros(len(chunk), width, dtype=torch.long)
            labels = torch.full((len(chunk), width), -100, dtype=torch.long)
            for row, (tokens, prompt_len) in enumerate(chunk):
                ids[row, : len(tokens)] = torch.tensor(tokens)
                mask[row, : len(tokens)] = 1
                labels[row, prompt_len : len(tokens)] = torch.tensor(tokens[prompt_len:])
            logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
            target = labels[:, 1:]
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1), reduction="sum")
            total += float(loss)
            count += int((target != -100).sum())
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=1024, help="calibration samples (CQA train)")
    parser.add_argument("--heldout", type=int, default=64, help="held-out rationales (CQA test)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256)
    parser.add_argument("--width", type=float, default=0.5, help="share of parameters kept by the width cut")
    parser.add_argument("--random-seeds", type=int, default=3, help="draws of the random width baseline")
    args = parser.parse_args()

    import torch

    from cotfactory.model_loading import load_causal_lm, load_tokenizer, quiet_transformers, resolve_model_path
    from cotfactory.students.prune import (
        Shape,
        apply_plan,
        depth_plan,
        estimate_importance,
        evenly_spaced_plan,
        parameter_count,
        random_width_plan,
        width_plan,
    )

    quiet_transformers()
    torch.manual_seed(0)
    location = resolve_model_path("embedded")
    tokenizer = load_tokenizer(location)
    teacher = load_causal_lm(location, "cpu", "float32")
    shape = Shape.of(teacher.config)
    before = parameter_count(teacher)

    train = cqa_rationales("train")
    calibration = [f"{prompt}\n{rationale}" for prompt, rationale in random.Random(0).sample(train, args.samples)]
    heldout = cqa_rationales("test")[: args.heldout]
    print(
        f"teacher: SmolLM2-135M-Instruct, {before / 1e6:.1f}M parameters, {shape.layers} layers, hidden "
        f"{shape.hidden}, MLP {shape.intermediate}, {shape.heads} query heads in {shape.kv_heads} KV groups; "
        f"torch {torch.get_num_threads()} threads",
        flush=True,
    )

    started = time.perf_counter()
    importance = estimate_importance(teacher, tokenizer, calibration, args.max_length, args.batch_size)
    scored = time.perf_counter() - started
    print(
        f"calibration pass: {importance.samples} CQA-train PaLM rationales, {importance.tokens} tokens "
        f"(cut at {args.max_length}), batch {args.batch_size}: {scored:.1f} s ({importance.tokens / scored:.0f} tok/s)"
    )
    if importance.samples < 1024:
        per_sample = importance.tokens / importance.samples
        extrapolated = 1024 * per_sample * scored / importance.tokens
        print(
            f"  1,024 samples at this rate ({per_sample:.0f} tokens each): ~{extrapolated:.0f} s "
            "(extrapolated: this run was reduced)"
        )
    order = importance.blocks.argsort().tolist()
    print(f"  block importance, least first: {order[:8]} … {order[-4:]}")

    teacher_nll = heldout_nll(teacher, tokenizer, heldout, args.batch_size)
    print(f"held out: {len(heldout)} CQA-test PaLM rationales; teacher NLL {teacher_nll:.3f} nats/token", flush=True)

    def measured(plan: Any) -> tuple[float, float, float]:
        """(NLL, share of parameters kept, seconds to plan and slice)."""
        begun = time.perf_counter()
        student = apply_plan(teacher, plan)
        seconds = time.perf_counter() - begun
        return heldout_nll(student, tokenizer, heldout, args.batch_size), parameter_count(student) / before, seconds

    print("cut                              params  held-out NLL  vs naive  prune time (pass + slice)")
    for keep in (shape.layers // 2, 11):
        began = time.perf_counter()
        plan = depth_plan(shape, importance, keep)
        planning = time.perf_counter() - began
        ranked_nll, kept, slicing = measured(plan)
        naive_nll, _, _ = measured(evenly_spaced_plan(shape, keep))
        label = "every other" if keep * 2 == shape.layers else "evenly spaced"
        print(
            f"depth {keep:2d}/{shape.layers}: block importance      {kept:6.1%}  {ranked_nll:12.3f}  "
            f"{ranked_nll / naive_nll:8.3f}  {scored + planning + slicing:.1f} s"
        )
        print(f"depth {keep:2d}/{shape.layers}: {label:<20} {kept:6.1%}  {naive_nll:12.3f}  {1:8.3f}")
        print(f"  layers kept by importance: {plan.layers}", flush=True)

    began = time.perf_counter()
    plan = width_plan(teacher, importance, args.width)
    planning = time.perf_counter() - began
    ranked_nll, kept, slicing = measured(plan)
    naive = [measured(random_width_plan(teacher, args.width, seed)) for seed in range(args.random_seeds)]
    naive_nll = sum(nll for nll, _, _ in naive) / len(naive)
    spread = max(nll for nll, _, _ in naive) - min(nll for nll, _, _ in naive)
    sizes = plan.sizes(shape.head_dim)
    print(
        f"width {args.width:.2f}: activation importance {kept:6.1%}  {ranked_nll:12.3f}  "
        f"{ranked_nll / naive_nll:8.3f}  {scored + planning + slicing:.1f} s"
    )
    print(
        f"width {args.width:.2f}: random channels      {naive[0][1]:6.1%}  {naive_nll:12.3f}  {1:8.3f}"
        f"  (mean of {len(naive)} seeds, range {spread:.3f})"
    )
    print(
        f"  width shape: hidden {shape.hidden}→{sizes['hidden']}, MLP {shape.intermediate}→{sizes['ffn']}, "
        f"query heads {shape.heads}→{sizes['query'] // shape.head_dim} ({shape.kv_heads} KV groups kept)"
    )
    print(
        f"perplexity right after pruning (exp NLL): teacher {math.exp(teacher_nll):.1f}; "
        f"width importance {math.exp(ranked_nll):.1f} vs random {math.exp(naive_nll):.1f}"
    )


if __name__ == "__main__":
    main()
