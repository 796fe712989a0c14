"""The ``prune`` configuration: which teacher is cut, on which calibration text, by how much."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cotfactory.config.fields import RUNTIME


class PruneConfig(BaseModel):
    """Everything ``cotfactory prune`` needs: exactly one of ``depth`` and ``width``."""

    model_config = ConfigDict(extra="forbid")

    teacher: str = Field(
        "embedded",
        description="The LLaMA-family model to cut: a model folder, a .gguf file, or embedded (SmolLM2-135M).",
    )
    calibration: str = Field(
        description="Calibration text: a run directory (question + text of its successful samples), a JSONL "
        "file (a string or {text, question|prompt} per line) or a text file (passages between blank lines)."
    )
    samples: int = Field(1024, ge=1, description="Calibration samples drawn (seeded) from --calibration.")
    depth: int | None = Field(
        None, ge=1, description="Keep N decoder layers: those that change their input most (block importance)."
    )
    width: float | None = Field(
        None,
        gt=0.0,
        lt=1.0,
        description="Keep this fraction of the parameters by cutting hidden channels, MLP neurons and query "
        "heads (within every KV group) of least activation.",
    )
    max_length: int = Field(512, ge=8, description="Calibration samples are cut to this many tokens.")
    seed: int = Field(0, description="Seed of the calibration draw.")
    out: str = Field(description="Folder for the pruned checkpoint, its tokenizer and prune.json (must be new).")
    batch_size: int = Field(8, ge=1, description="Calibration samples per forward pass.", json_schema_extra=RUNTIME)
    device: str = Field(
        "auto", description="Device of the calibration pass: auto, cpu, cuda.", json_schema_extra=RUNTIME
    )

    @model_validator(mode="after")
    def _one_axis(self) -> PruneConfig:
        if (self.depth is None) == (self.width is None):
            raise ValueError("give exactly one of --depth N (layers kept) or --width RATIO (parameters kept)")
        return self
