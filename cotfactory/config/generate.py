"""The ``generate`` configuration: one pydantic model, fed by defaults < ``--config FILE`` < flags.

Each field's description feeds ``--help`` and the README's reference, so it cannot drift.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cotfactory.errors import ConfigError


class GenerateConfig(BaseModel):
    """Everything ``cotfactory generate`` needs: data, templates, sampling grid, teacher, budget."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    input: str = Field(description="Dataset file to read problems from.")
    format: str = Field("jsonl", description="Loader: gsm8k, svamp, cqa, strategyqa, jsonl, csv.")
    question_field: str = Field("question", description="Generic jsonl/csv: field holding the question.")
    answer_field: str = Field("answer", description="Generic jsonl/csv: field holding the gold answer.")
    id_field: str = Field("id", description="Generic jsonl/csv: field holding the problem id.")
    answer_type: Literal["number", "choice", "yes_no", "text"] | None = Field(
        None, description="Generic jsonl/csv: answer type of every problem (default text)."
    )
    limit: int | None = Field(None, gt=0, description="Use only the first N problems (after sharding).")
    shard: str | None = Field(None, description="I/N: keep problems whose position modulo N is I.")
    # prompts
    templates: list[str] = Field(["zero-shot-cot"], min_length=1, description="Template names or YAML paths.")
    prompts_dir: list[str] = Field([], description="Extra folders searched for templates before the bundled ones.")
    # sampling grid
    temperatures: list[float] = Field([0.7], min_length=1, description="Sampling temperatures of the grid.")
    seeds: list[int] = Field([0], min_length=1, description="Seeds of the grid.")
    samples_per_setting: int = Field(1, ge=1, description="Samples per (problem, template, temperature, seed).")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="Nucleus sampling bound.")
    max_tokens: int = Field(256, gt=0, description="Completion token limit of each request.")
    length_retry_tokens: int | None = Field(
        None,
        ge=0,
        description="max_tokens of the one retry after a 'length' finish (default 2 × max_tokens; 0: no retry).",
    )
    # teacher
    teacher: Literal["openai", "hf", "replay"] = Field("hf", description="Teacher adapter.")
    model: str | None = Field(
        None, description="Model name (openai), path/hub id/.gguf file (hf; default: embedded SmolLM2), label (replay)."
    )
    base_url: list[str] = Field([], description="OpenAI-compatible base URL(s); several spread the load.")
    api_key_env: str | None = Field(
        "OPENAI_API_KEY", description="Name of the environment variable holding the API key ('' for none)."
    )
    concurrency: int = Field(16, ge=1, le=4096, description="Requests in flight at once (openai).")
    rpm: float | None = Field(None, gt=0, description="Requests-per-minute limit (openai).")
    tpm: float | None = Field(None, gt=0, description="Tokens-per-minute limit (openai).")
    timeout: float = Field(120.0, gt=0, description="Seconds before one HTTP attempt times out.")
    max_attempts: int = Field(6, ge=1, le=50, description="Attempts per request on transient errors.")
    use_n: Literal["auto", "always", "never"] = Field(
        "auto", description="Ask for several samples with n>1 (auto: until the server shows it ignores n)."
    )
    batch_size: int = Field(16, ge=1, description="Sequences decoded together (hf).")
    device: str = Field("auto", description="hf device: auto, cpu, cuda, cuda:1, mps.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="hf weights dtype (auto: bfloat16 on GPUs that support it, else float32)."
    )
    replay: str | None = Field(None, description="replay: recorded completions (DSS PaLM files or Batch API JSONL).")
    # SCOTT contrastive decoding (hf teacher)
    contrastive: bool = Field(False, description="SCOTT contrastive decoding: rationales for the gold answer (hf).")
    contrast_weight: float = Field(0.5, ge=0.0, description="lambda: weight of the perturbed-answer context.")
    plausibility: float | None = Field(
        None, gt=0.0, le=1.0, description="alpha: only tokens with p >= alpha * max p may be chosen (off if unset)."
    )
    perturb: Literal["auto", "choice", "flip", "number", "empty"] = Field(
        "auto", description="Perturbed answer: another choice, yes/no flipped, a nearby number, or empty."
    )
    counterfactual: bool = Field(False, description="Also write counterfactual rationales (for the perturbed answer).")
    # run
    out: str = Field(description="Run directory.")
    max_total_tokens: int | None = Field(None, gt=0, description="Stop before the run's tokens would exceed this.")
    price_table: str | None = Field(None, description="YAML/JSON: model → {prompt, completion} USD per 1M tokens.")
    retry_failed: bool = Field(False, description="Send again the requests that failed permanently before.")

    @field_validator("shard")
    @classmethod
    def _shard_form(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            index, count = (int(part) for part in value.split("/"))
        except ValueError:
            raise ValueError(f"'{value}' is not of the form I/N, e.g. 0/4") from None
        if not 0 <= index < count:
            raise ValueError(f"'{value}': need 0 <= I < N")
        return value

    @field_validator("api_key_env")
    @classmethod
    def _empty_is_none(cls, value: str | None) -> str | None:
        return value or None

    @field_validator("temperatures")
    @classmethod
    def _temperature_range(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 <= value <= 5.0:
                raise ValueError(f"temperature {value} is outside 0..5")
        return values

    @model_validator(mode="after")
    def _teacher_needs(self) -> GenerateConfig:
        if self.teacher == "openai" and not self.model:
            raise ValueError("teacher 'openai' needs 'model' (the served model's name)")
        if self.teacher == "replay" and not self.replay:
            raise ValueError("teacher 'replay' needs 'replay' (the recorded completions)")
        if self.contrastive and self.teacher != "hf":
            raise ValueError(
                f"contrastive decoding needs the next-token logits of a local model (--teacher hf); "
                f"teacher '{self.teacher}' cannot give them"
            )
        if self.counterfactual and not self.contrastive:
            raise ValueError("counterfactual needs contrastive")
        return self

    @property
    def shard_pair(self) -> tuple[int, int] | None:
        if self.shard is None:
            return None
        index, count = (int(part) for part in self.shard.split("/"))
        return index, count

    @property
    def retry_tokens(self) -> int:
        """max_tokens of the length retry, 0 when off."""
        if self.length_retry_tokens is None:
            return 2 * self.max_tokens
        return self.length_retry_tokens


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of config keys; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys to values")
    return data


def build_config(
    model: type[BaseModel], file_values: dict[str, Any], flag_values: dict[str, Any], source: str = "config"
) -> Any:
    """Merge defaults < file < flags (a flag left unset is ``None`` and does not override)."""
    merged = {**file_values, **{k: v for k, v in flag_values.items() if v is not None}}
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, model, source)) from None


def describe_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first error as one line: where, which field, what is wrong, and a suggestion."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains the rest
    field = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: unknown key '{field}'{hint}"
    if err["type"] == "missing":
        return f"{source}: '{field}' is required"
    message = err["msg"].removeprefix("Value error, ")
    if not field:
        return f"{source}: {message}"
    return f"{source}: field '{field}': {message} (got {err.get('input')!r})"
