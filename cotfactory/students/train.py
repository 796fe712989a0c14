"""``cotfactory train-student``: teaching records → method examples → LoRA (or full) fine-tuning.

Saves, in OUT: the PEFT adapter (``PeftModel.from_pretrained(base, OUT)`` loads it) or the full
model, the tokenizer, ``student.json`` (the resolved config and how to load the student) and
``metrics.jsonl`` (loss per logging step and per task). Checkpoints go to OUT/checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cotfactory.errors import ConfigError
from cotfactory.export import write_json_atomic, write_text_atomic
from cotfactory.students import preflight
from cotfactory.students.config import TrainConfig
from cotfactory.students.examples import MethodSettings, TrainingExample, build_examples
from cotfactory.students.features import MultitaskCollator, encode_example
from cotfactory.students.models import is_scratch, load_student
from cotfactory.students.records import load_records
from cotfactory.students.trainer import MetricsFile, MultitaskTrainer

STUDENT_FILE = "student.json"
METRICS_FILE = "metrics.jsonl"
EXAMPLES_FILE = "examples.jsonl"  # what the student learned from, each with its teacher sample's key


@dataclass
class TrainResult:
    out: Path
    examples: int
    tasks: dict[str, int]
    steps: int
    final_loss: float | None


def run_train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    import datasets
    import torch
    from transformers import TrainingArguments

    console = console or Console(stderr=True)
    records = load_records(config.input, config.format)
    if config.limit:
        records = records[: config.limit]
    model, tokenizer, causal = load_student(config.student, seed=config.seed)
    examples = build_examples(config.method, records, MethodSettings(alpha=config.alpha, causal=causal))
    task_names = sorted({e.task for e in examples})
    task_ids = {name: i for i, name in enumerate(task_names)}
    features = [
        encode_example(e, tokenizer, causal, task_ids, config.max_source_length, config.max_target_length)
        for e in examples
    ]
    limit = preflight.context_limit_of(model, causal)
    lengths = preflight.measure(examples, features, config.max_source_length, config.max_target_length, limit)
    preflight.check(lengths, config.max_answer_cut, config.max_target_length, limit)
    for line in lengths.lines(config.max_source_length, config.max_target_length):
        console.print(line, highlight=False, soft_wrap=True)
    if config.lora_r > 0:
        model = _with_lora(model, config, causal)
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    checkpoint = last_checkpoint(out / "checkpoints") if config.resume else None
    if checkpoint is None:
        (out / METRICS_FILE).unlink(missing_ok=True)
        shutil.rmtree(out / "checkpoints", ignore_errors=True)
    else:
        _trim_metrics(out / METRICS_FILE, _checkpoint_step(checkpoint))
    datasets.disable_progress_bars()
    dataset = datasets.Dataset.from_list(features)
    bf16 = torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    args = TrainingArguments(
        output_dir=str(out / "checkpoints"),
        per_device_train_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        learning_rate=config.lr,
        logging_steps=config.logging_steps,
        save_steps=config.save_steps,
        save_total_limit=2,
        seed=config.seed,
        bf16=bf16,
        report_to=[],
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=not console.is_terminal,
        dataloader_pin_memory=torch.cuda.is_available(),
        **_length_grouping(config.group_by_length),
    )
    collator = MultitaskCollator(
        tokenizer.pad_token_id, causal, getattr(model.config, "decoder_start_token_id", None) or tokenizer.pad_token_id
    )
    trainer = MultitaskTrainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collator,
        causal=causal,
        task_names=task_names,
        callbacks=[MetricsFile(out / METRICS_FILE)],
    )
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    _save(out, trainer.model, tokenizer, config, causal, task_names, len(examples))
    _write_examples(out / EXAMPLES_FILE, examples)
    counts = {name: sum(e.task == name for e in examples) for name in task_names}
    return TrainResult(out, len(examples), counts, output.global_step, output.training_loss)


def last_checkpoint(folder: Path) -> Path | None:
    """The newest complete checkpoint: highest step (numerically) whose trainer_state.json was written —
    the Trainer writes it last, so a folder without it was cut off mid-save by a kill."""
    complete = [
        p for p in folder.glob("checkpoint-*") if _checkpoint_step(p) >= 0 and (p / "trainer_state.json").is_file()
    ]
    return max(complete, key=_checkpoint_step, default=None)


def _checkpoint_step(path: Path) -> int:
    step = path.name.removeprefix("checkpoint-")
    return int(step) if step.isdigit() else -1


def _trim_metrics(path: Path, step: int) -> None:
    """Keep the metrics logged up to the checkpoint being resumed: the steps after it are trained (and
    logged) again, and a kill may have cut the last line in half."""
    if not path.exists():
        return
    kept = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("step", step + 1) <= step and "train_runtime" not in row:
            kept.append(line + "\n")
    write_text_atomic(path, "".join(kept))


def _with_lora(model: Any, config: TrainConfig, causal: bool) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    lora = LoraConfig(
        task_type=TaskType.CAUSAL_LM if causal else TaskType.SEQ_2_SEQ_LM,
        r=config.lora_r,
        lora_alpha=config.lora_alpha,
        lora_dropout=config.lora_dropout,
        target_modules=config.lora_target,
    )
    try:
        return get_peft_model(model, lora)
    except ValueError as exc:
        raise ConfigError(f"lora_target: {str(exc).splitlines()[0]}") from None


def _length_grouping(enabled: bool) -> dict[str, Any]:
    """transformers >= 5 names it train_sampling_strategy; 4.x had group_by_length."""
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length" if enabled else "random", "length_column_name": "length"}
    return {"group_by_length": enabled, "length_column_name": "length"}


def _save(
    out: Path, model: Any, tokenizer: Any, config: TrainConfig, causal: bool, task_names: list[str], examples: int
) -> None:
    adapter = config.lora_r > 0
    if adapter and is_scratch(config.student):  # a random base exists nowhere else: keep it beside the adapter
        model.get_base_model().save_pretrained(out / "base")
        base = str((out / "base").resolve())
    elif adapter:
        from cotfactory.models import resolve_model_path

        base = resolve_model_path(config.student)
    else:
        base = str(out.resolve())
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    write_json_atomic(
        out / STUDENT_FILE,
        {
            "method": config.method,
            "causal": causal,
            "adapter": adapter,
            "base": base,
            "tasks": task_names,
            "examples": examples,
            "config": config.model_dump(),
        },
    )


def _write_examples(path: Path, examples: list[TrainingExample]) -> None:
    from cotfactory.export import write_jsonl_atomic

    write_jsonl_atomic(path, (dataclasses.asdict(e) for e in examples))


def read_student(folder: str | Path) -> dict[str, Any]:
    path = Path(folder) / STUDENT_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found; train a student with `cotfactory train-student` first") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}:{exc.lineno}: not valid JSON ({exc.msg})") from None
