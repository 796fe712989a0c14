"""The ``train-student`` configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cotfactory.config.fields import RUNTIME, argument


class TrainConfig(BaseModel):
    """Everything ``cotfactory train-student`` needs: data, method, student, LoRA and optimiser settings."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(
        description="Run directory (its filtered.jsonl), JSONL file, datasets folder, or dataset file.",
        json_schema_extra=argument(),
    )
    format: str | None = Field(None, description="Read input with this problem loader (gsm8k, strategyqa, …).")
    method: str = Field(description="label-only, step-by-step, finetune-cot, socratic, socratic-unified, scott.")
    student: str = Field(description="Student: folder, hub id, .gguf file, or scratch:t5-tiny / scratch:llama-tiny.")
    out: str = Field(description="Output folder: adapter, tokenizer, student.json, metrics.jsonl.")
    lora_r: int = Field(16, ge=0, description="LoRA rank; 0 trains every weight (full fine-tuning).")
    lora_alpha: int = Field(32, ge=1, description="LoRA alpha.")
    lora_dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    lora_target: list[str] | None = Field(
        None, description="Modules to adapt (default: peft's choice per architecture)."
    )
    alpha: float = Field(
        0.5, ge=0.0, le=1.0, description="step-by-step: label-loss weight; scott: counterfactual weight."
    )
    distill: Literal["none", "kd", "slim", "reverse-kl", "jsd", "gkd"] = Field(
        "none",
        description="Also learn the teacher's recorded top-K distributions (generate --logprobs): kd, slim, "
        "reverse-kl or jsd; gkd: on-policy, a live --teacher scores with full logits (generalized JSD only); "
        "none: hard labels only.",
    )
    distill_alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the distillation term against CE.")
    distill_temperature: float = Field(1.0, gt=0.0, description="Temperature of both sides of the divergence.")
    beta: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="jsd, gkd: teacher weight of the mixture (0: forward KL(teacher‖student), 1: reverse KL).",
    )
    lmbda: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="gkd: share of batches whose completions the student samples itself (the rest keep the "
        "teacher-written ones); drawn from the seed and step, so a resumed run draws the same.",
    )
    teacher: str | None = Field(
        None,
        description="Live teacher of gkd, --init-from-teacher and --hidden-cosine: model folder, hub id, .gguf "
        "file or 'embedded'; it must share the student's vocabulary.",
    )
    teacher_device: str = Field(
        "auto", description="Device of the live teacher (cpu, cuda:1, …).", json_schema_extra=RUNTIME
    )
    teacher_placement: Literal["shared", "per-rank"] = Field(
        "shared",
        description="Across processes (torchrun): shared — rank 0 alone holds the live teacher (on "
        "--teacher-device) and scores every process's batches; per-rank — every process loads its own copy "
        "(no waiting, N times the memory). One process: no effect.",
        json_schema_extra=RUNTIME,
    )
    on_policy_temperature: float = Field(
        1.0, gt=0.0, description="gkd: sampling temperature of the student's own completions (top-k/top-p off)."
    )
    on_policy_tokens: int | None = Field(
        None, ge=1, description="gkd: most tokens of a student completion (default: --max-target-length)."
    )
    init_from_teacher: Literal["none", "every-other", "importance"] = Field(
        "none",
        description="Build the causal student from the --teacher's layers: every-other (DistilBERT) or importance "
        "(the most important blocks); embeddings, final norm and head copied. A student as deep as the teacher "
        "is cut to half its layers.",
    )
    hidden_cosine: float = Field(
        0.0,
        ge=0.0,
        description="Add this weight times (1 - cos) between each student layer's output and the --teacher layer "
        "it came from (or its every-other match without --init-from-teacher); equal widths only.",
    )
    align: bool = Field(
        False, description="Distil across different teacher and student vocabularies, aligning tokens by text."
    )
    in_context: int = Field(
        0, ge=0, description="Put K other training examples of the same task before each source (in-context)."
    )
    epochs: float = Field(3.0, gt=0, description="Training epochs.")
    max_steps: int = Field(-1, description="Stop after this many optimizer steps (overrides epochs when > 0).")
    lr: float = Field(5e-4, gt=0, description="Learning rate.")
    batch_size: int = Field(8, ge=1, description="Examples per device per step.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    max_source_length: int = Field(512, ge=8, description="Prompt tokens kept (the end of longer prompts).")
    max_target_length: int = Field(256, ge=2, description="Written tokens kept.")
    max_answer_cut: float = Field(
        0.05,
        ge=0.0,
        le=1.0,
        description="Refuse to train when more than this share of examples would lose their answer to truncation.",
    )
    group_by_length: bool = Field(True, description="Batch examples of similar length (less padding).")
    seed: int = Field(42, description="Seed of initialisation, shuffling and dropout.")
    save_steps: int = Field(
        200, ge=1, description="Checkpoint every N steps (for --resume).", json_schema_extra=RUNTIME
    )
    logging_steps: int = Field(5, ge=1, description="Log losses every N steps.", json_schema_extra=RUNTIME)
    resume: bool = Field(
        False, description="Resume from the last checkpoint in OUT/checkpoints.", json_schema_extra=RUNTIME
    )
    limit: int | None = Field(None, ge=1, description="Use only the first N teaching records.")

    @model_validator(mode="after")
    def _live_teacher(self) -> TrainConfig:
        """--teacher is needed exactly by the options that run the teacher during training."""
        users = {
            "--distill gkd": self.distill == "gkd",
            f"--init-from-teacher {self.init_from_teacher}": self.init_from_teacher != "none",
            "--hidden-cosine": self.hidden_cosine > 0,
        }
        used_by = [name for name, used in users.items() if used]
        if self.teacher is None and used_by:
            raise ValueError(f"{used_by[0]} needs --teacher (a model folder, hub id, .gguf file or 'embedded')")
        if self.teacher is not None and not used_by:
            raise ValueError(
                "--teacher is only used by --distill gkd, --init-from-teacher and --hidden-cosine; the other "
                "--distill losses read the distributions recorded in the run"
            )
        if self.distill == "gkd" and self.align:
            raise ValueError("--distill gkd compares full vocabularies: --align does not apply to it")
        return self
