"""Adaptive sampling against the fixed grid: teacher tokens for the same yield.

The scripted arithmetic teacher with problem-dependent difficulty (bench/arith_teacher.py --varied:
some problems nearly always solved, others mostly not) answers 1,000 chained sums. The fixed grid
draws 8 samples of every problem (T = 0.7, seeds 1-8); adaptive sampling draws the same sequence in
waves and stops a problem once it is settled, up to the same 8:
- ``--until-correct 2``: the yield is the problems with at least 2 correct rationales;
- ``--until-agree 3``: the problems where at least 3 samples agree on an answer (self-consistency
  without gold: the majority is the pseudo-label).
Since adaptive draws the grid's own requests in the grid's order, it settles exactly the problems the
grid settles: the figures are the teacher tokens (prompt + completion) each spends for that same
yield, and the rationales each keeps (the grid keeps every correct one of a settled problem; adaptive
stops at K).

    python bench/adaptive.py [--problems 1000] [--samples 8]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from arith_teacher import ArithTeacher  # noqa: E402
from helpers import invoke_ok, write_jsonl  # noqa: E402

from cotfactory.answers import answers_match  # noqa: E402
from cotfactory.store import Store  # noqa: E402


def write_sums(path: Path, count: int) -> Path:
    rng = random.Random(11)
    rows = []
    for i in range(count):
        terms = [rng.randint(10, 99) for _ in range(rng.randint(2, 4))]
        text, value = str(terms[0]), terms[0]
        for term in terms[1:]:
            op = rng.choice("+-")
            value = value + term if op == "+" else value - term
            text += f" {op} {term}"
        rows.append({"id": f"p{i}", "question": f"What is {text}?", "answer": str(value)})
    return write_jsonl(path, rows)


def generate(base_url: str, data: Path, out: Path, samples: int, *extra: str) -> None:
    seeds = ",".join(str(s) for s in range(1, samples + 1))
    invoke_ok(
        "generate", "--input", str(data), "--format", "jsonl", "--answer-type", "number", "--teacher", "openai",
        "--model", "arith-teacher", "--base-url", base_url, "--api-key-env", "", "--template", "zero-shot-cot",
        "--max-tokens", "64", "--temperatures", "0.7", "--seeds", seeds, "--use-n", "never",
        "--concurrency", "64", "--out", str(out), *extra,
    )  # fmt: skip


def measure(run: Path, rule: str, k: int) -> tuple[int, int, int, int]:
    """(teacher tokens, samples, problems settled by the rule, rationales kept: correct or in the majority)."""
    by_problem = defaultdict(list)
    tokens = 0
    with Store.in_run(run) as store:
        problems = store.problems()
        for sample in store.samples():
            tokens += sample.prompt_tokens + sample.completion_tokens
            by_problem[sample.request.problem_id].append(sample)
    settled = kept = 0
    for problem_id, samples in by_problem.items():
        problem = problems[problem_id]
        if rule == "correct":
            good = [s for s in samples if answers_match(s.answer, problem.gold, problem)]
        else:
            groups: dict[str, list] = defaultdict(list)
            for s in samples:
                if s.answer is not None:
                    groups[s.answer].append(s)
            good = max(groups.values(), key=len, default=[])
        settled += len(good) >= k
        kept += len(good) if len(good) >= k else 0
    return tokens, sum(len(s) for s in by_problem.values()), settled, kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=1000)
    parser.add_argument("--samples", type=int, default=8, help="the fixed grid's samples per problem (and the cap)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, ArithTeacher("--varied") as teacher:
        data = write_sums(Path(tmp) / "sums.jsonl", args.problems)
        grid_run = Path(tmp) / "grid"
        generate(teacher.base_url, data, grid_run, args.samples)
        print(f"{args.problems} problems, a grid of {args.samples} samples each (T=0.7) vs adaptive, same cap")
        for rule, k in (("correct", 2), ("agree", 3)):
            out = Path(tmp) / f"until_{rule}"
            generate(teacher.base_url, data, out, args.samples, f"--until-{rule}", str(k))
            grid_tokens, grid_samples, grid_settled, grid_kept = measure(grid_run, rule, k)
            tokens, samples, settled, kept = measure(out, rule, k)
            print(
                f"--until-{rule} {k}: settled {settled} problems (grid {grid_settled}); teacher tokens {tokens:,} vs "
                f"{grid_tokens:,} = {tokens / grid_tokens:.2f} x ({1 - tokens / grid_tokens:.0%} fewer); samples "
                f"{samples:,} vs {grid_samples:,}; rationales kept {kept:,} vs {grid_kept:,}",
                flush=True,
            )


if __name__ == "__main__":
    main()
