"""Cost of SCOTT contrastive decoding vs plain greedy decoding of the same length, on SmolLM2-135M.

Both decode 8 short CommonsenseQA-like rationales for exactly 48 tokens each (EOS disabled): plain is
one left-padded ``model.generate`` over the 8 gold-answer prompts; contrastive is
``contrastive_generate`` over the 8 (gold, perturbed) prompt pairs, i.e. 16 sequences per step. Both
are measured in this run, after one warm-up each; the best of ``--repeats`` counts.
Target: contrastive / plain <= 2.2 x.

    python bench/contrastive.py [--max-tokens 48] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

TARGET_RATIO = 2.2
# (question, choices, gold letter, perturbed letter)
PROBLEMS = [
    ("Where do people go to read books?", ["ocean", "library", "stadium"], "b", "a"),
    ("What do you use to cut paper?", ["scissors", "spoon", "pillow"], "a", "c"),
    ("Where would you keep milk cold?", ["oven", "drawer", "refrigerator"], "c", "a"),
    ("What do plants need to grow?", ["sunlight", "darkness", "plastic"], "a", "b"),
    ("Where does a pilot work?", ["submarine", "airplane", "bakery"], "b", "c"),
    ("What do people wear on their feet?", ["hats", "gloves", "shoes"], "c", "b"),
    ("What happens to ice in the sun?", ["it melts", "it grows", "it sings"], "a", "b"),
    ("Where do fish live?", ["desert", "water", "tree"], "b", "a"),
]


def prompt(question: str, choices: list[str], letter: str) -> str:
    options = " ".join(f"({chr(ord('a') + i)}) {c}" for i, c in enumerate(choices))
    answer = choices[ord(letter) - ord("a")]
    return f"Q: {question} Answer Choices: {options}\nA: The answer is ({letter}) {answer}. Because"


def best_of(repeats: int, run: Callable[[], Any]) -> float:
    run()  # warm-up: first-call allocations and kernel selection
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--max-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    import torch

    from cotfactory.decoders.contrastive import ContrastiveRow, contrastive_generate
    from cotfactory.model_loading import load_causal_lm, load_tokenizer, quiet_transformers, resolve_model_path

    quiet_transformers()
    location = resolve_model_path(None)
    model, tokenizer = load_causal_lm(location, "cpu", "float32"), load_tokenizer(location)
    tokenizer.padding_side = "left"
    targets = [tokenizer(prompt(q, c, gold))["input_ids"] for q, c, gold, _ in PROBLEMS]
    contrasts = [tokenizer(prompt(q, c, wrong))["input_ids"] for q, c, _, wrong in PROBLEMS]
    padded = tokenizer.pad({"input_ids": targets}, return_tensors="pt")
    rows = [
        ContrastiveRow(target_ids=t, contrast_ids=c, temperature=0.0, top_p=1.0, seed=0, max_tokens=args.max_tokens)
        for t, c in zip(targets, contrasts, strict=True)
    ]

    def plain() -> Any:
        with torch.inference_mode():
            return model.generate(
                **padded,
                do_sample=False,
                temperature=None,
                top_p=None,
                top_k=None,
                min_new_tokens=args.max_tokens,
                max_new_tokens=args.max_tokens,
                pad_token_id=tokenizer.pad_token_id,
            )

    def contrastive() -> Any:
        outputs = contrastive_generate(model, tokenizer, rows, eos_token_ids=[])
        assert all(len(o.token_ids) == args.max_tokens for o in outputs)
        return outputs

    plain_s = best_of(args.repeats, plain)
    contrastive_s = best_of(args.repeats, contrastive)
    ratio = contrastive_s / plain_s
    print(f"SmolLM2-135M, {len(rows)} problems x {args.max_tokens} tokens, greedy, {torch.get_num_threads()} threads")
    print(f"plain model.generate      : {plain_s:6.2f} s")
    print(f"contrastive_generate      : {contrastive_s:6.2f} s")
    print(f"contrastive / plain = {ratio:.2f} x (target <= {TARGET_RATIO} x)")


if __name__ == "__main__":
    main()
