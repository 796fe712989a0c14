"""Do students learn from real rationales? Distilling Step-by-Step's own setting, measured.

Teacher: PaLM-540B's released chain-of-thought rationales (replay), with their tasks' gold labels:
CommonsenseQA (train on the train split, evaluate on the 1,221-problem test split) and e-SNLI (the
release holds PaLM rationales for the first 5,500 *test* pairs only, so students train on those and
are evaluated on the validation split, which no student ever sees). Student: the embedded
SmolLM2-135M-Instruct with LoRA, and one full fine-tuning row.

Every method gets the same budget: the same problems, the same optimizer steps × batch, the same seed
and learning rate. Rows: the untrained student (zero-shot, label-only format), label-only,
step-by-step (α = 0.5 as the paper) and Fine-tune-CoT on the correct-filtered teacher data,
step-by-step and Fine-tune-CoT unfiltered (every PaLM rationale with its own answer), and (e-SNLI)
full fine-tuning of the best LoRA method. The default plan evaluates the first 400 held-out problems
of each split (±0.05 at 95 %) to fit 2 CPU cores; ``--test 0`` or ``--full`` takes the whole split. Each accuracy is
reported with its 95 % Wilson interval, as free generation read by the answer module ("gen") and as
the choice of highest log-likelihood ("rank", lm-eval's multiple-choice scoring; after the student's
own rationale for Fine-tune-CoT).

    python bench/quality_real.py                 # default plan: ≤ 60 min on 2 CPU cores
    python bench/quality_real.py --task esnli    # one task
    python bench/quality_real.py --full          # whole train split, more steps (for a GPU)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import cli_or_exit, read_jsonl  # noqa: E402


@dataclass(frozen=True)
class Task:
    name: str
    format: str
    train: Path
    replay: Path
    template: str
    test: Path
    note: str


TASKS = {
    "cqa": Task(
        "cqa",
        "cqa",
        SHARED / "cqa_palm" / "cqa_train.json",
        SHARED / "cqa_palm" / "llm",
        "few-shot-cot-cqa",
        SHARED / "cqa_palm" / "cqa_test.json",
        "train: first N of cqa_train.json; held out: cqa_test.json",
    ),
    "esnli": Task(
        "esnli",
        "esnli",
        SHARED / "esnli_palm" / "esnli_test.json",
        SHARED / "esnli_palm" / "llm",
        "few-shot-cot-esnli",
        SHARED / "esnli_palm" / "esnli_valid.json",
        "train: first N of esnli_test.json (the pairs with PaLM rationales); held out: esnli_valid.json",
    ),
}


@dataclass(frozen=True)
class Plan:
    train: int  # teaching problems (before the filter)
    test: int | None  # held-out problems (None: the whole split)
    steps: int
    batch: int
    lr: float
    full_lr: float
    lora_r: int
    max_new_tokens: int


# default: sized for ≤ 60 min on 2 CPU cores (training runs at ~220 tokens/s there); full: a GPU
PLANS = {
    "default": Plan(train=1000, test=400, steps=80, batch=8, lr=1e-3, full_lr=5e-5, lora_r=16, max_new_tokens=64),
    "full": Plan(train=100_000, test=None, steps=2000, batch=32, lr=5e-4, full_lr=5e-5, lora_r=16, max_new_tokens=96),
    "smoke": Plan(train=40, test=12, steps=2, batch=4, lr=1e-3, full_lr=5e-5, lora_r=4, max_new_tokens=16),
}
# (method, teacher data) rows trained per task, at the same budget
ROWS = (
    ("label-only", "filtered"),
    ("step-by-step", "filtered"),
    ("finetune-cot", "filtered"),
    ("step-by-step", "unfiltered"),
    ("finetune-cot", "unfiltered"),
)
FULL_FT_TASK = "esnli"  # the one full fine-tuning row (of the best LoRA method there)


def make_runs(task: Task, plan: Plan, folder: Path) -> dict[str, Path]:
    """The replayed teacher run, filtered two ways: correct only, and every sample kept."""
    run = folder / "run"
    cli_or_exit(
        "generate",
        *("--format", task.format, "--input", str(task.train), "--limit", str(plan.train)),
        *("--teacher", "replay", "--replay", str(task.replay), "--model", "palm-540b"),
        *("--template", task.template, "--temperatures", "0", "--seeds", "0", "--out", str(run)),
    )
    runs = {}
    for variant, flags in {"filtered": ("--correct",), "unfiltered": ("--no-well-formed",)}.items():
        runs[variant] = folder / f"run-{variant}"
        shutil.copytree(run, runs[variant], dirs_exist_ok=True)
        cli_or_exit("filter", str(runs[variant]), *flags)
    return runs


def count_lines(path: Path) -> int:
    return sum(1 for line in path.open() if line.strip())


def evaluate(task: Task, plan: Plan, student: str, out: Path, untrained: bool = False) -> dict:
    args = ["eval", student, "--input", str(task.test), "--format", task.format, "--batch-size", "32"]
    args += ["--max-new-tokens", str(plan.max_new_tokens), "--no-explain"]
    if plan.test:
        args += ["--limit", str(plan.test)]
    if untrained:
        args += ["--out", str(out / "predictions.jsonl")]
    cli_or_exit(*args)
    return json.loads((out / "eval.json").read_text())


def train(run: Path, method: str, plan: Plan, out: Path, lora_r: int, lr: float) -> float:
    started = time.perf_counter()
    cli_or_exit(
        "train-student",
        str(run),
        *("--method", method, "--student", "embedded", "--out", str(out), "--lora-r", str(lora_r)),
        *("--max-steps", str(plan.steps), "--batch-size", str(plan.batch), "--lr", str(lr)),
        *("--max-source-length", "256", "--max-target-length", "160", "--seed", "0"),
        *("--logging-steps", "25", "--save-steps", "100000"),
    )
    return time.perf_counter() - started


def cell(summary: dict, kind: str) -> str:
    key = "" if kind == "gen" else f"{kind}_"
    if f"{key}accuracy" not in summary:
        return "–"
    low, high = summary[f"{key}interval"]
    return f"{summary[f'{key}accuracy']:.3f} [{low:.3f}, {high:.3f}]"


def ranked_right(folder: Path) -> dict[str, bool]:
    rows = read_jsonl(folder / "predictions.jsonl")
    return {row["problem_id"]: bool(row["ranked_correct"]) for row in rows}


def print_paired(folder: Path) -> None:
    """Exact McNemar tests on the same held-out problems (ranked answers): paired, so sharper than
    comparing two intervals."""
    from cotfactory.stats import mcnemar_p

    pairs = [
        ("label-only-filtered", "untrained"),
        ("step-by-step-filtered", "label-only-filtered"),
        ("finetune-cot-filtered", "label-only-filtered"),
        ("step-by-step-filtered", "step-by-step-unfiltered"),
        ("finetune-cot-filtered", "finetune-cot-unfiltered"),
    ]
    print("paired (ranked answers, same problems): A right & B wrong / B right & A wrong, exact McNemar p")
    for a, b in pairs:
        if not (folder / a / "predictions.jsonl").exists() or not (folder / b / "predictions.jsonl").exists():
            continue
        first, second = ranked_right(folder / a), ranked_right(folder / b)
        only_a = sum(first[i] and not second[i] for i in first)
        only_b = sum(second[i] and not first[i] for i in first)
        print(f"  {a} vs {b}: {only_a} / {only_b}, p = {mcnemar_p(only_a, only_b):.3f}")


def run_task(task: Task, plan: Plan, folder: Path) -> None:
    started = time.perf_counter()
    runs = make_runs(task, plan, folder)
    kept = {variant: count_lines(run / "filtered.jsonl") for variant, run in runs.items()}
    print(f"task {task.name} — {task.note}")
    print(
        f"teacher: PaLM-540B replay, {plan.train} problems; kept by the correct filter {kept['filtered']}, "
        f"unfiltered {kept['unfiltered']}"
    )
    print(
        f"budget per trained row: {plan.steps} steps × {plan.batch}, lr {plan.lr} (LoRA r{plan.lora_r}) / "
        f"{plan.full_lr} (full), seed 0"
    )
    header = (
        f"{'row':<34} {'gen (95% CI)':<24} {'rank (95% CI)':<24} {'rank/char':<24} {'rationale acc':>13} {'min':>5}"
    )
    print(header)
    rows: list[tuple[str, dict, float]] = []

    def show(name: str, summary: dict, seconds: float) -> None:
        rationale = summary.get("rationale_accuracy")
        print(
            f"{name:<34} {cell(summary, 'gen'):<24} {cell(summary, 'ranked'):<24} "
            f"{cell(summary, 'ranked_norm'):<24} {'–' if rationale is None else f'{rationale:.3f}':>13} "
            f"{seconds / 60:>5.1f}",
            flush=True,
        )
        rows.append((name, summary, seconds))

    t0 = time.perf_counter()
    out = folder / "untrained"
    out.mkdir()
    show("untrained (zero-shot)", evaluate(task, plan, "embedded", out, untrained=True), time.perf_counter() - t0)
    for method, variant in ROWS:
        t0 = time.perf_counter()
        out = folder / f"{method}-{variant}"
        train(runs[variant], method, plan, out, plan.lora_r, plan.lr)
        show(f"{method}, {variant}, LoRA", evaluate(task, plan, str(out), out), time.perf_counter() - t0)
    if task.name == FULL_FT_TASK:
        lora = [r for r in rows if r[0].endswith(", filtered, LoRA")]
        method = max(lora, key=lambda r: r[1].get("ranked_accuracy", 0.0))[0].split(",")[0]
        t0 = time.perf_counter()
        out = folder / f"{method}-filtered-full"
        train(runs["filtered"], method, plan, out, 0, plan.full_lr)
        show(f"{method}, filtered, full FT", evaluate(task, plan, str(out), out), time.perf_counter() - t0)
    print_paired(folder)
    total = rows[0][1]["total"]
    print(f"held-out problems: {total}; {task.name} took {(time.perf_counter() - started) / 60:.1f} min\n", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--task", choices=[*TASKS, "both"], default="both")
    parser.add_argument("--plan", choices=sorted(PLANS), default="default")
    parser.add_argument("--full", action="store_true", help="the 'full' plan: whole train split (for a GPU)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--test", type=int, help="held-out problems (default: the plan's; 0 = the whole split)")
    args = parser.parse_args()
    plan = PLANS["full" if args.full else args.plan]
    if args.test is not None:
        plan = dataclasses.replace(plan, test=args.test or None)
    tasks = list(TASKS.values()) if args.task == "both" else [TASKS[args.task]]
    missing = [str(p) for t in tasks for p in (t.train, t.test, t.replay) if not p.exists()]
    if missing:
        sys.exit(f"missing reference data: {', '.join(missing)} (see ../shared/data/README.md)")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        base = Path(args.keep) if args.keep else Path(scratch)
        for task in tasks:
            folder = base / task.name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            run_task(task, plan, folder)
    print(f"total {(time.perf_counter() - started) / 60:.1f} min (plan {args.plan if not args.full else 'full'})")


if __name__ == "__main__":
    main()
