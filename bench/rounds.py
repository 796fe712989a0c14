"""Hard-problem rounds (Lion) against a control that spends the same teacher tokens uniformly over the pool.

Synthetic, every answer known: bench/augment.py's chained small-number arithmetic ("What is 7 + 5 - 3?",
2-3 operations, operands 1-9, every partial result in [0, 9]), split into round 0's problems, a
training-side pool and held-out problems, all distinct. The teacher is bench/arith_writer.py: the scripted
arithmetic teacher (a step wrong with probability 0.1 + 0.5 T; T = 0.3 here) that also writes a new
problem like a given one (same operations, new operands; a tenth of its write replies out of form). The
student is a llama-tiny built from scratch (finetune-cot, full fine-tuning; the same steps, batch, lr and
seed for every student of both arms), evaluated greedily on the held-out problems. 800 steps, as in
bench/augment.py: at 450 these students are still before their learning transition.

- **rounds**: `cotfactory run` on a pipeline with `rounds: {count, pool, samples, problem_template:
  new-problem}`: round 0 samples its problems once and trains the first student; round r probes the last
  student on the pool, samples each problem it fails `samples` times, has the teacher write and solve a
  new problem like each (kept when its samples agree), filters (`correct`), trains a fresh student on
  everything kept so far and evaluates it.
- **control**: the same round 0 (the pipeline's first student); then a seeded shuffle of the pool walked
  problem by problem, `samples` samples each (zero-shot-cot, same T; pass p uses seeds p·samples + 1 …
  (p+1)·samples, should one pass not be enough), up to the first problem that brings its teacher tokens to
  the rounds arm's through round r; filtered (`correct`); a fresh student on round 0's records and these,
  evaluated on the same held-out problems.

Teacher tokens are prompt + completion tokens (the scripted teacher counts words) of every sample each
arm asked for beyond round 0 — for the rounds arm its hard-problem samples and the new problems' writes
and solves. Prints per round and arm: those tokens, the records its student learns from, held-out accuracy
with a 95 % Wilson interval, then rounds / control: the ratios of tokens and records, the accuracy
difference and a paired McNemar p (same seed, same problem). These students' accuracy depends mostly on
when their learning transition happens, which the seed and the batch order decide (measured here: 0.23,
0.49 and 0.81 for three seeds on the same round-1 data): one seed (the default) shows the pipeline
working, not which arm is better; `--student-seeds 1,2,3` trains every student again with each further
seed on the same data (the rounds themselves follow the first seed's students), and the pooled interval
and McNemar p then count seeds x problems as independent: read them with the per-seed column. torch runs
single-threaded (--threads 1). Measured: ~270 s on 2 idle cores; each further student seed adds five
students, ~5 min.

    python bench/rounds.py [--plan default|smoke] [--student-seeds 1,2,3] [--steps N] [--threads 1] [--keep DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
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

from arith_writer import ArithWriter  # noqa: E402
from augment import write_problems  # noqa: E402
from helpers import cli_or_exit, read_jsonl, write_jsonl  # noqa: E402

from cotfactory.stats import format_accuracy, mcnemar_p  # noqa: E402


@dataclass(frozen=True)
class Plan:
    round0: int  # problems sampled once for the first student
    pool: int  # training-side problems the rounds probe (and the control samples from)
    test: int  # held-out problems
    rounds: int
    samples: int  # teacher samples per hard (or control) problem
    steps: int  # optimizer steps of every student
    seeds: tuple[int, ...] = (1,)  # student seeds: the pipeline's rounds follow the first
    batch_size: int = 16
    lr: float = 1e-3


PLANS = {
    "default": Plan(round0=100, pool=300, test=200, rounds=2, samples=2, steps=800),
    "smoke": Plan(round0=24, pool=24, test=12, rounds=2, samples=2, steps=4),
}
TEMPERATURE = 0.3
MAX_NEW_TOKENS = 64

PIPELINE = """\
name: rounds-bench
out: {out}
generate:
  input: {round0}
  answer_type: number
  teacher: openai
  model: arith-teacher
  base_url: [{base_url}]
  api_key_env: ''
  templates: [zero-shot-cot]
  temperatures: [{temperature}]
  seeds: [1]
  use_n: never
  max_tokens: 64
  concurrency: 32
filter:
  correct: true
students:
  - name: tiny
    method: finetune-cot
    student: scratch:llama-tiny
    lora_r: 0
    max_steps: {steps}
    batch_size: {batch_size}
    lr: {lr}
    seed: {seed}
eval:
  input: {test}
  answer_type: number
  batch_size: 64
  max_new_tokens: {max_new_tokens}
rounds:
  count: {rounds}
  pool: {pool}
  answer_type: number
  samples: {samples}
  problem_template: new-problem
report: false
"""


def write_data(folder: Path, plan: Plan, seed: int) -> tuple[Path, Path, Path]:
    """(round 0's problems, the pool, held-out problems): distinct problems, split in that order."""
    train, test = write_problems(folder, plan.round0 + plan.pool, plan.test, seed)
    rows = read_jsonl(train)
    round0 = write_jsonl(folder / "round0.jsonl", rows[: plan.round0])
    pool = write_jsonl(folder / "pool.jsonl", rows[plan.round0 :])
    return round0, pool, test


def tokens_of(samples: Path) -> int:
    if not samples.exists():
        return 0
    return sum(row["prompt_tokens"] + row["completion_tokens"] for row in read_jsonl(samples))


def per_problem(student: Path) -> dict[str, bool]:
    """Held-out problem id → whether the student answered it right (its predictions.jsonl)."""
    return {row["problem_id"]: bool(row["correct"]) for row in read_jsonl(student / "predictions.jsonl")}


def train_and_eval(data: Path, student: Path, plan: Plan, seed: int, test: Path) -> dict[str, bool]:
    """A fresh student as the pipeline trains one (same method, steps, batch, lr), with ``seed``; its answers."""
    cli_or_exit(
        "train-student", data, "--method", "finetune-cot", "--student", "scratch:llama-tiny", "--lora-r", "0",
        "--max-steps", str(plan.steps), "--batch-size", str(plan.batch_size), "--lr", str(plan.lr),
        "--seed", str(seed), "--out", student,
    )  # fmt: skip
    cli_or_exit(
        "eval", student, "--input", test, "--format", "jsonl", "--answer-type", "number", "--batch-size", "64",
        "--max-new-tokens", str(MAX_NEW_TOKENS),
    )  # fmt: skip
    return per_problem(student)


def rounds_arm(run: Path, plan: Plan) -> list[dict]:
    """Per round 0…R: the data its student learns from, teacher tokens beyond round 0 (cumulative), records,
    hard and new problems, and the pipeline's student's answers."""
    found = [
        {"data": run, "tokens": 0, "records": len(read_jsonl(run / "filtered.jsonl")), "answers": {}},
    ]
    found[0]["answers"][plan.seeds[0]] = per_problem(run / "students" / "tiny")
    pool_teacher = run / "rounds" / "pool_teacher" / "samples.jsonl"  # the gold-less pool problems, sampled once
    spent = tokens_of(pool_teacher) if pool_teacher.exists() else 0
    for number in range(1, plan.rounds + 1):
        here = run / "rounds" / str(number)
        summary = json.loads((here / "new_problems.json").read_text())
        runs = [here / "samples.jsonl", here / "disagree" / "samples.jsonl"]  # hard problems with gold, without
        spent += sum(tokens_of(samples) for samples in runs if samples.exists())
        spent += sum(summary["teacher_tokens"].values())
        found.append(
            {
                "data": here / "union.jsonl",
                "tokens": spent,
                "records": len(read_jsonl(here / "union.jsonl")),
                "hard": len(read_jsonl(here / "hard_problems.jsonl")),
                "new": summary,
                "answers": {plan.seeds[0]: per_problem(here / "student")},
            }
        )
    return found


def control_arm(folder: Path, base_url: str, plan: Plan, round0_run: Path, targets: list[int]) -> list[dict]:
    """Per round 1…R, the control's data: round 0's records and the control's samples through round r.

    The control walks a seeded shuffle of the pool, `samples` seeds per problem, pass after pass (pass p:
    seeds p·samples + 1 … (p+1)·samples), and stops at the first problem whose samples bring its teacher
    tokens to ``targets[r-1]`` (the rounds arm's, cumulative). One run directory holds every pass."""
    rows = read_jsonl(folder / "pool.jsonl")
    random.Random(7).shuffle(rows)
    shuffled = write_jsonl(folder / "control-pool.jsonl", rows)
    run = folder / "control"
    cost: dict[tuple[str, int], int] = {}
    passes = 0
    while sum(cost.values()) < targets[-1]:
        passes += 1
        seeds = ",".join(str(s) for s in range(1, passes * plan.samples + 1))
        cli_or_exit(
            "generate", "--input", shuffled, "--format", "jsonl", "--answer-type", "number", "--teacher", "openai",
            "--model", "arith-teacher", "--base-url", base_url, "--api-key-env", "", "--template", "zero-shot-cot",
            "--temperatures", str(TEMPERATURE), "--seeds", seeds, "--use-n", "never", "--max-tokens", "64",
            "--concurrency", "32", "--out", run,
        )  # fmt: skip
        cost = {}
        for sample in read_jsonl(run / "samples.jsonl"):
            unit = (sample["problem_id"], (sample["seed"] - 1) // plan.samples)
            cost[unit] = cost.get(unit, 0) + sample["prompt_tokens"] + sample["completion_tokens"]
    cli_or_exit("filter", run, "--correct")  # per sample: filtering a part alone keeps the same rows
    order = [(row["id"], p) for p in range(passes) for row in rows]
    kept = read_jsonl(run / "filtered.jsonl")
    base = read_jsonl(round0_run / "filtered.jsonl")
    found = []
    for number, target in enumerate(targets, start=1):
        chosen: set[tuple[str, int]] = set()
        spent = 0
        for unit in order:
            if spent >= target:
                break
            chosen.add(unit)
            spent += cost[unit]
        added = [r for r in kept if (r["problem_id"], (r["seed"] - 1) // plan.samples) in chosen]
        union = write_jsonl(folder / f"control-union-{number}.jsonl", base + added)
        found.append(
            {
                "data": union,
                "tokens": spent,
                "records": len(base) + len(added),
                "problems": len({problem for problem, _ in chosen}),
                "passes": max(p for _, p in chosen) + 1,
                "answers": {},
            }
        )
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="default")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problems")
    parser.add_argument("--steps", type=int, help="override the plan's student steps")
    parser.add_argument(
        "--student-seeds", help="e.g. 1,2,3: every student again with each further seed, on the same data (the "
        "pipeline's rounds follow the first); ~5 students, ~5 min, per further seed",
    )  # fmt: skip
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see distill_synthetic.py)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    import torch

    torch.set_num_threads(args.threads)
    plan = PLANS[args.plan]
    if args.steps:
        plan = dataclasses.replace(plan, steps=args.steps)
    if args.student_seeds:
        plan = dataclasses.replace(plan, seeds=tuple(int(s) for s in args.student_seeds.split(",")))
    started = time.perf_counter()
    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench-rounds-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        with ArithWriter("--unparseable", "0.1") as teacher:
            round0, pool, test = write_data(folder, plan, args.seed)
            run = folder / "run"
            pipeline = folder / "pipeline.yaml"
            pipeline.write_text(
                PIPELINE.format(
                    out=run,
                    round0=round0,
                    pool=pool,
                    test=test,
                    base_url=teacher.base_url,
                    temperature=TEMPERATURE,
                    steps=plan.steps,
                    batch_size=plan.batch_size,
                    lr=plan.lr,
                    seed=plan.seeds[0],
                    max_new_tokens=MAX_NEW_TOKENS,
                    rounds=plan.rounds,
                    samples=plan.samples,
                )  # fmt: skip
            )
            cli_or_exit("run", pipeline)
            rounds_s = time.perf_counter() - started
            lion = rounds_arm(run, plan)
            control = control_arm(folder, teacher.base_url, plan, run, [r["tokens"] for r in lion[1:]])
        for number, entry in enumerate(control, start=1):
            for seed in plan.seeds:
                entry["answers"][seed] = train_and_eval(
                    entry["data"], folder / f"control-{number}-s{seed}", plan, seed, test
                )
        for number, entry in enumerate(lion):
            for seed in plan.seeds[1:]:
                entry["answers"][seed] = train_and_eval(
                    entry["data"], folder / f"rounds-{number}-s{seed}", plan, seed, test
                )
        report(plan, run, lion, control, rounds_s, time.perf_counter() - started)
    finally:
        if not args.keep:
            shutil.rmtree(folder, ignore_errors=True)


def pooled(answers: dict[int, dict[str, bool]]) -> str:
    """Accuracy over seeds x problems with its Wilson interval, and each seed's."""
    correct = sum(sum(a.values()) for a in answers.values())
    total = sum(len(a) for a in answers.values())
    each = " ".join(f"{sum(a.values()) / len(a):.3f}" for a in answers.values())
    return f"{format_accuracy(correct, total):<34} {each}"


def paired(mine: dict[int, dict[str, bool]], theirs: dict[int, dict[str, bool]]) -> str:
    """McNemar p of rounds vs control, pairing the same seed on the same problem."""
    only_mine = sum(mine[s][p] and not theirs[s][p] for s in mine for p in mine[s])
    only_theirs = sum(theirs[s][p] and not mine[s][p] for s in mine for p in mine[s])
    return f"McNemar p {mcnemar_p(only_mine, only_theirs):.2f} ({only_mine}:{only_theirs})"


def mean(answers: dict[int, dict[str, bool]]) -> float:
    return sum(sum(a.values()) for a in answers.values()) / sum(len(a) for a in answers.values())


def report(plan: Plan, run: Path, lion: list[dict], control: list[dict], rounds_s: float, total_s: float) -> None:
    seeds = ",".join(str(s) for s in plan.seeds)
    print(
        f"{plan.round0} round-0 problems (1 sample, T={TEMPERATURE}), pool {plan.pool}, held out {plan.test}; "
        f"{plan.rounds} rounds, {plan.samples} samples per problem; scratch:llama-tiny, finetune-cot, "
        f"{plan.steps} steps x {plan.batch_size}, lr {plan.lr}, student seed(s) {seeds}"
    )
    print(f"round 0 teacher tokens (both arms): {tokens_of(run / 'samples.jsonl'):,}")
    print("round  arm      tokens after round 0  records  held-out accuracy, seeds x problems [95% CI]  per seed")
    print(f"{0:>5}  both     {0:>20,}  {lion[0]['records']:>7}  {pooled(lion[0]['answers'])}")
    for number, (mine, theirs) in enumerate(zip(lion[1:], control, strict=True), start=1):
        for arm, entry in (("rounds", mine), ("control", theirs)):
            print(f"{number:>5}  {arm:<7}  {entry['tokens']:>20,}  {entry['records']:>7}  {pooled(entry['answers'])}")
        gain = mean(mine["answers"]) - mean(theirs["answers"])
        print(
            f"       rounds / control: tokens {mine['tokens'] / theirs['tokens']:.2f} x, records "
            f"{mine['records'] / theirs['records']:.2f} x, accuracy {gain:+.3f} "
            f"({paired(mine['answers'], theirs['answers'])})"
        )
    for number, (mine, theirs) in enumerate(zip(lion[1:], control, strict=True), start=1):
        new = mine["new"]
        dropped = ", ".join(f"{n} {reason}" for reason, n in new["dropped"].items()) or "none"
        print(
            f"round {number}: rounds sampled {mine['hard']} failed pool problems and kept {new['kept']} of "
            f"{new['asked']} new ones (dropped: {dropped}); the control reached {theirs['problems']} pool problems "
            f"in {theirs['passes']} pass(es)"
        )
    print(f"wall time: the pipeline (rounds arm) {rounds_s:.0f} s, total {total_s:.0f} s")


if __name__ == "__main__":
    main()
