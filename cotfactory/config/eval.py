"""The ``eval`` configuration: which held-out problems a student is scored on, and how."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from cotfactory.config.fields import RUNTIME, argument, flag


class EvalSettings(BaseModel):
    """Held-out problems and decoding limits: shared by ``cotfactory eval`` and a pipeline's ``eval:``."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="Held-out problems file.")
    format: str = Field("jsonl", description="Loader of the file.")
    limit: int | None = Field(None, ge=1, description="Evaluate the first N problems.")
    answer_type: str | None = Field(None, description="Generic jsonl/csv: answer type.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together.", json_schema_extra=RUNTIME)
    max_new_tokens: int = Field(256, ge=1, description="Tokens a student may write.")
    explain: bool = Field(True, description="step-by-step: also write each rationale on request (explain:).")
    in_context: int | None = Field(
        None,
        ge=0,
        description="K of the student's training examples before each prompt (default: as it was trained).",
    )


class EvalConfig(EvalSettings):
    """Everything ``cotfactory eval`` needs."""

    folder: str = Field(
        description="A folder made by `cotfactory train-student`, or a model (embedded, folder, .gguf) to evaluate "
        "untrained in the label-only format (needs --out).",
        json_schema_extra=argument(),
    )
    out: str | None = Field(None, description="predictions.jsonl path (default FOLDER/predictions.jsonl).")
    lm_eval: str | None = Field(
        None,
        description="Also write an lm-evaluation-harness task over the same problems, in the student's prompt "
        "format, to this folder, with the lm_eval command that cross-checks this evaluation.",
        json_schema_extra=flag("lm-eval", metavar="DIR"),
    )
