"""Do rationales help? The whole pipeline on chained arithmetic, where every answer is known.

A scripted teacher (bench/arith_teacher.py) solves "What is 35 + 40 - 25?" step by step and gets one
step wrong with probability 0.1 + 0.5 T. The real CLI then runs: `generate` (zero-shot-cot, two
temperatures x two seeds) -> `filter` twice (no filter at all: "unfiltered"; `--correct`: "filtered")
-> `train-student` per student x method x variant (students built from scratch, full fine-tuning)
-> `eval` on held-out problems.

Operands are 2-digit multiples of 5 and partial results stay in [0, 99] (--multiple 1 --max-value 999
gives the full task): a student built from scratch cannot learn general 2-3 digit addition on 2 CPU
cores in minutes (llama-small on the full task, 600 problems: 1% held-out accuracy and 4% of its steps
right after 3000 steps, by then memorising), but it can learn the few hundred single-step facts and
compose them, which is what rationales buy: label-only has to do the whole chain in one go.

Prints, measured in this one run: the teacher's accuracy per temperature, the filter funnel, and the
held-out accuracy of every student x method x variant, with its training and evaluation time.

    python bench/quality_synthetic.py [--train 2000] [--test 100] [--plan default|llama|smoke] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from arith_teacher import ArithTeacher  # noqa: E402
from helpers import cli_or_exit, read_jsonl, write_jsonl  # noqa: E402

METHODS = ("label-only", "step-by-step", "finetune-cot")
VARIANTS = ("unfiltered", "filtered")


@dataclass(frozen=True)
class Recipe:
    """How one student is trained: the same for every method and variant, so they compare fairly."""

    student: str
    runs: tuple[tuple[str, str], ...]  # (method, variant)
    max_steps: int
    batch_size: int = 16
    lr: float = 1e-3


EVERY_RUN = tuple((m, v) for m in METHODS for v in VARIANTS)
PLANS = {
    # llama-small: ~11 min on 2 idle cores. t5-small from scratch is much slower to learn here: a T5's
    # attention logits are unscaled (the 1/sqrt(d) is folded into the query init, std 0.008), so AdamW at
    # lr 1e-3 moves them ~8x faster than a LLaMA's and the decoder settles on the answer prior, ignoring
    # its encoder (400 steps: 0.00; even copying the first operand stays at chance). lr 3e-4 learns, slowly
    # (copy task 0.5 after 800 steps where llama-small is at 1.0 after 300), so the default plan gives T5
    # its one most telling run; `--plan t5` runs every cell (~18 min: all near chance at 800 steps).
    "default": (
        Recipe("scratch:llama-small", EVERY_RUN, 800),
        Recipe("scratch:t5-small", (("finetune-cot", "filtered"),), 800, lr=3e-4),
    ),
    "llama": (Recipe("scratch:llama-small", EVERY_RUN, 800),),
    "t5": (Recipe("scratch:t5-small", EVERY_RUN[::-1], 800, lr=3e-4),),
    "smoke": (Recipe("scratch:llama-tiny", EVERY_RUN, 10, 8),),
}


# --------------------------------------------------------------------------------------------- data


def make_problem(rng: random.Random, multiple: int, max_value: int) -> tuple[str, int] | None:
    """'What is 35 + 40 - 25?': 2-3 operations on 2-digit multiples of ``multiple``; None when a partial
    result leaves [0, max_value]."""
    count = rng.choice((2, 3))
    numbers = [rng.randrange(10 + (-10 % multiple), 100, multiple) for _ in range(count + 1)]
    ops = [rng.choice("+-") for _ in range(count)]
    value = numbers[0]
    for op, number in zip(ops, numbers[1:], strict=True):
        value = value + number if op == "+" else value - number
        if not 0 <= value <= max_value:
            return None
    expression = str(numbers[0]) + "".join(f" {op} {n}" for op, n in zip(ops, numbers[1:], strict=True))
    return f"What is {expression}?", value


def write_problems(folder: Path, train: int, test: int, seed: int, multiple: int, max_value: int) -> tuple[Path, Path]:
    """Distinct problems, the first ``train`` for teaching and the next ``test`` held out."""
    rng = random.Random(seed)
    seen: dict[str, int] = {}
    while len(seen) < train + test:
        problem = make_problem(rng, multiple, max_value)
        if problem is not None and problem[0] not in seen:
            seen[problem[0]] = problem[1]
    rows = [{"id": f"a{i}", "question": q, "answer": str(a)} for i, (q, a) in enumerate(seen.items())]
    paths = folder / "train.jsonl", folder / "test.jsonl"
    for path, part in zip(paths, (rows[:train], rows[train:]), strict=True):
        write_jsonl(path, part)
    return paths


# --------------------------------------------------------------------------------------------- CLI


def generate(base_url: str, train: Path, out: Path, temperatures: str, seeds: str) -> float:
    started = time.perf_counter()
    cli_or_exit(
        "generate",
        *("--input", str(train), "--format", "jsonl", "--answer-type", "number"),
        *("--teacher", "openai", "--model", "arith-teacher", "--base-url", base_url, "--api-key-env", ""),
        *("--template", "zero-shot-cot", "--temperatures", temperatures, "--seeds", seeds),
        *("--concurrency", "32", "--max-tokens", "128", "--out", str(out)),
    )
    return time.perf_counter() - started


def filter_variants(run: Path, folder: Path) -> dict[str, Path]:
    """Two copies of the run: every sample kept (no filter at all), and only correct ones."""
    flags = {"unfiltered": ("--no-well-formed",), "filtered": ("--correct",)}
    runs = {}
    for variant in VARIANTS:
        runs[variant] = folder / f"run-{variant}"
        shutil.copytree(run, runs[variant])
        cli_or_exit("filter", str(runs[variant]), *flags[variant])
    return runs


def train_and_eval(run: Path, test: Path, recipe: Recipe, method: str, out: Path) -> tuple[dict, float, float]:
    """(eval.json: held-out accuracy, …; training seconds, evaluation seconds)."""
    started = time.perf_counter()
    cli_or_exit(
        "train-student",
        str(run),
        *("--method", method, "--student", recipe.student, "--out", str(out), "--lora-r", "0"),
        *("--max-steps", str(recipe.max_steps), "--batch-size", str(recipe.batch_size), "--lr", str(recipe.lr)),
        *("--no-group-by-length", "--logging-steps", "50", "--save-steps", "100000"),
    )
    trained = time.perf_counter()
    cli_or_exit(
        "eval",
        str(out),
        *("--input", str(test), "--format", "jsonl", "--answer-type", "number"),
        *("--batch-size", "50", "--max-new-tokens", "80"),
    )
    evaluated = time.perf_counter()
    return json.loads((out / "eval.json").read_text()), trained - started, evaluated - trained


# --------------------------------------------------------------------------------------------- reports


def teacher_accuracy(samples: Path) -> dict[float, tuple[int, int]]:
    """temperature -> (correct, total) over the run's samples."""
    from cotfactory import answers
    from cotfactory.records import Problem

    counts: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    for row in read_jsonl(samples):
        problem = Problem(id=row["problem_id"], question=row["question"], gold=row["gold"], answer_type="number")
        counts[row["temperature"]][0] += answers.answers_match(row["answer"], row["gold"], problem)
        counts[row["temperature"]][1] += 1
    return {t: (c, n) for t, (c, n) in sorted(counts.items())}


def print_funnel(run: Path) -> None:
    stages = json.loads((run / "funnel.json").read_text())["stages"]
    print("filter funnel (--correct):")
    for stage in stages:
        dropped = ", ".join(f"{reason} {n}" for reason, n in stage["dropped"].items())
        print(
            f"  {stage['stage']:<12} in {stage['samples_in']:>5}  out {stage['samples_out']:>5}  "
            f"problems {stage['problems_out']:>4}  {dropped}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--train", type=int, default=2000, help="teaching problems")
    parser.add_argument("--test", type=int, default=100, help="held-out problems")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problems")
    parser.add_argument("--multiple", type=int, default=5, help="operands are 2-digit multiples of this")
    parser.add_argument("--max-value", type=int, default=99, help="every partial result stays in [0, this]")
    parser.add_argument("--temperatures", default="0.3,1.0")
    parser.add_argument("--seeds", default="1,2")
    parser.add_argument("--plan", choices=sorted(PLANS), default="default")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        train, test = write_problems(folder, args.train, args.test, args.seed, args.multiple, args.max_value)
        with ArithTeacher() as teacher:
            elapsed = generate(teacher.base_url, train, folder / "run", args.temperatures, args.seeds)
        print(f"generate: {args.train} problems x {args.temperatures} x seeds {args.seeds} in {elapsed:.1f} s")
        print("teacher accuracy per temperature (samples.jsonl):")
        for temperature, (correct, total) in teacher_accuracy(folder / "run" / "samples.jsonl").items():
            print(f"  T={temperature:<4} {correct}/{total} = {correct / total:.3f}")
        runs = filter_variants(folder / "run", folder)
        print_funnel(runs["filtered"])

        results = {}
        for recipe in PLANS[args.plan]:
            for method, variant in recipe.runs:
                name = f"{recipe.student.removeprefix('scratch:')}-{method}-{variant}"
                summary, train_s, eval_s = train_and_eval(runs[variant], test, recipe, method, folder / name)
                results[(recipe.student, method, variant)] = summary["accuracy"]
                explained = summary.get("rationale_accuracy")
                print(
                    f"  {recipe.student:<20} {method:<13} {variant:<10} accuracy {summary['accuracy']:.2f}  "
                    + (f"rationale's own answer {explained:.2f}  " if explained is not None else "")
                    + f"(train {train_s:.0f} s, eval {eval_s:.0f} s)",
                    flush=True,
                )

    print(f"\nheld-out accuracy on {args.test} problems (full fine-tuning; random batches):")
    print(f"  {'student':<20} {'method':<13} {'unfiltered':>10} {'filtered':>9}  steps x batch, lr")
    for recipe in PLANS[args.plan]:
        for method in dict.fromkeys(m for m, _ in recipe.runs):
            cells = [results.get((recipe.student, method, v)) for v in VARIANTS]
            unf, fil = ("-" if c is None else f"{c:.2f}" for c in cells)
            print(
                f"  {recipe.student:<20} {method:<13} {unf:>10} {fil:>9}  "
                f"{recipe.max_steps} x {recipe.batch_size}, lr {recipe.lr:g}"
            )
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
