"""Do counterfactual problems help a student? Held-out accuracy with and without `cotfactory augment`, at the
same number of training steps.

The task is chained small-number arithmetic, "What is 7 + 5 - 3?" (2-3 operations, operands 1-9, every
partial result in [0, 9]), each problem carrying its equation ("7 + 5 - 3") in its metadata as SVAMP carries
``Equation``, so the arithmetic counterfactual path recomputes the gold of a new problem with no teacher.
SVAMP itself is out of reach here: a student built from scratch on 2 CPU cores stays near 0 on its word
problems, and its 300-character questions cost ~6x the steps' time.

1. Problems: --train originals and --test held-out problems, all distinct, from one seeded generator.
2. `augment train.jsonl --format jsonl --answer-type number --counterfactual K`: new numbers (each drawn in
   half to twice the old one, so operands reach 18 and partial results leave [0, 9]), gold recomputed from
   the equation. A counterfactual whose question is a held-out question is removed before anything is
   trained (counted): the students never see a test problem.
3. `generate` with the scripted teacher (bench/arith_teacher.py: "7 + 5 = 12. 12 - 3 = 9. The answer is 9.",
   one step wrong with probability 0.1 + 0.5 T) writes one rationale per original and per counterfactual
   (zero-shot-cot, --temperature, seed 1); `filter --correct` keeps the right ones.
4. Students: scratch:llama-tiny, finetune-cot, full fine-tuning, the same steps x batch and lr for both arms,
   seeds 1..3 (the seed drives the initialization and the batch order). "without": the originals' kept
   samples; "with": those plus the counterfactuals' kept samples.
5. `eval` on the held-out problems (greedy).

Why 800 steps: at 450 both arms are still at the edge of learning (measured: 0.167 without, 0.200 with,
seeds 0.13-0.28); by 800 the arm without counterfactuals has memorised its ~90 examples (~140 passes) and
the other generalises. A run takes ~80-140 s a student on 2 shared cores (other jobs running; ~11 min in
all); smoke ~30 s. torch runs single-threaded (--threads 1), as in bench/distill_synthetic.py.

Prints the augment and filter counts, one line per student, and per arm the mean accuracy, each seed's, a
pooled 95 % Wilson interval over seeds x problems (treats them as independent: read it with the per-seed
column) and the paired McNemar p of "with" against "without" (same seed, same problem).

    python bench/augment.py [--plan default|smoke] [--train 100] [--test 200] [--counterfactual 3]
                            [--steps N] [--temperature 0.0] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from arith_teacher import ArithTeacher  # noqa: E402
from distill_synthetic import cli  # noqa: E402
from helpers import read_jsonl, write_jsonl  # noqa: E402

from cotfactory.stats import format_accuracy, mcnemar_p  # noqa: E402

ARMS = ("without", "with")


@dataclass(frozen=True)
class Plan:
    train: int  # original problems
    test: int  # held-out problems
    steps: int
    seeds: tuple[int, ...]
    batch_size: int = 16
    lr: float = 1e-3


PLANS = {
    "default": Plan(100, 200, 800, (1, 2, 3)),
    "smoke": Plan(20, 20, 8, (1,)),
}


# --------------------------------------------------------------------------------------------- data


def make_problem(rng: random.Random) -> tuple[str, str, int] | None:
    """(question, equation, answer): 'What is 7 + 5 - 3?', '7 + 5 - 3', 9; None when a partial result
    leaves [0, 9]."""
    numbers = [rng.randint(1, 9) for _ in range(rng.choice((3, 4)))]
    ops = [rng.choice("+-") for _ in numbers[1:]]
    value = numbers[0]
    for op, number in zip(ops, numbers[1:], strict=True):
        value = value + number if op == "+" else value - number
        if not 0 <= value <= 9:
            return None
    equation = str(numbers[0]) + "".join(f" {op} {n}" for op, n in zip(ops, numbers[1:], strict=True))
    return f"What is {equation}?", equation, value


def write_problems(folder: Path, train: int, test: int, seed: int) -> tuple[Path, Path]:
    """Distinct problems: the first ``train`` (with their equation) to augment and teach, the next ``test`` held out."""
    rng = random.Random(seed)
    seen: dict[str, tuple[str, int]] = {}
    while len(seen) < train + test:
        made = make_problem(rng)
        if made is not None and made[0] not in seen:
            seen[made[0]] = made[1:]
    rows = [
        {"id": f"a{i}", "question": q, "answer": str(a), "metadata": {"equation": e}}
        for i, (q, (e, a)) in enumerate(seen.items())
    ]
    return write_jsonl(folder / "train.jsonl", rows[:train]), write_jsonl(folder / "test.jsonl", rows[train:])


# --------------------------------------------------------------------------------------------- CLI


def augment(train: Path, test: Path, folder: Path, count: int, seed: int) -> tuple[Path, str, int]:
    """(originals + counterfactuals not in the test set, augment's summary line, counterfactuals removed)."""
    made = folder / "counterfactuals.jsonl"
    output = cli("augment", train, "--format", "jsonl", "--answer-type", "number", "--counterfactual", str(count),
                 "--seed", str(seed), "--out", made)  # fmt: skip
    held_out = {row["question"] for row in read_jsonl(test)}
    counterfactuals = read_jsonl(made)
    kept = [row for row in counterfactuals if row["question"] not in held_out]
    union = write_jsonl(folder / "union.jsonl", read_jsonl(train) + kept)
    summary = next(line.strip() for line in output.splitlines() if line.startswith("augment:"))
    return union, summary, len(counterfactuals) - len(kept)


def generate(base_url: str, problems: Path, run: Path, temperature: float) -> float:
    started = time.perf_counter()
    cli(
        "generate",
        *("--input", problems, "--format", "jsonl", "--answer-type", "number"),
        *("--teacher", "openai", "--model", "arith-teacher", "--base-url", base_url, "--api-key-env", ""),
        *("--template", "zero-shot-cot", "--temperatures", str(temperature), "--seeds", "1"),
        *("--concurrency", "32", "--max-tokens", "96", "--out", run),
    )
    return time.perf_counter() - started


def training_sets(run: Path, folder: Path) -> dict[str, Path]:
    """The kept samples of the originals ("without") and of originals and counterfactuals ("with")."""
    rows = read_jsonl(run / "filtered.jsonl")
    originals = [row for row in rows if "-cf" not in row["problem_id"]]
    without, with_ = write_jsonl(folder / "without.jsonl", originals), write_jsonl(folder / "with.jsonl", rows)
    return {"without": without, "with": with_}


def train_and_eval(data: Path, test: Path, out: Path, plan: Plan, steps: int, seed: int) -> tuple[dict, dict, float]:
    """(eval.json, problem id -> correct, seconds of training and evaluation)."""
    started = time.perf_counter()
    cli(
        "train-student",
        data,
        *("--method", "finetune-cot", "--student", "scratch:llama-tiny", "--out", out, "--lora-r", "0"),
        *("--max-steps", str(steps), "--batch-size", str(plan.batch_size), "--lr", str(plan.lr), "--seed", str(seed)),
        *("--no-group-by-length", "--logging-steps", "50", "--save-steps", "100000"),
    )
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    cli("eval", out, *("--input", test, "--format", "jsonl", "--answer-type", "number"),
        *("--batch-size", "50", "--max-new-tokens", "80"))  # fmt: skip
    correct = {row["problem_id"]: bool(row["correct"]) for row in read_jsonl(out / "predictions.jsonl")}
    return json.loads((out / "eval.json").read_text()), correct, time.perf_counter() - started


# --------------------------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="default")
    parser.add_argument("--train", type=int, help="original problems (default: the plan's)")
    parser.add_argument("--test", type=int, help="held-out problems (default: the plan's)")
    parser.add_argument("--counterfactual", type=int, default=3, help="counterfactuals per original")
    parser.add_argument("--steps", type=int, help="training steps of every student (default: the plan's)")
    parser.add_argument("--temperature", type=float, default=0.0, help="the teacher's temperature (errs 0.1 + 0.5 T)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problems and the counterfactuals")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (shared cores: 1)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    plan = PLANS[args.plan]
    train_count, test_count, steps = args.train or plan.train, args.test or plan.test, args.steps or plan.steps
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    results: dict[tuple[str, int], dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        train, test = write_problems(folder, train_count, test_count, args.seed)
        union, summary, removed = augment(train, test, folder, args.counterfactual, args.seed)
        print(f"{summary.rsplit(':', 1)[0]}; {removed} equal to a held-out question removed")
        with ArithTeacher() as teacher:
            seconds = generate(teacher.base_url, union, folder / "run", args.temperature)
        cli("filter", folder / "run", "--correct")
        sets = training_sets(folder / "run", folder)
        sizes = {arm: len(read_jsonl(path)) for arm, path in sets.items()}
        print(
            f"generate: {len(read_jsonl(union))} problems x T={args.temperature:g} in {seconds:.0f} s; filter "
            f"--correct keeps {sizes['without']} originals and {sizes['with'] - sizes['without']} counterfactuals"
        )
        print(
            f"students: scratch:llama-tiny, finetune-cot, full fine-tuning, {steps} steps x {plan.batch_size}, "
            f"lr {plan.lr:g}; {torch.get_num_threads()} torch thread(s); held out: {test_count} problems"
        )
        for seed in plan.seeds:
            for arm in ARMS:
                summary_, correct, seconds = train_and_eval(
                    sets[arm], test, folder / f"student-{arm}-{seed}", plan, steps, seed
                )
                results[(arm, seed)] = {**summary_, "per_problem": correct}
                print(
                    f"  {arm:<7} seed {seed}  {sizes[arm]:>4} examples  accuracy {summary_['accuracy']:.3f}  "
                    f"({seconds:.0f} s)",
                    flush=True,
                )

    seeds = ", ".join(map(str, plan.seeds))
    print(f"\nheld-out accuracy on {test_count} problems (seeds {seeds}, {steps} steps each):")
    print(f"  {'arm':<8} {'mean':>5}  {'per seed':<18} {'pooled [95% Wilson]':<33} vs without: McNemar p")
    for arm in ARMS:
        runs = [results[(arm, seed)] for seed in plan.seeds]
        accuracies = [run["accuracy"] for run in runs]
        pooled = format_accuracy(sum(r["correct"] for r in runs), sum(r["total"] for r in runs))
        print(
            f"  {arm:<8} {sum(accuracies) / len(accuracies):>5.3f}  {' '.join(f'{a:.2f}' for a in accuracies):<18} "
            f"{pooled:<33} {paired_p(results, plan.seeds) if arm == 'with' else '-'}"
        )
    print(f"total wall time {time.perf_counter() - started:.0f} s")


def paired_p(results: dict, seeds: tuple[int, ...]) -> str:
    """McNemar p of "with" against "without", pairing the students of one seed on one problem."""
    only_with = only_without = 0
    for seed in seeds:
        mine, base = results[("with", seed)]["per_problem"], results[("without", seed)]["per_problem"]
        only_with += sum(mine[p] and not base[p] for p in mine)
        only_without += sum(base[p] and not mine[p] for p in mine)
    return f"{mcnemar_p(only_with, only_without):.2f} ({only_with}:{only_without})"


if __name__ == "__main__":
    main()
