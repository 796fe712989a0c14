"""Token-level distillation where accuracy is known: SFT vs kd vs slim vs jsd, from a teacher trained here.

The task is bench/quality_synthetic.py's chained arithmetic ("What is 30 + 40 - 20 + 10?"), its problem
generator with operands that are 2-digit multiples of --multiple (default 10) and partial results in
[0, 99]. Distinct problems run out early for 2 operations, so nearly all transfer and held-out problems
have 3.

1. Teacher: `train-student --method finetune-cot --student scratch:llama-small --lora-r 0` on gold
   step-by-step rationales ("30 + 40 = 70. 70 - 20 = 50. The answer is 50.", answer 50); its held-out
   accuracy by `eval` (greedy).
2. `generate --teacher hf --model TEACHER --logprobs K` (default K 8): one rationale per transfer problem
   (problems neither the teacher's nor held out) at one temperature (default 0.7), with the teacher's
   top-K distribution (at T=1) at every token; `filter --correct` keeps the right ones.
3. Students: `train-student RUN --method finetune-cot --student scratch:llama-tiny --lora-r 0` with
   `--distill none` (SFT: hard labels), `kd`, `slim` and `jsd` (beta 0.5); distill alpha 0.5 and
   temperature 1 (the CLI defaults); the same steps, batch and lr for all, seeds 1, 2, 3; `eval` on the
   same held-out problems.

How the teacher is asked: in its own training format, "{question} ###" (finetune-cot's causal source), to
which it writes " rationale --> answer" (read with answer_pattern "-->\\s*(\\S+)"). The template is
chat-form, with a chat template put in the teacher's tokenizer that emits the user turn's text unchanged:
the hf teacher encodes a completion-form prompt with add_special_tokens=True, and the byte-level (ByT5)
tokenizer of scratch models appends EOS to every text, so the teacher would read "... ###</s>", a prompt
it never saw in training (`eval` strips that EOS; measured: other, wrong rationales). Teacher and
students share that tokenizer (same get_vocab()), so kd/slim/jsd need no --align.

Why the rationale ends with "The answer is N.": besides being the scripted teacher's form, it keeps every
teacher text over 40 characters. `train-student --distill` places a sample's distributions by finding the
first 40 characters of the teacher's decoded text in the target, and that text ends in "</s>": a shorter
sample ("30 + 40 = 70. 70 - 20 = 50. --> 50</s>") is not found and silently trains on CE alone.

Sizes. Steps are what these scratch models need, not data: a llama-small learns to copy the operands and
add only after ~400-600 steps x 16 at lr 1e-3 (a 1000-step run: loss 0.36 at step 200, 0.02 at 600, 100%
held out at 1000; lr 2e-3 and batch 8 were slower; 700 steps: 100% held out). A llama-tiny student on the
teacher's kept samples stays at chance (11-15%: the format, wrong digits) for every loss at 300 steps and
goes through the same transition later (SFT, one seed: 25% at 336 steps, 38% at 450, 99% at 600 of an
800-step run), so 450 steps leave the students inside it, where a loss that learns faster shows, and where
a run's accuracy depends mostly on when its transition happens: seeds differ by up to 0.24. The pooled
Wilson interval and the McNemar p count seeds x problems as independent, so read them with the per-seed
column: three runs per loss. A kd/slim/jsd run takes ~1.5x an SFT run (the per-example loss loop).
torch runs single-threaded (--threads 1): with other jobs on the two cores, two intra-op threads spin on
each other (a llama-small step: 5.3 s with 2 threads, 0.47 s with 1). Measured with other jobs running
(load ~4.5): default 1090 s (teacher 461 s, an SFT student 36 s, a kd/slim/jsd student ~53 s, generation
25 s); smoke 64 s.

Prints: the teacher's training time and held-out accuracy, its sample accuracy and the filter funnel,
how confident the teacher is on the tokens the students learn, one line per student, and per loss the
accuracy mean over seeds, each seed's accuracy, a pooled 95% Wilson interval over seeds x problems, a
paired McNemar p against SFT (same seed, same problem; discordant counts loss:SFT) and the mean training
time per run.

    python bench/distill_synthetic.py [--plan default|smoke] [--temperature 0.7] [--logprobs 8]
                                      [--student-steps N] [--teacher-dir DIR] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from helpers import read_jsonl, run_cli, write_jsonl  # noqa: E402
from quality_synthetic import print_funnel, teacher_accuracy, write_problems  # noqa: E402

from cotfactory.stats import format_accuracy, mcnemar_p  # noqa: E402

LOSSES = ("none", "kd", "slim", "jsd")
LABEL = {"none": "SFT", "kd": "kd", "slim": "slim", "jsd": "jsd"}
TEMPLATE = "distill-synthetic"
# the teacher's tokenizer gets this chat template: the user turn's text, nothing added
PLAIN_CHAT = "{% for message in messages %}{{ message['content'] }}{% endfor %}"
TEMPLATE_YAML = f"""\
name: {TEMPLATE}
version: 1
description: A finetune-cot student's own prompt, for a scratch student serving as the teacher.
form: chat
answer_types: [number]
answer_pattern: "-->\\\\s*(\\\\S+)"
messages:
  - role: user
    content: "{{{{ question }}}} ###"
"""


@dataclass(frozen=True)
class Plan:
    teacher_problems: int  # gold rationales the teacher learns from
    teacher_steps: int
    transfer: int  # problems the teacher writes rationales for
    test: int  # held-out problems
    student_steps: int
    seeds: tuple[int, ...]
    correct_only: bool = True  # filter --correct (smoke: well-formed only, its teacher is barely trained)
    batch_size: int = 16
    teacher_lr: float = 1e-3
    student_lr: float = 1e-3


PLANS = {
    "default": Plan(2000, 700, 1000, 100, 450, (1, 2, 3)),
    "smoke": Plan(200, 60, 48, 20, 8, (1,), correct_only=False),
}


# --------------------------------------------------------------------------------------------- data


def gold_rationale(question: str) -> str:
    """'What is 30 + 40 - 20?' -> '30 + 40 = 70. 70 - 20 = 50. The answer is 50.' (the scripted teacher's
    form; the closing sentence also keeps every teacher text over 40 characters, see the module docstring)."""
    tokens = question.removeprefix("What is ").removesuffix("?").split()
    value, sentences = int(tokens[0]), []
    for op, operand in zip(tokens[1::2], map(int, tokens[2::2]), strict=True):
        result = value + operand if op == "+" else value - operand
        sentences.append(f"{value} {op} {operand} = {result}.")
        value = result
    return " ".join(sentences) + f" The answer is {value}."


def write_data(folder: Path, plan: Plan, seed: int, multiple: int, max_value: int) -> tuple[Path, Path, Path]:
    """(teaching records with gold rationales, transfer problems, held-out problems): all distinct."""
    pool, test = write_problems(folder, plan.teacher_problems + plan.transfer, plan.test, seed, multiple, max_value)
    rows = read_jsonl(pool)
    teaching = [
        {**row, "rationale": gold_rationale(row["question"]), "answer_type": "number"}
        for row in rows[: plan.teacher_problems]
    ]
    for row in teaching:
        assert row["rationale"].endswith(f" is {row['answer']}."), row
    transfer = write_jsonl(folder / "transfer.jsonl", rows[plan.teacher_problems :])
    return write_jsonl(folder / "teacher-gold.jsonl", teaching), transfer, test


# --------------------------------------------------------------------------------------------- CLI


def cli(*args: str | Path) -> str:
    """`cotfactory ARGS` in this process: its output (stdout and stderr); exits on failure."""
    result = run_cli(*args)
    if result.exit_code != 0:
        command = " ".join(str(arg) for arg in args)
        sys.exit(f"cotfactory {command} failed ({result.exit_code}):\n{result.output}\n{result.exception!r}")
    return result.output


def train(
    data: Path, out: Path, student: str, steps: int, batch: int, lr: float, seed: int, *extra: str
) -> tuple[str, float]:
    """(train-student's output, seconds)."""
    started = time.perf_counter()
    output = cli(
        "train-student",
        data,
        *("--method", "finetune-cot", "--student", student, "--out", out, "--lora-r", "0"),
        *("--max-steps", str(steps), "--batch-size", str(batch), "--lr", str(lr), "--seed", str(seed)),
        *("--no-group-by-length", "--logging-steps", "50", "--save-steps", "100000"),
        *extra,
    )
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    return output, time.perf_counter() - started


def evaluate(model: Path, test: Path) -> tuple[dict, dict[str, bool], float]:
    """(eval.json, problem id -> correct, seconds)."""
    started = time.perf_counter()
    cli(
        "eval",
        model,
        *("--input", test, "--format", "jsonl", "--answer-type", "number"),
        *("--batch-size", "50", "--max-new-tokens", "80"),
    )
    correct = {row["problem_id"]: bool(row["correct"]) for row in read_jsonl(model / "predictions.jsonl")}
    return json.loads((model / "eval.json").read_text()), correct, time.perf_counter() - started


def serving_copy(teacher: Path, folder: Path) -> Path:
    """The teacher's weights and tokenizer, the tokenizer given the plain chat template (see the docstring)."""
    from transformers import AutoTokenizer

    copy = folder / "teacher-hf"
    shutil.copytree(teacher, copy, ignore=shutil.ignore_patterns("checkpoints", "*.jsonl", "eval.json"))
    tokenizer = AutoTokenizer.from_pretrained(copy)
    tokenizer.chat_template = PLAIN_CHAT
    tokenizer.save_pretrained(copy)
    return copy


def generate(teacher: Path, transfer: Path, folder: Path, temperature: float, logprobs: int) -> tuple[Path, float]:
    prompts = folder / "prompts"
    prompts.mkdir(exist_ok=True)
    (prompts / f"{TEMPLATE}.yaml").write_text(TEMPLATE_YAML)
    run = folder / "run"
    started = time.perf_counter()
    cli(
        "generate",
        *("--input", transfer, "--format", "jsonl", "--answer-type", "number"),
        *("--teacher", "hf", "--model", teacher, "--device", "cpu", "--batch-size", "64"),
        *("--prompts-dir", prompts, "--template", TEMPLATE, "--temperatures", str(temperature), "--seeds", "1"),
        *("--max-tokens", "96", "--logprobs", str(logprobs), "--out", run),
    )
    return run, time.perf_counter() - started


# --------------------------------------------------------------------------------------------- reports


def teacher_confidence(run: Path) -> str:
    """How peaked the recorded distributions are on the tokens the students learn (the kept samples)."""
    import numpy as np

    from cotfactory.run_dir import RunDir
    from cotfactory.store import Store

    keys = [row["key"] for row in read_jsonl(RunDir(run).filtered)]
    top1, entropy, chosen = [], [], []
    with Store(RunDir(run).store) as store:
        for _, found in store.distributions(keys):
            logp = np.concatenate([found.top_logprobs, found.tail[:, None]], axis=1).astype(np.float64)
            p = np.exp(logp)
            top1.append(p[:, 0])
            entropy.append(-(p * np.where(p > 0, logp, 0.0)).sum(axis=1))
            chosen.append(found.token_ids == found.top_ids[:, 0])
    if not top1:
        return "teacher distributions: none recorded for the kept samples"
    p1, h, c = (np.concatenate(x) for x in (top1, entropy, chosen))
    return (
        f"teacher on the {len(p1)} tokens of the kept samples: mean top-1 probability {p1.mean():.3f}, "
        f"{(p1 < 0.9).mean():.1%} of tokens below 0.9, mean entropy {h.mean():.3f} nats "
        f"(K+1 buckets), sampled token = top-1 at {c.mean():.1%}"
    )


def coverage_line(output: str) -> str | None:
    return next(
        (line.strip() for line in output.splitlines() if line.strip().startswith("teacher distributions")), None
    )


def paired_p(results: dict, loss: str, seeds: tuple[int, ...]) -> str:
    """McNemar p of loss vs SFT, pairing the students of one seed on one problem."""
    if loss == "none":
        return "-"
    only_loss = only_sft = 0
    for seed in seeds:
        mine, sft = results[(loss, seed)]["per_problem"], results[("none", seed)]["per_problem"]
        only_loss += sum(mine[p] and not sft[p] for p in mine)
        only_sft += sum(sft[p] and not mine[p] for p in mine)
    return f"{mcnemar_p(only_loss, only_sft):.2f} ({only_loss}:{only_sft})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--plan", choices=sorted(PLANS), default="default")
    parser.add_argument("--seed", type=int, default=0, help="seed of the problems")
    parser.add_argument("--multiple", type=int, default=10, help="operands are 2-digit multiples of this")
    parser.add_argument("--max-value", type=int, default=99, help="every partial result stays in [0, this]")
    parser.add_argument("--temperature", type=float, default=0.7, help="the teacher's sampling temperature")
    parser.add_argument("--logprobs", type=int, default=8, help="K: top-K teacher distribution recorded per token")
    parser.add_argument("--distill-temperature", type=float, default=1.0, help="softens both sides of kd/slim/jsd")
    parser.add_argument("--student-steps", type=int, help="override the plan's student steps")
    parser.add_argument("--teacher-dir", help="an already trained teacher (a train-student folder): skip step 1")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (see the docstring)")
    parser.add_argument("--keep", help="work in this folder and keep it (default: a temporary folder)")
    args = parser.parse_args()
    plan = PLANS[args.plan]
    import torch

    torch.set_num_threads(args.threads)
    student_steps = args.student_steps or plan.student_steps

    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        gold, transfer, test = write_data(folder, plan, args.seed, args.multiple, args.max_value)

        if args.teacher_dir:
            teacher = Path(args.teacher_dir)
            print(f"teacher: {teacher} (given, not trained here)")
        else:
            teacher = folder / "teacher"
            _, seconds = train(
                gold, teacher, "scratch:llama-small", plan.teacher_steps, plan.batch_size, plan.teacher_lr, 0
            )
            print(
                f"teacher: scratch:llama-small, {plan.teacher_problems} gold rationales, {plan.teacher_steps} steps x "
                f"{plan.batch_size}, lr {plan.teacher_lr:g}: trained in {seconds:.0f} s"
            )
        summary, _, seconds = evaluate(teacher, test)
        print(f"teacher held-out accuracy (eval, greedy): {format_accuracy(summary['correct'], summary['total'])}")

        run, seconds = generate(serving_copy(teacher, folder), transfer, folder, args.temperature, args.logprobs)
        print(
            f"generate: {plan.transfer} transfer problems x T={args.temperature:g} x 1 seed, top-{args.logprobs} "
            f"logprobs, in {seconds:.0f} s"
        )
        for temperature, (correct, total) in teacher_accuracy(run / "samples.jsonl").items():
            print(f"  teacher sample accuracy at T={temperature:g}: {format_accuracy(correct, total)}")
        cli("filter", run, *(("--correct",) if plan.correct_only else ()))
        print_funnel(run)
        kept = len(read_jsonl(run / "filtered.jsonl"))
        print(teacher_confidence(run))

        print(
            f"students: scratch:llama-tiny, finetune-cot, full fine-tuning, {student_steps} steps x {plan.batch_size}, "
            f"lr {plan.student_lr:g}, on {kept} kept samples; distill alpha 0.5, temperature "
            f"{args.distill_temperature:g}, jsd beta 0.5; {torch.get_num_threads()} torch thread(s)"
        )
        results: dict = {}
        coverage = None
        for loss in LOSSES:
            for seed in plan.seeds:
                out = folder / f"student-{loss}-{seed}"
                extra = ("--distill", loss, "--distill-temperature", str(args.distill_temperature))
                extra += ("--beta", "0.5") if loss == "jsd" else ()
                output, train_s = train(
                    run, out, "scratch:llama-tiny", student_steps, plan.batch_size, plan.student_lr, seed, *extra
                )
                coverage = coverage or (coverage_line(output) if loss != "none" else None)
                summary, correct, eval_s = evaluate(out, test)
                results[(loss, seed)] = {**summary, "per_problem": correct, "train_s": train_s}
                print(
                    f"  {LABEL[loss]:<4} seed {seed}  accuracy {summary['accuracy']:.2f}  "
                    f"(train {train_s:.0f} s, eval {eval_s:.0f} s)",
                    flush=True,
                )
        if coverage:
            print(f"  {coverage}")

    seeds = ", ".join(map(str, plan.seeds))
    print(f"\nheld-out accuracy of the llama-tiny students on {plan.test} problems (seeds {seeds}, equal steps):")
    print(
        f"  {'loss':<5} {'mean':>5}  {'per seed':<18} {'pooled [95% Wilson]':<33} {'vs SFT: McNemar p':<18} train/run"
    )
    for loss in LOSSES:
        runs = [results[(loss, seed)] for seed in plan.seeds]
        accuracies = [r["accuracy"] for r in runs]
        mean = sum(accuracies) / len(accuracies)
        pooled = format_accuracy(sum(r["correct"] for r in runs), sum(r["total"] for r in runs))
        per_seed = " ".join(f"{a:.2f}" for a in accuracies)
        train_s = sum(r["train_s"] for r in runs) / len(runs)
        print(
            f"  {LABEL[loss]:<5} {mean:>5.3f}  {per_seed:<18} {pooled:<33} "
            f"{paired_p(results, loss, plan.seeds):<18} {train_s:.0f} s"
        )
    print(f"total wall time {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
