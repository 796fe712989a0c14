"""Student training throughput: cotfactory's trainer vs TRL's SFTTrainer, and length-grouped batches.

Same causal model (the embedded SmolLM2-135M), LoRA r=16 on q_proj,v_proj, batch 8, lr 5e-4, fp32:

1. cotfactory `run_train` (method finetune-cot, GSM8K solutions of data/gsm8k/train_sample.jsonl) vs
   TRL `SFTTrainer` on the very same texts as prompt/completion pairs ("{question} ###" /
   " {solution} --> {answer}"), gradient checkpointing off for both (TRL turns it on by default).
2. cotfactory with length-grouped batches vs random batches (dynamic padding in both), on GSM8K problems
   of widely varying length (the shortest and the longest of the shared train set, mixed): one epoch each,
   so both process exactly the same useful tokens. transformers' LengthGroupedSampler sorts within
   mega-batches of min(50, N // (4 x batch)) batches: below 8 batches (N < 64 at batch 8) it groups nothing.

Each configuration runs in its own process. Prints, measured in this one run: useful (non-pad) training
tokens/s from the trainer's own train_runtime, the padding share, and the process's peak RSS.

    python bench/train.py [--steps 10] [--mixed 64] [--skip-trl] [--skip-grouping]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "gsm8k" / "train_sample.jsonl"
SHARED = Path("/work/shared/data/gsm8k/train.jsonl")
BATCH, LR, LORA_R, LORA_ALPHA, LORA_DROPOUT, TARGETS = 8, 5e-4, 16, 32, 0.05, ["q_proj", "v_proj"]


class CountingCollator:
    """Wraps a collator; counts the non-pad tokens (attention mask) and all tokens of every batch."""

    useful = 0
    total = 0

    def __init__(self, inner: Any):
        self.inner = inner

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.inner(features)
        mask = batch["attention_mask"]
        CountingCollator.useful += int(mask.sum())
        CountingCollator.total += mask.numel()
        return batch


def run_cotfactory(data: str, fmt: str | None, group: bool, steps: int, out: Path) -> float:
    """Train with cotfactory's trainer; returns its train_runtime (seconds)."""
    from cotfactory.config.train import TrainConfig
    from cotfactory.model_loading import resolve_model_path
    from cotfactory.students import train as train_module

    inner = train_module.MultitaskCollator
    train_module.MultitaskCollator = lambda *a, **k: CountingCollator(inner(*a, **k))  # type: ignore[assignment,misc]
    config = TrainConfig(
        input=data,
        format=fmt,
        method="finetune-cot",
        student=resolve_model_path(None),
        out=str(out),
        lora_r=LORA_R,
        lora_alpha=LORA_ALPHA,
        lora_dropout=LORA_DROPOUT,
        lora_target=TARGETS,
        max_steps=steps,
        lr=LR,
        batch_size=BATCH,
        group_by_length=group,
        save_steps=10**6,
        logging_steps=steps,
    )
    train_module.run_train(config)
    last = (out / "metrics.jsonl").read_text().splitlines()[-1]
    return float(json.loads(last)["train_runtime"])


def run_trl(steps: int, out: Path) -> float:
    """Train with TRL's SFTTrainer on the same texts; returns its train_runtime (seconds)."""
    import datasets
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    from cotfactory.model_loading import quiet_transformers, resolve_model_path
    from cotfactory.students.methods.finetune_cot import COT_SEPARATOR
    from cotfactory.students.records import load_records

    quiet_transformers()
    path = resolve_model_path(None)
    rows = [
        {"prompt": f"{r.question} ###", "completion": f" {r.rationale}{COT_SEPARATOR}{r.answer}"}
        for r in load_records(str(SAMPLE), "gsm8k")
    ]
    tokenizer = AutoTokenizer.from_pretrained(path)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    args = SFTConfig(
        output_dir=str(out),
        per_device_train_batch_size=BATCH,
        max_steps=steps,
        learning_rate=LR,
        logging_steps=steps,
        save_strategy="no",
        report_to=[],
        gradient_checkpointing=False,
        bf16=False,
        seed=42,
        dataloader_pin_memory=False,
        disable_tqdm=True,
    )
    lora = LoraConfig(
        task_type="CAUSAL_LM", r=LORA_R, lora_alpha=LORA_ALPHA, lora_dropout=LORA_DROPOUT, target_modules=TARGETS
    )
    trainer = SFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(path),
        args=args,
        train_dataset=datasets.Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=lora,
    )
    trainer.data_collator = CountingCollator(trainer.data_collator)
    return float(trainer.train().metrics["train_runtime"])


def write_mixed_lengths(path: Path, count: int, seed: int = 0) -> Path:
    """A generic teaching JSONL: the count/2 shortest and count/2 longest GSM8K solutions, shuffled."""
    problems = [json.loads(line) for line in SHARED.read_text().splitlines() if line.strip()]
    problems.sort(key=lambda p: len(p["question"]) + len(p["answer"]))
    chosen = problems[: count // 2] + problems[-(count - count // 2) :]
    random.Random(seed).shuffle(chosen)
    with path.open("w") as handle:
        for i, problem in enumerate(chosen):
            solution, _, final = problem["answer"].rpartition("#### ")
            row = {"id": f"m{i}", "question": problem["question"], "rationale": solution.strip(), "answer": final}
            handle.write(json.dumps(row) + "\n")
    return path


# --------------------------------------------------------------------------------------------- processes


@dataclass
class Measure:
    name: str
    useful: int
    total: int
    runtime: float
    peak_rss_mb: float

    @property
    def useful_per_s(self) -> float:
        return self.useful / self.runtime


def worker(kind: str, steps: int, data: str, out: str) -> None:
    if kind == "cotfactory":
        runtime = run_cotfactory(str(SAMPLE), "gsm8k", True, steps, Path(out))
    elif kind == "trl":
        runtime = run_trl(steps, Path(out))
    else:
        runtime = run_cotfactory(data, None, kind == "grouped", steps, Path(out))
    print(
        "RESULT " + json.dumps({"useful": CountingCollator.useful, "total": CountingCollator.total, "runtime": runtime})
    )


def run_measured(name: str, kind: str, steps: int, data: Path, tmp: Path) -> Measure:
    """Run one configuration in a fresh process; reaping it with wait4 gives that process's own peak RSS."""
    cmd = [sys.executable, __file__, "--worker", kind, "--steps", str(steps), "--data", str(data)]
    with tempfile.TemporaryFile("w+") as stdout:
        proc = subprocess.Popen([*cmd, "--out", str(tmp / kind)], stdout=stdout, text=True)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            sys.exit(f"{name}: worker failed (exit {proc.returncode})")
        stdout.seek(0)
        line = next(line for line in stdout.read().splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    return Measure(name, result["useful"], result["total"], result["runtime"], usage.ru_maxrss / 1024)


def report(m: Measure) -> None:
    pad = 1 - m.useful / m.total
    print(
        f"  {m.name:<28} {m.useful:>7} useful tokens in {m.runtime:6.1f} s = {m.useful_per_s:6.1f} tok/s  "
        f"(padding {pad:5.1%}), peak RSS {m.peak_rss_mb:5.0f} MB",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--steps", type=int, default=10, help="optimizer steps of the cotfactory/TRL comparison (20: ~10 min alone)"
    )
    parser.add_argument(
        "--mixed", type=int, default=64, help="examples of the grouping comparison (one epoch; >= 8 batches)"
    )
    parser.add_argument("--skip-trl", action="store_true")
    parser.add_argument("--skip-grouping", action="store_true")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--data", default="", help=argparse.SUPPRESS)
    parser.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.steps, args.data, args.out)
        return

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        if not args.skip_trl:
            print(f"cotfactory vs TRL SFTTrainer: SmolLM2-135M, LoRA r={LORA_R} q,v, batch {BATCH}, {args.steps} steps")
            mine = run_measured("cotfactory run_train", "cotfactory", args.steps, SAMPLE, tmp)
            report(mine)
            try:
                import trl  # noqa: F401
            except ImportError:
                print("  TRL is not installed (pip install trl): comparison skipped")
            else:
                theirs = run_measured("TRL SFTTrainer", "trl", args.steps, SAMPLE, tmp)
                report(theirs)
                print(
                    f"  cotfactory / TRL: {mine.useful_per_s / theirs.useful_per_s:.2f} x tokens/s (target >= 1), "
                    f"peak RSS {mine.peak_rss_mb / theirs.peak_rss_mb:.2f} x"
                )
        if not args.skip_grouping:
            data = write_mixed_lengths(tmp / "mixed.jsonl", args.mixed)
            steps = args.mixed // BATCH
            print(f"length-grouped vs random batches: {args.mixed} GSM8K problems (short + long), one epoch")
            grouped = run_measured("cotfactory grouped", "grouped", steps, data, tmp)
            report(grouped)
            random_ = run_measured("cotfactory random", "random", steps, data, tmp)
            report(random_)
            print(
                f"  grouped / random: {grouped.useful_per_s / random_.useful_per_s:.2f} x useful tokens/s "
                "(target >= 1.3)"
            )


if __name__ == "__main__":
    main()
