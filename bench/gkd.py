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

real — real weights on real rationales. Teacher: the embedded SmolLM2-135M-Instruct. Student: `cotfactory prune
--width 0.48` of it (48.0 % of the parameters; width is the cut bench/prune.py found better than depth at ~50 %:
NLL 7.1 vs 9.7 right after pruning), calibrated on `--samples` of the training run's own texts. 0.48 because
0.5 could not be saved when this was measured (hidden 383 with 6 heads: transformers wants the hidden size a
multiple of the heads); `width_sizes` now rounds it so (0.5: hidden 378), and 0.48 stays the measured default.
Data: PaLM-540B's CommonsenseQA rationales replayed (bench/quality_real.py's runs), `filter --correct`: the
first `--train` *train* questions teach, the first `--heldout` *test* questions measure. `kd` needs the
teacher's top-K on those texts, which PaLM did not give: SmolLM2 scores each Fine-tune-CoT example
teacher-forced, in the very input the student trains on (question + " ###" + " rationale --> answer"), and its
top-K (`--k`) at every target token is stored as the run's distributions (what `generate --logprobs K` stores
for text it writes). That is also the input the live gkd teacher scores, so `kd` and `gkd λ=0` see the same
teacher on the same tokens: top-K + tail with α·KL + (1 − α)·CE vs full logits with JSD(β). Four arms from the
same pruned checkpoint, full fine-tuning, the same steps, batch, lr and seed: CE (`--distill none`), `kd` (α
0.5, T 1), `gkd` λ=0 and λ=0.5 (β `--beta`, on-policy samples of ≤ `--on-policy-tokens` at T=1). Rows: the
teacher and the pruned student before retraining as references, then the arms. Held-out NLL and
KL(teacher‖student) per target token (bench/distill_real.py's measure: the K+1 buckets, a lower bound of the
full-vocabulary KL), on the kept held-out rationales; accuracy by `cotfactory eval` on the held-out questions
(generation, and the choice ranked by log-likelihood after the student's own rationale), 95 % Wilson intervals,
chance 0.2 (5 choices); the teacher and the untrained cut are read in eval's label-only format (no rationale),
the arms in Fine-tune-CoT's.

    python bench/gkd.py cost [--teacher embedded] [--batch 4] [--tokens 64] [--rounds 4] [--threads 1]
    python bench/gkd.py synthetic [--losses none,kd,gkd0,gkd,sft+sft,sft+gkd] [--seeds 1] [--keep DIR]
                                  [--student-steps N] [--continue-steps N]
    python bench/gkd.py real [--train 224] [--heldout 64] [--steps 40] [--batch 4] [--lr 1e-4] [--samples 128]
                             [--tokens 128] [--on-policy-tokens 64] [--keep DIR]
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

import distill_real  # noqa: E402
import distill_synthetic as synthetic  # noqa: E402
import quality_real  # noqa: E402
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


def loss_flags(loss: str, teacher: Path | str, on_policy_tokens: int, beta: float) -> tuple[str, ...]:
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


# ------------------------------------------------------------------------------------------------ real

ARMS = ("none", "kd", "gkd0", "gkd")  # keys of LABELS: CE, kd, gkd λ=0, gkd λ=0.5
CHANCE = 0.2  # CommonsenseQA: 5 choices


def real_run(args: argparse.Namespace) -> None:
    import torch

    from cotfactory.model_loading import quiet_transformers
    from cotfactory.students.models import load_student

    torch.set_num_threads(args.threads)
    quiet_transformers()
    started = time.perf_counter()
    cqa = quality_real.TASKS["cqa"]
    plan = replace(
        quality_real.PLANS["default"], train=args.train, test=args.heldout, max_new_tokens=args.max_new_tokens
    )
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        teacher, tokenizer, _ = load_student("embedded")
        teacher.eval()
        train_run = taught_run(cqa, plan, folder / "train", teacher, tokenizer, args)
        heldout_task = replace(cqa, train=cqa.test)  # make_runs replays the questions of a task's train file
        heldout_run = taught_run(heldout_task, replace(plan, train=args.heldout), folder / "heldout", teacher,
                                 tokenizer, args)  # fmt: skip
        pruned = folder / "pruned"
        if not (pruned / "config.json").exists():
            began = time.perf_counter()
            prune_student(train_run, pruned, args)
            print(
                f"cotfactory prune --width {args.width:g} --samples {args.samples}: {time.perf_counter() - began:.0f} s"
            )
        student = load_student(str(pruned))[0]
        print(f"student: {shape_line(student, teacher)}", flush=True)

        heldout = distill_real.Taught(heldout_run, tokenizer)
        rows: dict[str, dict[str, Any]] = {}
        for key, model, spec in (("teacher", teacher, "embedded"), ("pruned", student, str(pruned))):
            began = time.perf_counter()
            rows[key] = measure(model, heldout, cqa, plan, spec, folder / f"eval-{key}", untrained=True)
            print(f"  {key} measured: {time.perf_counter() - began:.0f} s", flush=True)
        del teacher, student
        print(
            f"arms: from {pruned.name}, finetune-cot, full fine-tuning, {args.steps} steps x {args.batch}, lr "
            f"{args.lr:g}, seed {args.seed}, targets cut to {args.tokens} tokens; kd: top-{args.k}, alpha 0.5, T 1; "
            f"gkd: live teacher SmolLM2 (full logits), beta {args.beta:g}, on-policy samples at T=1 of <= "
            f"{args.on_policy_tokens} tokens; {torch.get_num_threads()} torch thread(s)",
            flush=True,
        )
        for loss in ARMS:
            rows[loss] = arm(loss, train_run, pruned, heldout, cqa, plan, folder, args)
        real_table(rows)
    print(f"total wall time {time.perf_counter() - started:.0f} s")


def taught_run(task: Any, plan: Any, folder: Path, teacher: Any, tokenizer: Any, args: argparse.Namespace) -> Path:
    """The replayed PaLM run, `filter --correct`, with the teacher's top-K recorded (kept when ``folder`` has it)."""
    from cotfactory.run_dir import RunDir

    run = folder / "run-filtered"
    if RunDir(run).teacher_tokenizer.is_dir():
        print(f"{task.train.name}: the run {run} (kept from an earlier call)")
        return run
    run = quality_real.make_runs(task, plan, folder)["filtered"]
    tokens, examples, outside, seconds = record_teacher(run, teacher, tokenizer, args.k)
    print(
        f"{task.train.name}: PaLM-540B rationales of the first {plan.train} questions, {examples} kept by filter "
        f"--correct; SmolLM2's top-{args.k} at their {tokens} target tokens (teacher-forced on the student's input), "
        f"mean mass outside the top K {outside:.3f}: {seconds:.0f} s",
        flush=True,
    )
    return run


def record_teacher(run: Path, teacher: Any, tokenizer: Any, k: int, batch: int = 8) -> tuple[int, int, float, float]:
    """The teacher's top-K at every target token of the run's Fine-tune-CoT examples, read teacher-forced
    from the student's own input and stored as the run's distributions (as `generate --logprobs K` stores
    them for text it writes); (tokens, examples, mean mass outside the K, seconds)."""
    import numpy as np
    import torch

    from cotfactory.distributions import TokenDistributions
    from cotfactory.run_dir import RunDir
    from cotfactory.store import Store
    from cotfactory.students.features import IGNORE, MultitaskCollator, encode_example
    from cotfactory.students.methods import MethodSettings, build_examples
    from cotfactory.students.records import load_records

    started = time.perf_counter()
    examples = build_examples("finetune-cot", load_records(str(run)), MethodSettings(causal=True))
    features = [encode_example(e, tokenizer, True, {"cot": 0}, 512, 256) for e in examples]  # as distill_real.Taught
    collate = MultitaskCollator(tokenizer.pad_token_id, True)
    found: dict[str, TokenDistributions] = {}
    for start in range(0, len(features), batch):
        chunk = features[start : start + batch]
        inputs = collate(chunk)
        with torch.inference_mode():
            logits = teacher(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"]).logits
        logprobs = logits.float().log_softmax(-1)
        for row, (example, feature) in enumerate(zip(examples[start : start + batch], chunk, strict=True)):
            at = [i for i, label in enumerate(feature["labels"]) if label != IGNORE]
            tokens = torch.tensor([feature["labels"][i] for i in at])
            rows = logprobs[row, [i - 1 for i in at]]  # position i - 1 predicts token i
            top = rows.topk(k, dim=-1)
            chosen = rows.gather(1, tokens[:, None])[:, 0]
            found[example.sample_key] = TokenDistributions.build(
                tokens.numpy(), chosen.numpy(), top.indices.numpy(), top.values.numpy()
            )
    with Store.in_run(run) as store:
        samples = [s.model_copy(update={"distributions": found[s.key]}) for s in store.samples(list(found))]
        store.add_samples(samples, replace=True)
    tokenizer.save_pretrained(str(RunDir(run).teacher_tokenizer))
    tails = np.concatenate([d.tail.astype(np.float64) for d in found.values()])
    return len(tails), len(found), float(np.exp(tails).mean()), time.perf_counter() - started


def prune_student(calibration: Path, out: Path, args: argparse.Namespace) -> None:
    synthetic.cli(
        "prune",
        *("--teacher", "embedded", "--calibration", calibration, "--samples", str(args.samples)),
        *("--width", str(args.width), "--max-length", "256", "--batch-size", "16", "--device", "cpu", "--out", out),
    )


def shape_line(student: Any, teacher: Any) -> str:
    config = student.config
    kept = sum(p.numel() for p in student.parameters()) / sum(p.numel() for p in teacher.parameters())
    return (
        f"{kept:.1%} of the teacher's parameters, {config.num_hidden_layers} layers, hidden {config.hidden_size}, "
        f"MLP {config.intermediate_size}, {config.num_attention_heads} query heads in "
        f"{config.num_key_value_heads} KV groups"
    )


def measure(
    model: Any, heldout: Any, task: Any, plan: Any, spec: str, out: Path, untrained: bool = False
) -> dict[str, Any]:
    """Held-out NLL and KL(teacher || student) per target token, and eval's accuracies (eval.json)."""
    nll, kl = distill_real.heldout_scores(model, heldout)
    out.mkdir(parents=True, exist_ok=True)
    return {"nll": nll, "kl": kl, "eval": quality_real.evaluate(task, plan, spec, out, untrained), "folder": out}


def arm(
    loss: str, run: Path, pruned: Path, heldout: Any, task: Any, plan: Any, folder: Path, args: argparse.Namespace
) -> dict[str, Any]:
    out = folder / f"student-{loss}"
    if (out / "row.json").exists() and (out / "eval.json").exists():
        row = json.loads((out / "row.json").read_text())
        print(f"  {LABELS[loss]:<10} kept from an earlier call", flush=True)
        return {**row, "eval": json.loads((out / "eval.json").read_text()), "folder": out}
    flags = loss_flags(loss, "embedded", args.on_policy_tokens, args.beta)
    output, train_s = synthetic.train(
        run, out, str(pruned), args.steps, args.batch, args.lr, args.seed,
        *("--max-source-length", "256", "--max-target-length", str(args.tokens), *flags),
    )  # fmt: skip
    if loss == "kd":
        print(f"  train-student: {synthetic.coverage_line(output)}")
    began = time.perf_counter()
    row = measure(distill_real.load_trained(out, pruned), heldout, task, plan, str(out), out)
    (out / "row.json").write_text(json.dumps({"nll": row["nll"], "kl": row["kl"], "train_s": train_s}))
    print(
        f"  {LABELS[loss]:<10} trained {train_s:.0f} s ({train_s / args.steps:.1f} s/step), measured "
        f"{time.perf_counter() - began:.0f} s",
        flush=True,
    )
    return {**row, "train_s": train_s}


def real_table(rows: dict[str, dict[str, Any]]) -> None:
    from cotfactory.stats import mcnemar_p

    total = rows["teacher"]["eval"]["total"]
    print(
        f"\nheld out: NLL and KL(T||S) per target token of the kept CQA-test PaLM rationales; accuracy on the "
        f"{total} CQA-test questions [95% Wilson], chance {CHANCE}; teacher and pruned read label-only (untrained)"
    )
    print(
        f"  {'row':<17} {'NLL/token':>9} {'KL(T||S)':>9}  {'generated answer':<22} {'ranked choice':<22} "
        f"{'ranked vs CE: McNemar p':<24} train"
    )
    base = quality_real.ranked_right(rows["none"]["folder"])
    for key, row in rows.items():
        name = {"teacher": "teacher SmolLM2", "pruned": "pruned, untrained", "none": "CE"}.get(key, LABELS.get(key))
        paired = "-"
        if key in ARMS and key != "none":
            mine = quality_real.ranked_right(row["folder"])
            only_mine = sum(mine[p] and not base[p] for p in mine)
            only_ce = sum(base[p] and not mine[p] for p in mine)
            paired = f"{mcnemar_p(only_mine, only_ce):.2f} ({only_mine}:{only_ce})"
        train = f"{row['train_s']:.0f} s" if "train_s" in row else "-"
        print(
            f"  {name:<17} {row['nll']:>9.3f} {row['kl']:>9.3f}  {quality_real.cell(row['eval'], 'gen'):<22} "
            f"{quality_real.cell(row['eval'], 'ranked'):<22} {paired:<24} {train}"
        )


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
    real = parts.add_parser("real", help="pruned SmolLM2 on PaLM CQA rationales: CE vs kd vs gkd at equal steps")
    real.add_argument("--train", type=int, default=224, help="CQA train questions (their PaLM rationales teach)")
    real.add_argument("--heldout", type=int, default=64, help="CQA test questions held out")
    real.add_argument("--samples", type=int, default=128, help="calibration samples of cotfactory prune")
    real.add_argument("--width", type=float, default=0.48, help="share of parameters kept")
    real.add_argument("--steps", type=int, default=40)
    real.add_argument("--batch", type=int, default=4)
    real.add_argument("--lr", type=float, default=1e-4)
    real.add_argument("--seed", type=int, default=0)
    real.add_argument("--tokens", type=int, default=128, help="target tokens kept (--max-target-length)")
    real.add_argument("--k", type=int, default=20, help="teacher top-K stored for kd")
    real.add_argument("--on-policy-tokens", type=int, default=64, help="gkd: new tokens sampled at most")
    real.add_argument("--beta", type=float, default=0.5, help="gkd's β")
    real.add_argument("--max-new-tokens", type=int, default=80, help="eval: tokens a student may write")
    real.add_argument("--threads", type=int, default=1)
    real.add_argument("--keep", help="work in this folder and keep it; trained arms found there are reused")
    args = parser.parse_args()
    {"cost": cost, "synthetic": synthetic_run, "real": real_run}[args.part](args)


if __name__ == "__main__":
    main()
