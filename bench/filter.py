"""Filtering at scale, and reward scoring speed.

Prints, measured in this one run:
- `cotfactory filter --consistency 0.5 --dedup 0.9` over 100k samples (10k problems x 10): time and
  peak memory, against the same filter over 10k samples — flat memory means the 100k run peaks
  near the 10k one (memory is bounded by one problem's samples, not by the run);
- reward-model scoring (SmolLM2-135M body with a fresh score head as a stand-in reward model):
  samples/s batched vs one sample at a time;
- answer-gain scoring on SmolLM2: samples/s and tokens/s.

    python bench/filter.py [--samples 100000] [--skip-scoring]
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

WORDS = [
    "apples",
    "eggs",
    "boxes",
    "dollars",
    "each",
    "more",
    "left",
    "total",
    "so",
    "then",
    "we",
    "have",
    "buy",
    "sell",
    "add",
    "take",
]


def make_run(run_dir: Path, problems: int, per_problem: int, seed: int = 0) -> None:
    """A synthetic run directory: store + samples.jsonl, as `generate` would leave it."""
    from helpers import make_sample

    from cotfactory.export import sample_row
    from cotfactory.records import Problem, Sample
    from cotfactory.run_dir import write_jsonl_atomic
    from cotfactory.store import Store

    rng = random.Random(seed)
    run_dir.mkdir(parents=True)
    rows = []
    with Store.in_run(run_dir) as store:
        batch: list[Sample] = []
        for p in range(problems):
            problem = Problem(
                id=f"p{p}", question=f"What is {p} plus {p + 1}?", gold=str(2 * p + 1), answer_type="number"
            )
            store.put_problems([problem])
            for i in range(per_problem):
                answer = str(2 * p + 1) if rng.random() < 0.6 else str(rng.randint(0, 9))
                words = " ".join(rng.choice(WORDS) for _ in range(30))
                text = f"{words} {p} + {p + 1} = {answer}. The answer is {answer}."
                sample = make_sample(
                    answer, text, completion_tokens=40, problem_id=problem.id, model="synthetic", seed=i, max_tokens=128
                )
                batch.append(sample)
                rows.append(sample_row(sample, problem))
            if len(batch) >= 2000:
                store.add_samples(batch)
                batch.clear()
        store.add_samples(batch)
        store.set_meta("config", {"templates": ["zero-shot-cot"]})
    write_jsonl_atomic(run_dir / "samples.jsonl", rows)


def filter_peak(run_dir: Path) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of `cotfactory filter` in its own process."""
    code = (
        "import resource, sys, time; from cotfactory.cli import app; t = time.perf_counter();\n"
        "try:\n    app(sys.argv[1:] + ['--consistency', '0.5', '--dedup', '0.9'], standalone_mode=False)\n"
        "finally:\n    print(time.perf_counter() - t, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, "filter", str(run_dir)], capture_output=True, text=True, check=True, cwd=ROOT
    )
    seconds, peak = out.stdout.split()[-2:]
    return float(seconds), float(peak)


def scoring(batch_size: int, count: int) -> None:
    import torch
    from helpers import make_sample

    from cotfactory.config.filter import FilterConfig
    from cotfactory.model_loading import resolve_model_path
    from cotfactory.records import Problem
    from cotfactory.scorers.answer_gain import AnswerGainScorer
    from cotfactory.scorers.base import ScoreItem
    from cotfactory.scorers.reward_model import RewardModelScorer

    smollm2 = resolve_model_path(None)
    rm_dir = Path(tempfile.mkdtemp()) / "smollm2-rm"
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(smollm2, num_labels=1)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    rm.config.pad_token_id = tokenizer.pad_token_id
    rm.save_pretrained(rm_dir)
    tokenizer.save_pretrained(rm_dir)

    rng = random.Random(0)
    items = []
    for i in range(count):
        problem = Problem(
            id=f"q{i}",
            question=f"Tom has {i} apples and buys {i + 3} more. How many apples?",
            gold=str(2 * i + 3),
            answer_type="number",
        )
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(20, 60)))
        text = f"Tom starts with {i} apples, {words}, so {i} + {i + 3} = {2 * i + 3}."
        items.append(ScoreItem(problem, make_sample(str(2 * i + 3), text, problem_id=problem.id, teacher="hf", seed=i)))

    rm_scorer = RewardModelScorer(FilterConfig(run_dir="-", reward=str(rm_dir), reward_batch_size=batch_size))
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        rm_scorer.score(items[start : start + batch_size])
    batched = count / (time.perf_counter() - started)
    started = time.perf_counter()
    for item in items[: max(4, count // 4)]:
        rm_scorer.score([item])
    single = max(4, count // 4) / (time.perf_counter() - started)
    print(
        f"reward model (135M): batched ({batch_size}) {batched:6.1f} samples/s vs one at a time "
        f"{single:6.1f} samples/s = {batched / single:.1f} x"
    )

    gain = AnswerGainScorer(FilterConfig(run_dir="-", reward="answer-gain", reward_batch_size=batch_size))
    tokens = sum(len(gain_tokens(gain, item)) for item in items)
    started = time.perf_counter()
    for start in range(0, count, batch_size):
        gain.score(items[start : start + batch_size])
    seconds = time.perf_counter() - started
    print(
        f"answer-gain on SmolLM2: {count / seconds:6.1f} samples/s, {tokens / seconds:7.1f} prompt tokens/s "
        f"(two prompts per sample)"
    )


def gain_tokens(scorer: object, item: object) -> list[int]:
    tokenizer = scorer.tokenizer  # type: ignore[attr-defined]
    sample = item.sample  # type: ignore[attr-defined]
    question = item.problem.question  # type: ignore[attr-defined]
    return (
        tokenizer(f"Q: {question}\nA: {sample.rationale} The answer is {sample.answer}.")["input_ids"]
        + tokenizer(f"Q: {question}\nA: The answer is {sample.answer}.")["input_ids"]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=100_000)
    parser.add_argument("--per-problem", type=int, default=10)
    parser.add_argument("--skip-scoring", action="store_true")
    parser.add_argument("--score-count", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        small, big = Path(tmp) / "small", Path(tmp) / "big"
        make_run(small, args.samples // 10 // args.per_problem, args.per_problem)
        make_run(big, args.samples // args.per_problem, args.per_problem)
        small_s, small_mb = filter_peak(small)
        big_s, big_mb = filter_peak(big)
        funnel = json.loads((big / "funnel.json").read_text())["stages"]
        print(f"filter {args.samples // 10:>7} samples: {small_s:6.1f} s, peak RSS {small_mb:6.0f} MB")
        print(
            f"filter {args.samples:>7} samples: {big_s:6.1f} s, peak RSS {big_mb:6.0f} MB "
            f"= {big_mb / small_mb:.2f} x the 10x smaller run ({args.samples / big_s:,.0f} samples/s); "
            f"kept {funnel[-1]['samples_out']:,}"
        )
    if not args.skip_scoring:
        scoring(batch_size=16, count=args.score_count)


if __name__ == "__main__":
    main()
