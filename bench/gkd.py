"""On-policy distillation (`train-student --distill gkd`): what a step costs, and what it buys where accuracy is known.

cost — one batch, the same run, on CPU. Teacher: SmolLM2-135M (`--teacher`, default the embedded copy);
student: its every-other-layer copy (`--init-from-teacher every-other`: 15 of 30 layers). A batch of
`--batch` GSM8K examples (finetune-cot, the dataset's own solutions as rationales, targets cut to
`--tokens` tokens) goes through `MultitaskTrainer.training_step` + an optimizer step in four settings,
interleaved round by round so that load from other jobs falls on all alike:

    SFT         cross-entropy on the teacher-written completion (no teacher run)
    gkd λ=0     the teacher-written completion, the live teacher's full logits, generalized JSD(β=0.5)
    gkd λ=1     a completion sampled by the student every step (T=1, ≤ `--tokens` new tokens), then as λ=0
    gkd λ=0.5   the coin of each step (seeded by step), so some steps sample and some do not

and, apart, the two pieces a gkd step adds: the student's sampling and the teacher's scoring.
Prints the seconds per step (median, mean, each round) and the mean's ratio to SFT's (the mean, since λ=0.5
mixes two costs).

synthetic — bench/distill_synthetic.py's setting (its helpers imported, not copied): a `scratch:llama-small`
teacher trained on gold rationales of chained sums, its rationales with top-K logprobs recorded, and
`scratch:llama-tiny` students trained at equal steps with SFT, `kd` (recorded top-K), `gkd` λ=0 (live
teacher, full logits, teacher-written completions) and `gkd` λ=0.5 (half the batches the student's own),
β 0.5, each evaluated on the same held-out problems. `--keep DIR` keeps the teacher, the run and every
student's evaluation, and a later call with the same DIR reuses them: the teacher takes most of the time,
so a long comparison can be split into calls of under ten minutes (`--losses none,kd` then `gkd0,gkd`).
GKD's paper starts from a supervised student; `sft+sft` and `sft+gkd` do that: the SFT student trained
`--continue-steps` more steps with SFT, or with gkd λ=0.5, compared with each other.

    python bench/gkd.py cost [--teacher embedded] [--batch 4] [--tokens 64] [--rounds 4] [--threads 1]
    python bench/gkd.py synthetic [--losses none,kd,gkd0,gkd,sft+sft,sft+gkd] [--seeds 1] [--keep DIR]
                                  [--student-steps N] [--continue-steps N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

import distill_synthetic as synthetic  # noqa: E402
from helpers import read_jsonl  # noqa: E402

GSM8K = ROOT / "data" / "gsm8k" / "train_sample.jsonl"

# ------------------------------------------------------------------------------------------------ cost


def cost(args: argparse.Namespace) -> None:
    import torch
    from transformers import TrainingArguments

    from cotfactory.students.features import MultitaskCollator, encode_example
    from cotfactory.students.init_from_teacher import init_from_teacher
    from cotfactory.students.methods import MethodSettings, build_examples
    from cotfactory.students.models import load_student
    from cotfactory.students.on_policy import LiveTeacher, OnPolicy, on_policy_batch
    from cotfactory.students.records import load_records
    from cotfactory.students.trainer import LiveTeaching, MultitaskTrainer

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    teacher_model, tokenizer, _ = load_student(args.teacher)
    student, layers = init_from_teacher(teacher_model, teacher_model, "every-other")
    teacher = LiveTeacher.load(args.teacher, "cpu", tokenizer, student)
    del teacher_model
    print(f"teacher {args.teacher}: {sum(p.numel() for p in teacher.model.parameters()) / 1e6:.0f}M parameters")
    print(f"student: {sum(p.numel() for p in student.parameters()) / 1e6:.0f}M parameters; {layers.line()}")

    examples = build_examples("finetune-cot", load_records(str(GSM8K), "gsm8k"), MethodSettings(causal=True))
    features = [encode_example(e, tokenizer, True, {"cot": 0}, 256, args.tokens) for e in examples[: args.batch]]
    batch = MultitaskCollator(tokenizer.pad_token_id, True)(features)
    prompt = int((batch["labels"] == -100).sum(dim=1).float().mean())
    target = int((batch["labels"] != -100).sum())
    print(
        f"batch: {args.batch} GSM8K finetune-cot examples, {batch['input_ids'].shape[1]} tokens wide, "
        f"{target} target tokens (mean prompt {prompt}); gkd samples at T=1 up to {args.tokens} new tokens; "
        f"{torch.get_num_threads()} torch thread(s)"
    )

    settings = OnPolicy(lmbda=0.0, beta=0.5, max_new_tokens=args.tokens, seed=7)  # λ=0.5 coins of seed 7: 0 1 0 1
    eos = (tokenizer.eos_token_id,)
    modes: dict[str, LiveTeaching | None] = {
        "SFT": None,
        "gkd λ=0": LiveTeaching(teacher, settings, None, tokenizer.pad_token_id, eos),
        "gkd λ=1": LiveTeaching(teacher, replace(settings, lmbda=1.0), None, tokenizer.pad_token_id, eos),
        "gkd λ=0.5": LiveTeaching(teacher, replace(settings, lmbda=0.5), None, tokenizer.pad_token_id, eos),
    }
    with tempfile.TemporaryDirectory() as tmp:
        training = TrainingArguments(output_dir=tmp, learning_rate=1e-5, report_to=[], use_cpu=True)
        trainer = MultitaskTrainer(model=student, args=training, causal=True, task_names=["cot"])
        trainer.create_optimizer()
        trainer.current_gradient_accumulation_steps = 1  # set by train(), which this bench does not run
        seconds: dict[str, list[float]] = {name: [] for name in modes}
        sampled = 0
        pieces: dict[str, list[float]] = {"student sampling": [], "teacher scoring": [], "full-vocabulary JSD": []}
        for step in range(args.rounds):
            trainer.state.global_step = step  # the λ=0.5 coin: steps 0.. of seed 1
            for name, live in modes.items():
                trainer.live, trainer._draw_at = live, (-1, -1)  # each mode draws micro-batch 0's coin
                seconds[name].append(_timed(lambda: _step(trainer, batch)))
            sampled += modes["gkd λ=0.5"].on_policy.draws_on_policy(step, 0)
            sample = partial(on_policy_batch, student, batch, settings, step, tokenizer.pad_token_id, eos)
            score = partial(teacher.score, batch["input_ids"], batch["attention_mask"], batch["input_ids"].shape[1])
            pieces["student sampling"].append(_timed(sample))
            pieces["teacher scoring"].append(_timed(score))
            pieces["full-vocabulary JSD"].append(_timed(partial(_jsd_step, target, len(tokenizer))))
    sft = statistics.mean(seconds["SFT"])
    print(f"\nseconds per step ({args.rounds} rounds; forward, backward, optimizer step):")
    print(f"  {'':<10} {'median':>7} {'mean':>7}  {'mean/SFT':>8}   each round")
    for name, values in seconds.items():
        note = f"  ({sampled}/{args.rounds} steps sampled)" if name == "gkd λ=0.5" else ""
        mean = statistics.mean(values)
        print(f"  {name:<10} {statistics.median(values):7.2f} {mean:7.2f}  {mean / sft:7.2f}x   {_list(values)}{note}")
    print("what a gkd step adds, each alone (seconds):")
    for name, values in pieces.items():
        print(f"  {name:<20} {statistics.median(values):6.2f} s   all: {_list(values)}")
    print(f"total wall time {time.perf_counter() - started:.0f} s")


def _step(trainer: Any, batch: dict[str, Any]) -> None:
    trainer.training_step(trainer.model, dict(batch))
    trainer.optimizer.step()
    trainer.optimizer.zero_grad()


def _jsd_step(tokens: int, vocabulary: int) -> None:
    """Forward and backward of JSD(β=0.5) over ``tokens`` positions of full logits (random values)."""
    import torch

    from cotfactory.students.distill_losses import generalized_jsd

    student = torch.randn(tokens, vocabulary, requires_grad=True)
    generalized_jsd(student, torch.randn(tokens, vocabulary), 0.5).mean().backward()


def _timed(work: Callable[[], Any]) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def _list(values: list[float]) -> str:
    return " ".join(f"{v:.2f}" for v in values)


# ------------------------------------------------------------------------------------------------ synthetic

LABELS = {
    "none": "SFT",
    "kd": "kd",
    "gkd0": "gkd λ=0",
    "gkd": "gkd λ=0.5",
    "sft+sft": "SFT+SFT",  # the SFT student, --continue-steps more steps of SFT
    "sft+gkd": "SFT+gkd",  # the SFT student, --continue-steps more steps of gkd λ=0.5 (GKD's own setting)
}
BASELINE = {"sft+gkd": "sft+sft"}  # what McNemar pairs a loss with (default: SFT)
GKD = ("gkd0", "gkd", "sft+gkd")


def label(loss: str, beta: float) -> str:
    return LABELS[loss] + (f" β={beta:g}" if loss in GKD and beta != 0.5 else "")


def student_dir(folder: Path, loss: str, seed: int, beta: float) -> Path:
    """Each loss's student per seed; a gkd student with another β than 0.5 in a folder of its own."""
    beta_part = f"-b{beta:g}" if loss in GKD and beta != 0.5 else ""
    return folder / f"student-{loss}{beta_part}-{seed}"


def loss_flags(loss: str, teacher: Path, on_policy_tokens: int, beta: float) -> tuple[str, ...]:
    if loss in ("none", "kd", "sft+sft"):
        return ("--distill", "none" if loss == "sft+sft" else loss)
    lmbda = "0" if loss == "gkd0" else "0.5"
    return ("--distill", "gkd", "--teacher", str(teacher), "--lmbda", lmbda, "--beta", str(beta),
            "--on-policy-tokens", str(on_policy_tokens))  # fmt: skip


def synthetic_run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(args.threads)
    plan = synthetic.PLANS[args.plan]
    steps = args.student_steps or plan.student_steps
    seeds = tuple(int(s) for s in args.seeds.split(","))
    losses = [loss for loss in args.losses.split(",") if loss]
    unknown = set(losses) - set(LABELS)
    if unknown:
        sys.exit(f"unknown losses {sorted(unknown)}; choose from {', '.join(LABELS)}")
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        teacher, run, test = _teacher_and_run(folder, plan, args)
        kept = len(read_jsonl(run / "filtered.jsonl"))
        print(
            f"students: scratch:llama-tiny, finetune-cot, full fine-tuning, {steps} steps x {plan.batch_size}, "
            f"lr {plan.student_lr:g}, on {kept} kept samples; kd alpha 0.5; gkd beta {args.beta:g}, samples at T=1 "
            f"up to {args.on_policy_tokens} tokens; {torch.get_num_threads()} torch thread(s)"
        )
        results: dict = {}
        for loss in LABELS:
            for seed in seeds:
                out = student_dir(folder, loss, seed, args.beta)
                if (out / "eval.json").exists() and (out / "train_seconds").exists():
                    summary, correct, _ = _kept_evaluation(out)
                    train_s, note = float((out / "train_seconds").read_text()), "kept"
                elif loss in losses:
                    extra = loss_flags(loss, teacher, args.on_policy_tokens, args.beta)
                    student, count = _start(loss, folder, seed, steps, args.continue_steps)
                    _, train_s = synthetic.train(
                        run, out, student, count, plan.batch_size, plan.student_lr, seed, *extra
                    )
                    (out / "train_seconds").write_text(f"{train_s:.1f}")
                    summary, correct, eval_s = synthetic.evaluate(out, test)
                    note = f"eval {eval_s:.0f} s"
                else:
                    continue
                results[(loss, seed)] = {**summary, "per_problem": correct, "train_s": train_s}
                print(
                    f"  {label(loss, args.beta):<14} seed {seed}  accuracy {summary['accuracy']:.2f}  "
                    f"(train {train_s:.0f} s, {note})",
                    flush=True,
                )
    _table(results, seeds, plan.test, args.beta)
    print(f"total wall time {time.perf_counter() - started:.0f} s")


def _start(loss: str, folder: Path, seed: int, steps: int, more: int) -> tuple[str, int]:
    """(student spec, steps): a scratch llama-tiny, or for sft+* the seed's SFT student trained ``more`` steps on."""
    if not loss.startswith("sft+"):
        return "scratch:llama-tiny", steps
    sft = folder / f"student-none-{seed}"
    if not (sft / "model.safetensors").exists():
        sys.exit(f"{loss} continues the SFT student of seed {seed}: add 'none' to --losses first")
    return str(sft), more


def _teacher_and_run(folder: Path, plan: Any, args: argparse.Namespace) -> tuple[Path, Path, Path]:
    """(the trained teacher, its run with kept samples, the held-out problems): reused when ``folder`` has them."""
    _, transfer, test = synthetic.write_data(folder, plan, args.seed, 10, 99)
    teacher = folder / "teacher"
    if (teacher / "student.json").exists():
        print(f"teacher: {teacher} (kept from an earlier call)")
    else:
        gold = folder / "teacher-gold.jsonl"
        _, seconds = synthetic.train(
            gold, teacher, "scratch:llama-small", plan.teacher_steps, plan.batch_size, plan.teacher_lr, 0
        )
        print(f"teacher: scratch:llama-small, {plan.teacher_steps} steps x {plan.batch_size}: {seconds:.0f} s")
        summary, _, _ = synthetic.evaluate(teacher, test)
        print(f"teacher held-out accuracy (eval, greedy): {summary['accuracy']:.2f}")
    run = folder / "run"
    if (run / "filtered.jsonl").exists():
        print(f"run: {run} (kept)")
    else:
        serving = folder / "teacher-hf"  # the teacher with a plain chat template (see distill_synthetic)
        serving = serving if serving.exists() else synthetic.serving_copy(teacher, folder)
        generated, seconds = synthetic.generate(serving, transfer, folder, 0.7, args.logprobs)
        synthetic.cli("filter", generated, *(("--correct",) if plan.correct_only else ()))
        print(f"generate + filter: {len(read_jsonl(generated / 'filtered.jsonl'))} kept, generated in {seconds:.0f} s")
        synthetic.print_funnel(generated)
    return teacher, run, test


def _kept_evaluation(out: Path) -> tuple[dict, dict[str, bool], float]:
    correct = {row["problem_id"]: bool(row["correct"]) for row in read_jsonl(out / "predictions.jsonl")}
    return json.loads((out / "eval.json").read_text()), correct, 0.0


def _table(results: dict, seeds: tuple[int, ...], problems: int, beta: float) -> None:
    from cotfactory.stats import format_accuracy

    print(f"\nheld-out accuracy of the llama-tiny students on {problems} problems (seeds {seeds}, equal steps):")
    print(f"  {'loss':<14} {'mean':>5}  {'per seed':<12} {'pooled [95% Wilson]':<33} {'McNemar p vs':<22} train")
    for loss in LABELS:
        runs = [results[(loss, seed)] for seed in seeds if (loss, seed) in results]
        if not runs:
            continue
        accuracies = [r["accuracy"] for r in runs]
        pooled = format_accuracy(sum(r["correct"] for r in runs), sum(r["total"] for r in runs))
        baseline = BASELINE.get(loss, "none")
        paired_with = all((baseline, seed) in results for seed in seeds) and len(runs) == len(seeds)
        paired = _paired(results, loss, baseline, seeds, beta) if paired_with and loss != baseline else "-"
        per_seed = " ".join(f"{a:.2f}" for a in accuracies)
        train_s = sum(r["train_s"] for r in runs) / len(runs)
        print(
            f"  {label(loss, beta):<14} {sum(accuracies) / len(accuracies):>5.3f}  {per_seed:<12} {pooled:<33} "
            f"{paired:<22} {train_s:.0f} s"
        )


def _paired(results: dict, loss: str, baseline: str, seeds: tuple[int, ...], beta: float) -> str:
    """McNemar p of ``loss`` against ``baseline``, pairing the students of one seed on one problem."""
    from cotfactory.stats import mcnemar_p

    only_loss = only_base = 0
    for seed in seeds:
        mine, base = results[(loss, seed)]["per_problem"], results[(baseline, seed)]["per_problem"]
        only_loss += sum(mine[p] and not base[p] for p in mine)
        only_base += sum(base[p] and not mine[p] for p in mine)
    return f"{label(baseline, beta)}: {mcnemar_p(only_loss, only_base):.2f} ({only_loss}:{only_base})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parts = parser.add_subparsers(dest="part", required=True)
    step = parts.add_parser("cost", help="seconds of a gkd step vs an SFT step on one batch")
    step.add_argument("--teacher", default="embedded", help="teacher model (its every-other copy is the student)")
    step.add_argument("--batch", type=int, default=4)
    step.add_argument("--tokens", type=int, default=64, help="target tokens kept, and new tokens sampled")
    step.add_argument("--rounds", type=int, default=4)
    step.add_argument("--threads", type=int, default=1, help="torch threads (1: see distill_synthetic.py)")
    task = parts.add_parser("synthetic", help="SFT vs kd vs gkd at equal steps on the synthetic task")
    task.add_argument("--plan", choices=sorted(synthetic.PLANS), default="default")
    task.add_argument("--losses", default=",".join(LABELS), help=f"comma-separated, of: {', '.join(LABELS)}")
    task.add_argument("--seeds", default="1")
    task.add_argument("--seed", type=int, default=0, help="seed of the problems")
    task.add_argument("--logprobs", type=int, default=8, help="K recorded for kd")
    task.add_argument("--student-steps", type=int)
    task.add_argument("--on-policy-tokens", type=int, default=96, help="gkd: new tokens sampled at most")
    task.add_argument("--beta", type=float, default=0.5, help="gkd's β (0: forward KL, 1: reverse KL)")
    task.add_argument("--continue-steps", type=int, default=150, help="sft+sft, sft+gkd: steps after SFT's")
    task.add_argument("--threads", type=int, default=1)
    task.add_argument("--keep", help="work in this folder and keep it; reuse what an earlier call left there")
    args = parser.parse_args()
    cost(args) if args.part == "cost" else synthetic_run(args)


if __name__ == "__main__":
    main()
