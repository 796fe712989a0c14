"""Rationalized failures with a real local teacher: how many problems gain a rationale, and whether
students gain from them.

``--task gsm8k`` (default): the embedded SmolLM2-135M (hf teacher) answers GSM8K test problems with
zero-shot chain of thought, 2 samples each (T = 0.7, seeds 1-2); `--rationalize-failures rationalize`
then asks it once, for each problem none of whose samples reached the gold answer, to explain the gold
answer it is given. Printed: problems solved by sampling, problems every sample missed, and of those
the ones whose rationalization reached the gold answer (rescued: they gain a usable rationale).

``--task cqa-students``: quality_real's CommonsenseQA setting (PaLM-540B rationales replayed for the
first 1000 problems of cqa_train.json; held out: the first 400 of cqa_test.json, never trained on). The
problems no PaLM sample solved are rationalized by the embedded SmolLM2-135M given the gold (the
`rationalize` template, greedy). `--rationalize-failures` sends the rationalization to the run's own
teacher, and a replay teacher has nothing recorded for it, so a second `generate` run (hf teacher,
`--template rationalize`) over exactly those problems does it; `filter --correct` keeps the rescued
ones. Students at one budget (quality_real's LoRA rows: same steps × batch, lr, seed): (a) PaLM
correct-filtered, (b) the same plus the rescued rationalizations, (c) PaLM unfiltered; held-out
accuracy with 95 % intervals and the paired McNemar of (b) vs (a).

    python bench/rationalize_real.py [--problems 40] [--max-tokens 160]
    python bench/rationalize_real.py --task cqa-students [--methods finetune-cot,step-by-step] [--keep DIR]

On 2 shared CPU cores (load ~4) the rationalization took 35 min and each student row 35-40 min
(training 16 min, evaluation ~20 min): budget ~2 h for the default (finetune-cot: a, b, c).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import quality_real  # noqa: E402
from helpers import cli_or_exit, invoke_ok, read_jsonl  # noqa: E402

from cotfactory.answers import answers_match  # noqa: E402
from cotfactory.stats import mcnemar_p  # noqa: E402
from cotfactory.store import Store  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"
SHORT_WORDS = 10  # a rationale of fewer words states the answer without reasoning


def gsm8k_mode(args: argparse.Namespace) -> None:
    max_tokens = args.max_tokens or 160
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.perf_counter()
        invoke_ok(
            "generate", "--input", str(GSM8K), "--format", "gsm8k", "--limit", str(args.problems),
            "--teacher", "hf", "--template", "zero-shot-cot", "--temperatures", "0.7", "--seeds", "1,2",
            "--max-tokens", str(max_tokens), "--length-retry-tokens", "0",
            "--rationalize-failures", "rationalize", "--out", str(out),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        solved = missed = rescued = 0
        tokens = {"sample": 0, "rationalized": 0}
        with Store.in_run(out) as store:
            problems = store.problems()
            by_problem: dict[str, list] = {}
            for sample in store.samples():
                by_problem.setdefault(sample.request.problem_id, []).append(sample)
                tokens[sample.request.mode] += sample.prompt_tokens + sample.completion_tokens
        for problem_id, samples in by_problem.items():
            problem = problems[problem_id]
            sampled = [s for s in samples if s.request.mode == "sample"]
            extra = [s for s in samples if s.request.mode == "rationalized"]
            if any(answers_match(s.answer, problem.gold, problem) for s in sampled):
                solved += 1
            else:
                missed += 1
                rescued += any(answers_match(s.answer, problem.gold, problem) for s in extra)
        count = len(by_problem)
        print(f"SmolLM2-135M, {count} GSM8K test problems, 2 zero-shot CoT samples each (T=0.7): {seconds:.0f} s")
        print(f"solved by sampling (a sample reached gold): {solved}")
        print(f"every sample missed: {missed}; rationalized; rescued (the rationalization reached gold): {rescued}")
        sampled, extra = tokens["sample"], tokens["rationalized"]
        print(f"teacher tokens: sampling {sampled:,}, rationalization {extra:,} ({extra / max(sampled, 1):.2f} x)")


# ------------------------------------------------------------------------------------ cqa-students


def reached_gold(run: Path) -> dict[str, bool]:
    """Whether some sample of each problem of the run reached its gold answer, in the run's order."""
    with Store.in_run(run) as store:
        problems = store.problems()
        reached: dict[str, bool] = {}
        for sample in store.samples():
            problem = problems[sample.request.problem_id]
            reached[problem.id] = reached.get(problem.id, False) or answers_match(sample.answer, problem.gold, problem)
    return reached


def rationalize(task: quality_real.Task, plan: quality_real.Plan, missed: list[str], folder: Path, max_tokens: int):
    """The missed problems' own dataset lines → a hf-teacher `generate` run with the rationalize template
    (given the gold), then `filter --correct` (well-formed and reaching the gold: rescued)."""
    wanted = set(missed)
    lines = task.train.read_text(encoding="utf-8").splitlines()[: plan.train]
    subset = folder / "missed.jsonl"
    subset.write_text("".join(line + "\n" for line in lines if line.strip() and json.loads(line)["id"] in wanted))
    run = folder / "rationalized"
    started = time.perf_counter()
    cli_or_exit(
        "generate", "--format", task.format, "--input", str(subset), "--teacher", "hf", "--batch-size", "32",
        "--template", "rationalize", "--temperatures", "0", "--seeds", "0", "--max-tokens", str(max_tokens),
        "--length-retry-tokens", "0", "--out", str(run),
    )  # fmt: skip
    seconds = time.perf_counter() - started
    cli_or_exit("filter", str(run), "--correct")
    return run, seconds


def words(text: str | None) -> int:
    return len((text or "").split())


def describe_rationalization(run: Path, missed: int, seconds: float, palm_kept: Path) -> None:
    samples = read_jsonl(run / "samples.jsonl")
    kept = read_jsonl(run / "filtered.jsonl")
    reached = sum(reached_gold(run).values())
    prompt = sum(row["prompt_tokens"] or 0 for row in samples)
    completion = sum(row["completion_tokens"] or 0 for row in samples)
    truncated = sum(row["finish_reason"] == "length" for row in samples)
    lengths = [words(row["rationale"]) for row in kept]
    empty = sum(n == 0 for n in lengths)
    short = sum(n < SHORT_WORDS for n in lengths)
    palm = [words(row["rationale"]) for row in read_jsonl(palm_kept / "filtered.jsonl")]
    print(f"problems no PaLM sample solved: {missed}; rationalized by SmolLM2-135M (given gold, T=0): {len(samples)}")
    print(
        f"  answer reached gold: {reached}; cut at max tokens: {truncated}; "
        f"rescued (kept by filter --correct, well-formed): {len(kept)} ({len(kept) / max(len(samples), 1):.0%})"
    )
    print(
        f"  teacher tokens: prompt {prompt:,}, completion {completion:,}; {seconds / 60:.1f} min "
        f"({completion / max(seconds, 1e-9):.0f} completion tok/s)"
    )
    median = statistics.median(lengths) if lengths else 0
    print(
        f"  rescued rationales: empty (answer only) {empty}, under {SHORT_WORDS} words {short} "
        f"({short / max(len(kept), 1):.0%}); median words {median:g} (PaLM kept: {statistics.median(palm):g})"
    )


def student_rows(methods: list[str], arms: dict[str, Path]) -> list[tuple[str, str]]:
    """(method, arm) by importance: (a) and (b) of each method; (c) of the first method after its pair."""
    rows = [(m, arm) for m in methods for arm in ("a-palm-filtered", "b-plus-rationalized")]
    if "c-palm-unfiltered" in arms:
        rows.insert(2, (methods[0], "c-palm-unfiltered"))
    return rows


PAIRED = {"b-plus-rationalized": "a-palm-filtered", "c-palm-unfiltered": "a-palm-filtered"}


def print_paired(folder: Path, method: str, arm: str) -> None:
    """Exact McNemar of an arm against (a) on the same held-out problems (ranked answers), printed as
    soon as both are evaluated: A right & B wrong / B right & A wrong."""
    other = PAIRED.get(arm)
    first, second = folder / f"{method}-{arm}", folder / f"{method}-{other}"
    if other is None or not (second / "predictions.jsonl").exists():
        return
    right_a, right_b = quality_real.ranked_right(first), quality_real.ranked_right(second)
    only_a = sum(right_a[i] and not right_b[i] for i in right_a)
    only_b = sum(right_b[i] and not right_a[i] for i in right_a)
    print(
        f"  paired, ranked: {arm} right & {other} wrong / the reverse: {only_a} / {only_b}, "
        f"exact McNemar p = {mcnemar_p(only_a, only_b):.3f}",
        flush=True,
    )


def show_examples(run: Path, count: int) -> None:
    kept = read_jsonl(run / "filtered.jsonl")
    reasoned = [row for row in kept if words(row["rationale"]) >= SHORT_WORDS]
    print(f"examples (rescued, {count} answer-only and {count} with some text):")
    for row in [r for r in kept if words(r["rationale"]) < SHORT_WORDS][:count] + reasoned[:count]:
        text = " ".join(row["text"].split())
        print(f"  [{row['gold']}] {text[:220]}{'…' if len(text) > 220 else ''}")


def cqa_students(args: argparse.Namespace) -> None:
    task = quality_real.TASKS["cqa"]
    plan = quality_real.PLANS[args.plan]
    if args.steps:
        plan = dataclasses.replace(plan, steps=args.steps)
    methods = args.methods.split(",")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(args.keep) if args.keep else Path(scratch)
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        runs = quality_real.make_runs(task, plan, folder)
        missed = [pid for pid, reached in reached_gold(folder / "run").items() if not reached]
        rationalized, seconds = rationalize(task, plan, missed, folder, args.max_tokens or 128)
        combined = folder / "palm-plus-rationalized.jsonl"
        combined.write_text(
            (runs["filtered"] / "filtered.jsonl").read_text() + (rationalized / "filtered.jsonl").read_text()
        )
        arms = {"a-palm-filtered": runs["filtered"], "b-plus-rationalized": combined}
        if not args.no_unfiltered:
            arms["c-palm-unfiltered"] = runs["unfiltered"]
        sizes = {arm: quality_real.count_lines(p if p.is_file() else p / "filtered.jsonl") for arm, p in arms.items()}
        print(f"task cqa — {task.note}")
        print(f"teacher: PaLM-540B replay, {plan.train} problems; correct-filtered {sizes['a-palm-filtered']}")
        describe_rationalization(rationalized, len(missed), seconds, runs["filtered"])
        print("teaching records: " + ", ".join(f"{arm} {n}" for arm, n in sizes.items()))
        print(f"budget per student: {plan.steps} steps × {plan.batch}, lr {plan.lr}, LoRA r{plan.lora_r}, seed 0")
        header = f"{'student':<38} {'gen (95% CI)':<24} {'rank (95% CI)':<24} {'rationale acc':>13} {'min':>5}"
        print(header, flush=True)
        total = None
        for method, arm in student_rows(methods, arms):
            t0 = time.perf_counter()
            out = folder / f"{method}-{arm}"
            quality_real.train(arms[arm], method, plan, out, plan.lora_r, plan.lr)
            summary = quality_real.evaluate(task, plan, str(out), out)
            total = summary["total"]
            rationale = summary.get("rationale_accuracy")
            print(
                f"{method + ', ' + arm:<38} {quality_real.cell(summary, 'gen'):<24} "
                f"{quality_real.cell(summary, 'ranked'):<24} {'–' if rationale is None else f'{rationale:.3f}':>13} "
                f"{(time.perf_counter() - t0) / 60:>5.1f}",
                flush=True,
            )
            print_paired(folder, method, arm)
        show_examples(rationalized, 3)
        print(f"held-out problems: {total}; total {(time.perf_counter() - started) / 60:.1f} min")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=["gsm8k", "cqa-students"], default="gsm8k")
    parser.add_argument("--problems", type=int, default=40, help="gsm8k: test problems")
    parser.add_argument("--max-tokens", type=int, help="teacher tokens of a sample (default: gsm8k 160, cqa 128)")
    parser.add_argument("--methods", default="finetune-cot", help="cqa-students: student methods (comma-separated)")
    parser.add_argument("--steps", type=int, help="cqa-students: optimizer steps (default: quality_real's plan)")
    parser.add_argument("--plan", choices=sorted(quality_real.PLANS), default="default", help="cqa-students: sizes")
    parser.add_argument("--no-unfiltered", action="store_true", help="cqa-students: skip arm (c)")
    parser.add_argument("--keep", help="cqa-students: work in this folder and keep it")
    args = parser.parse_args()
    if args.task == "gsm8k":
        gsm8k_mode(args)
    else:
        cqa_students(args)


if __name__ == "__main__":
    main()
