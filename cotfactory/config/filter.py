"""The ``filter`` configuration: which filters run, with which thresholds and scorers."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cotfactory.config.fields import RUNTIME, argument
from cotfactory.filters import FILTERS

DEFAULT_CHAIN = ["well_formed", "rationalized", "correct", "consistency", "reward", "dedup"]


class FilterConfig(BaseModel):
    """Which filters run, in ``chain`` order (each only when its own keys turn it on), and their settings."""

    model_config = ConfigDict(extra="forbid")

    run_dir: str = Field(description="Run directory made by `cotfactory generate`.", json_schema_extra=argument())
    chain: list[str] = Field(
        DEFAULT_CHAIN,
        min_length=1,
        description="Filters in the order they run; each runs when its keys below turn it on.",
    )
    well_formed: bool = Field(True, description="Drop failed, empty, truncated and answer-less samples.")
    rationalized: bool = Field(
        True, description="Keep rationalized samples (written for the gold answer given, --rationalize-failures)."
    )
    correct: bool = Field(False, description="Keep samples whose answer equals gold (or the pseudo-label).")
    consistency: float | None = Field(
        None, gt=0.0, le=1.0, description="Self-consistency: keep majority samples when agreement >= this."
    )
    weighted_votes: bool = Field(False, description="Weight consistency votes by reward score.")
    reward: str | None = Field(None, description="Scorer: a reward-model path or hub id, 'judge', or 'answer-gain'.")
    reward_threshold: float | None = Field(None, description="Keep samples scoring at least this.")
    top_k: int | None = Field(None, ge=1, description="Keep the k best-scored samples of each problem.")
    dedup: float | None = Field(None, gt=0.0, le=1.0, description="Drop near-duplicates at this 3-gram Jaccard.")
    tolerance: float = Field(1e-4, ge=0.0, description="Relative tolerance for numeric answers.")
    reward_batch_size: int = Field(
        16, ge=1, description="Samples scored per forward pass or judge wave.", json_schema_extra=RUNTIME
    )
    device: str = Field("auto", description="Device of local scorers: auto, cpu, cuda.", json_schema_extra=RUNTIME)
    scorer_model: str | None = Field(None, description="answer-gain: causal LM path/.gguf (default: embedded SmolLM2).")
    judge_template: str = Field("judge", description="judge: template rendering the judge prompt.")
    judge_teacher: str = Field("openai", description="judge: teacher adapter (openai, hf).")
    judge_model: str | None = Field(None, description="judge: model name / path.")
    judge_base_url: list[str] = Field([], description="judge: OpenAI-compatible base URL(s).")
    judge_api_key_env: str | None = Field("OPENAI_API_KEY", description="judge: variable holding the API key.")
    judge_concurrency: int = Field(16, ge=1, description="judge: requests in flight.", json_schema_extra=RUNTIME)
    explain: int = Field(
        0,
        ge=0,
        description="Print N example endings of each no_answer / wrong_answer drop (funnel.json keeps 5).",
        json_schema_extra=RUNTIME,
    )
    trust_remote_code: bool = Field(False, description="Allow a reward model's own code (off unless asked).")

    @field_validator("chain")
    @classmethod
    def _known_filters(cls, names: list[str]) -> list[str]:
        for name in names:
            if name not in FILTERS:
                raise ValueError(FILTERS.unknown(name))
        if len(set(names)) != len(names):
            raise ValueError("a filter is named twice")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> FilterConfig:
        if self.reward_threshold is not None and self.top_k is not None:
            raise ValueError("give reward_threshold or top_k, not both")
        if (self.reward_threshold is not None or self.top_k is not None or self.weighted_votes) and not self.reward:
            raise ValueError("reward_threshold, top_k and weighted_votes need reward (a scorer)")
        return self
