"""The ``train-student`` configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

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
    distill: Literal["none", "kd", "slim", "reverse-kl", "jsd"] = Field(
        "none",
        description="Also learn the teacher's recorded top-K distributions (generate --logprobs): kd, slim, "
        "reverse-kl or jsd; none: hard labels only.",
    )
    distill_alpha: float = Field(0.5, ge=0.0, le=1.0, description="Weight of the distillation term against CE.")
    distill_temperature: float = Field(1.0, gt=0.0, description="Temperature of both sides of the divergence.")
    beta: float = Field(
        0.5, ge=0.0, le=1.0, description="jsd: teacher weight of the mixture (0: forward KL, 1: reverse KL)."
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
