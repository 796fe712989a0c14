"""``cotfactory train-student``: teaching records → method examples → LoRA (or full) fine-tuning.

Saves, in OUT (a ``StudentDir``): the PEFT adapter (``PeftModel.from_pretrained(base, OUT)`` loads it)
or the full model, the tokenizer, ``student.json`` (the resolved config and how to load the student),
``metrics.jsonl`` (loss per logging step and per task) and ``examples.jsonl`` (what the student learned
from, each example with its teacher sample's key). Checkpoints go to OUT/checkpoints.

Under ``torchrun --nproc_per_node N`` (DDP: gloo on CPU, nccl on GPUs) every process trains on its
share of each global batch of N × ``--batch-size`` examples, and only rank 0 writes OUT: the same
losses and weights as one process with ``--batch-size`` N times larger (see cotfactory.students.trainer).
A live ``--teacher`` (gkd, --hidden-cosine) is held by rank 0 alone, which scores every process's batches
(``--teacher-placement shared``, cotfactory.students.shared_teacher), or loaded by every process on its own
GPU (``per-rank``). --init-from-teacher reads its weights in every process, to build the same student,
and only rank 0 keeps them. The recorded distributions of ``--distill kd|slim|reverse-kl|jsd`` need no
teacher model in training at all.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cotfactory import __version__
from cotfactory.config.train import TrainConfig
from cotfactory.console import make_console
from cotfactory.errors import ConfigError
from cotfactory.run_dir import StudentDir, write_json_atomic, write_jsonl_atomic, write_text_atomic
from cotfactory.students import preflight
from cotfactory.students.features import MultitaskCollator, encode_example
from cotfactory.students.in_context import with_demonstrations
from cotfactory.students.methods import MethodSettings, build_examples, check_method
from cotfactory.students.model_card import write_model_card
from cotfactory.students.models import is_scratch, load_student
from cotfactory.students.progress import RichTrainingProgress
from cotfactory.students.records import load_records
from cotfactory.students.trainer import Distillation, LiveTeaching, MetricsFile, MultitaskTrainer

# TrainingArguments' name of each TrainConfig field it takes as it is
_TRAINER_ARGUMENTS = {
    "per_device_train_batch_size": "batch_size",
    "gradient_accumulation_steps": "grad_accum",
    "num_train_epochs": "epochs",
    "max_steps": "max_steps",
    "learning_rate": "lr",
    "logging_steps": "logging_steps",
    "save_steps": "save_steps",
    "seed": "seed",
}


@dataclass
class TrainResult:
    out: Path
    examples: int
    tasks: dict[str, int]
    steps: int
    final_loss: float | None


def run_train(config: TrainConfig, console: Console | None = None) -> TrainResult:
    """Train a student; everything that can be refused (the method, the data, the preflight) is refused
    before anything is written to ``config.out``."""
    import datasets
    import torch
    from transformers import TrainingArguments, set_seed
    from transformers.trainer_callback import PrinterCallback

    method = check_method(config.method)  # a student that could not be evaluated is not trained
    console = console or make_console(stderr=True)
    if not is_main_process():
        console = Console(quiet=True)  # rank 0 says it once
    records = load_records(config.input, config.format)
    if config.limit:
        records = records[: config.limit]
    model, tokenizer, causal = load_student(config.student, seed=config.seed)
    live_teacher = _live_teacher(config, model, tokenizer, causal)
    examples = build_examples(config.method, records, MethodSettings(alpha=config.alpha, causal=causal))
    task_names = sorted({e.task for e in examples})
    task_ids = {name: i for i, name in enumerate(task_names)}
    taught = with_demonstrations(examples, config.in_context, config.seed)  # in-context: K shots before each source
    features = [
        encode_example(e, tokenizer, causal, task_ids, config.max_source_length, config.max_target_length)
        for e in taught
    ]
    teacher, teacher_k = _teacher_targets(config, taught, features, tokenizer, console)
    model, live = _from_live_teacher(config, live_teacher, model, tokenizer, features, console)
    del live_teacher  # kept by ``live`` where training runs it; one that only gave weights is freed
    limit = preflight.context_limit_of(model, causal)
    lengths = preflight.measure(
        taught, features, config.max_source_length, config.max_target_length, limit, method.answer_at_end
    )
    preflight.check(lengths, config.max_answer_cut, config.max_target_length, limit)
    for line in lengths.lines(config.max_source_length, config.max_target_length):
        console.print(line, highlight=False, soft_wrap=True)
    if config.lora_r > 0:
        set_seed(config.seed)  # the adapter's initialisation is the seed's, whatever ran before
        model = _with_lora(model, config, causal)
    out = StudentDir(config.out)
    checkpoint = last_checkpoint(out.checkpoints) if config.resume else None
    datasets.disable_progress_bars()
    args = TrainingArguments(
        output_dir=str(out.checkpoints),
        save_total_limit=2,
        bf16=torch.cuda.is_available() and torch.cuda.is_bf16_supported(),
        report_to=[],
        remove_unused_columns=False,
        label_names=["labels"],
        disable_tqdm=True,  # one rich bar instead (RichTrainingProgress)
        dataloader_pin_memory=torch.cuda.is_available(),
        **{argument: getattr(config, field) for argument, field in _TRAINER_ARGUMENTS.items()},
        **_length_grouping(config.group_by_length),
        **_distributed_arguments(),
    )
    with args.main_process_first(local=False):  # the other ranks wait: OUT is rank 0's alone
        if args.should_save:
            out.path.mkdir(parents=True, exist_ok=True)
            if checkpoint is None:
                out.metrics.unlink(missing_ok=True)
                shutil.rmtree(out.checkpoints, ignore_errors=True)
            else:
                _trim_metrics(out.metrics, _checkpoint_step(checkpoint))
    start = getattr(model.config, "decoder_start_token_id", None) or tokenizer.pad_token_id
    progress = RichTrainingProgress(console, f"train {config.method}")
    trainer = MultitaskTrainer(
        model=model,
        args=args,
        train_dataset=datasets.Dataset.from_list(features),
        data_collator=MultitaskCollator(tokenizer.pad_token_id, causal, start, teacher, teacher_k),
        causal=causal,
        task_names=task_names,
        distillation=Distillation(config.distill, config.distill_alpha, config.distill_temperature, config.beta),
        live=live,
        callbacks=[MetricsFile(out.metrics), progress],
    )
    progress.trainer = trainer
    trainer.remove_callback(PrinterCallback)  # the raw {'loss': …} dicts: metrics.jsonl and the bar hold them
    output = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    if args.should_save:
        _save(out, trainer.model, tokenizer, config, causal, task_names, len(examples))
        write_jsonl_atomic(out.examples, (dataclasses.asdict(e) for e in examples))
        out.evaluation.unlink(missing_ok=True)  # an earlier student's score is not this one's
        write_model_card(out.path)  # after save_pretrained, whose generic card it replaces
    trainer.accelerator.wait_for_everyone()  # every rank returns once OUT is whole
    counts = {name: sum(e.task == name for e in examples) for name in task_names}
    return TrainResult(out.path, len(examples), counts, output.global_step, output.training_loss)


def _teacher_targets(
    config: TrainConfig, examples: list[Any], features: list[dict[str, Any]], tokenizer: Any, console: Console
) -> tuple[list[Any] | None, int]:
    """With --distill: each example's teacher distributions on its label positions (refused before any
    training when the run has none, or the vocabularies differ without --align)."""
    for index, feature in enumerate(features):
        feature["example_index"] = index
    if config.distill in ("none", "gkd"):  # gkd's teacher is live, not recorded
        return None, 0
    from cotfactory.students.teacher_targets import build_teacher_targets, open_distributions

    store, teacher_tokenizer, vocabulary = open_distributions(config.input, tokenizer, config.align)
    with store:
        targets, coverage, k = build_teacher_targets(
            examples, features, store, teacher_tokenizer, tokenizer, vocabulary
        )
    console.print(coverage.line(k), highlight=False, soft_wrap=True)
    if coverage.aligned_tokens == 0:
        raise ConfigError(f"{config.input}: no label token of any example aligned to a recorded teacher token")
    return targets, k


def _live_teacher(config: TrainConfig, student: Any, tokenizer: Any, causal: bool) -> Any:
    """The --teacher model, loaded once, when an option runs it (refused for another vocabulary)."""
    if config.teacher is None:
        return None
    if not causal:
        raise ConfigError(
            f"student '{config.student}' is a seq2seq model: --distill gkd, --init-from-teacher and --hidden-cosine "
            "need a causal (decoder-only) student"
        )
    import torch

    from cotfactory.students.on_policy import LiveTeacher

    device = config.teacher_device
    if device == "auto" and world_size() > 1 and torch.cuda.is_available():
        device = f"cuda:{os.environ.get('LOCAL_RANK', '0')}"  # its rank's GPU: "cuda" is GPU 0 in every rank
    # a shared teacher's weights are read by its holder, and by every rank that builds its student from them
    weights = not _shares_teacher(config) or is_main_process() or config.init_from_teacher != "none"
    return LiveTeacher.load(config.teacher, device, tokenizer, student, weights=weights)


def _shares_teacher(config: TrainConfig) -> bool:
    """Whether rank 0 holds the live teacher for every process (cotfactory.students.shared_teacher)."""
    return config.teacher_placement == "shared" and world_size() > 1


def _from_live_teacher(
    config: TrainConfig, teacher: Any, model: Any, tokenizer: Any, features: list[dict[str, Any]], console: Console
) -> tuple[Any, LiveTeaching | None]:
    """(the student, built from the teacher's layers with --init-from-teacher; what the teacher does in training)."""
    if teacher is None:
        return model, None
    from cotfactory.students.init_from_teacher import HiddenCosine, init_from_teacher
    from cotfactory.students.on_policy import OnPolicy

    layers = None
    if config.init_from_teacher != "none":
        calibration = [feature["input_ids"] for feature in features]
        model, layers = init_from_teacher(
            model, teacher.model, config.init_from_teacher, calibration, tokenizer.pad_token_id
        )
        console.print(layers.line(), highlight=False, soft_wrap=True)
    hidden = HiddenCosine.between(model, teacher.model, config.hidden_cosine, layers) if config.hidden_cosine else None
    on_policy = None
    if config.distill == "gkd":
        on_policy = OnPolicy(
            lmbda=config.lmbda,
            beta=config.beta,
            temperature=config.distill_temperature,
            sample_temperature=config.on_policy_temperature,
            max_new_tokens=config.on_policy_tokens or config.max_target_length,
            seed=config.seed,
        )
    if on_policy is None and hidden is None:  # the teacher only gave the student its weights
        return model, None
    scorer = teacher
    if _shares_teacher(config):
        from cotfactory.students.shared_teacher import SharedTeacher

        scorer = SharedTeacher(teacher if is_main_process() else None)  # the others' copy is freed with it
        console.print(
            f"live teacher {config.teacher} on {teacher.device}: held by rank 0, scoring the batches of all "
            f"{world_size()} processes",
            highlight=False,
            soft_wrap=True,
        )
    return model, LiveTeaching(scorer, on_policy, hidden, tokenizer.pad_token_id, _eos_ids(model, tokenizer))


def _eos_ids(model: Any, tokenizer: Any) -> tuple[int, ...]:
    """Every token that ends a student's completion: the tokenizer's EOS and the generation config's."""
    configured = getattr(model.generation_config, "eos_token_id", None)
    configured = configured if isinstance(configured, list) else [configured]
    return tuple(sorted({tokenizer.eos_token_id, *configured} - {None}))


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


def world_size() -> int:
    """The processes a launcher (torchrun, accelerate, deepspeed) started for this training: 1 alone."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main_process() -> bool:
    """Rank 0, the one that writes OUT and speaks; known from the launcher's environment before the
    process group exists."""
    return int(os.environ.get("RANK", "0")) == 0


def _distributed_arguments() -> dict[str, Any]:
    """TrainingArguments for DDP when a launcher started several processes. On CPU the Trainer picks
    no backend by itself: under torchrun each process trained alone (world size 1), all of them writing
    OUT; gloo is asked for only then, since one process with a backend finds no group to join. Every
    trainable weight takes part in each step (a LoRA's frozen base is not trainable), so DDP need not
    search the graph for unused ones."""
    import torch

    if world_size() <= 1:
        return {}
    cpu = {} if torch.cuda.is_available() else {"use_cpu": True, "ddp_backend": "gloo"}
    return {"ddp_find_unused_parameters": False, **cpu}


def _length_grouping(enabled: bool) -> dict[str, Any]:
    """transformers >= 5 names it train_sampling_strategy; 4.x had group_by_length."""
    from transformers import TrainingArguments

    fields = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in fields:
        return {"train_sampling_strategy": "group_by_length" if enabled else "random", "length_column_name": "length"}
    return {"group_by_length": enabled, "length_column_name": "length"}


def _save_base(model: Any, folder: Path) -> None:
    """The base model under a PEFT adapter, as plain transformers weights. Saved as it is, its adapted
    layers keep PEFT's names (``q_proj.base_layer.weight``, and the LoRA tensors), which
    ``from_pretrained`` does not read: those layers would load randomly initialised."""
    base = model.get_base_model()
    state = {
        name.replace(".base_layer.", "."): tensor for name, tensor in base.state_dict().items() if ".lora_" not in name
    }
    base.save_pretrained(folder, state_dict=state)


def _save(
    out: StudentDir,
    model: Any,
    tokenizer: Any,
    config: TrainConfig,
    causal: bool,
    task_names: list[str],
    examples: int,
) -> None:
    adapter = config.lora_r > 0
    built = is_scratch(config.student) or config.init_from_teacher != "none"
    if adapter and built:  # a random or teacher-built base exists nowhere else: keep it beside the adapter
        _save_base(model, out.path / "base")
        base = str((out.path / "base").resolve())
    elif adapter:
        from cotfactory.model_loading import resolve_model_path

        base = resolve_model_path(config.student)
    else:
        base = str(out.path.resolve())
    model.save_pretrained(out.path)
    tokenizer.save_pretrained(out.path)
    write_json_atomic(
        out.info,
        {
            "method": config.method,
            "cotfactory_version": __version__,
            "causal": causal,
            "adapter": adapter,
            "base": base,
            "tasks": task_names,
            "examples": examples,
            "config": config.model_dump(),
        },
    )
