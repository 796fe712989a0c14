"""The ``generate`` configuration: one pydantic model, fed by defaults < ``--config FILE`` < flags.

Each field's description feeds ``--help`` and the README's reference, so it cannot drift.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)

from cotfactory.config.fields import RUNTIME, flag
from cotfactory.distributions import MAX_K
from cotfactory.teachers import TEACHERS, teacher_options
from cotfactory.teachers.base import TeacherOptions


class GenerateConfig(BaseModel):
    """Everything ``cotfactory generate`` needs: data, templates, sampling grid, teacher, budget."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    # data
    input: str = Field(description="Dataset file to read problems from.")
    format: str = Field("jsonl", description="Problem loader: gsm8k, svamp, cqa, esnli, strategyqa, jsonl, csv.")
    question_field: str = Field("question", description="Generic jsonl/csv: field holding the question.")
    answer_field: str = Field("answer", description="Generic jsonl/csv: field holding the gold answer.")
    id_field: str = Field("id", description="Generic jsonl/csv: field holding the problem id.")
    answer_type: Literal["number", "choice", "yes_no", "text"] | None = Field(
        None, description="Generic jsonl/csv: answer type of every problem (default text)."
    )
    limit: int | None = Field(None, gt=0, description="Use only the first N problems (after sharding).")
    shard: str | None = Field(None, description="I/N: keep problems whose position modulo N is I.")
    # prompts
    templates: list[str] = Field(
        ["zero-shot-cot"], min_length=1, description="Template names or YAML paths.", json_schema_extra=flag("template")
    )
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
    # adaptive sampling
    until_agree: int | None = Field(
        None, ge=1, description="Adaptive: sample a problem in waves until K of its samples agree on an answer."
    )
    until_correct: int | None = Field(
        None, ge=1, description="Adaptive: sample a problem in waves until K of its samples reach the gold answer."
    )
    max_samples: int | None = Field(
        None,
        ge=1,
        description="Adaptive: at most this many samples of a problem (default: the grid's, templates × "
        "temperatures × seeds × samples per setting; more repeat the grid with further sample indices).",
    )
    rationalize_failures: str | None = Field(
        None,
        description="Template (e.g. rationalize) asked for a rationale of the gold answer, once for every problem "
        "whose samples all missed it; marked mode 'rationalized'.",
    )
    # teacher: the adapter's own options (see cotfactory.teachers); the flat form still loads
    teacher: SerializeAsAny[TeacherOptions] = Field(
        default_factory=lambda: teacher_options({"kind": "hf"}),
        description="Teacher adapter and its options.",
    )
    logprobs: int = Field(
        0,
        ge=0,
        le=MAX_K,
        description="Record the teacher's top-K logprobs of every generated token (0: off); a larger K "
        "re-requests only the samples that lack it.",
    )
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
    # step-level tree search (PathFinder; hf teacher)
    search: Literal["sample", "tree"] = Field(
        "sample",
        description="sample: each request one rationale; tree: step-level tree search (PathFinder): hf, or "
        "openai with a completion-form template.",
    )
    branch: int = Field(3, ge=1, description="Tree search: sampled steps per live branch and depth.")
    beam: int = Field(4, ge=1, description="Tree search: paths kept after each depth; candidates stored per setting.")
    max_depth: int = Field(8, ge=1, description="Tree search: steps per path at most.")
    step_delimiter: str = Field("\n", min_length=1, description="Tree search: a step ends at this after some text.")
    step_tokens: int = Field(64, ge=1, description="Tree search: tokens of one step at most (cut there, it goes on).")
    repeat_similarity: float = Field(
        0.8,
        gt=0.0,
        le=1.0,
        description="Tree search: word-bigram Jaccard at which a step repeats an earlier step of its branch "
        "(drawn again; dropped after two).",
    )
    # run
    out: str = Field(description="Run directory.")
    max_total_tokens: int | None = Field(
        None, gt=0, description="Stop before the run's tokens would exceed this.", json_schema_extra=RUNTIME
    )
    price_table: str | None = Field(
        None, description="YAML/JSON: model → {prompt, completion} USD per 1M tokens.", json_schema_extra=RUNTIME
    )
    retry_failed: bool = Field(
        False, description="Send again the requests that failed permanently before.", json_schema_extra=RUNTIME
    )
    # distribution (cotfactory.ray_launch): where the run happens, never what it writes
    ray: str | None = Field(
        None,
        description="Run the dataset as --shards Ray tasks and merge them into out: 'local' starts Ray here, "
        "'auto' joins the cluster `ray start` made on this node, or HOST:PORT (pip install cotfactory[ray]).",
        json_schema_extra={**RUNTIME, "metavar": "ADDRESS"},
    )
    shards: int | None = Field(
        None,
        ge=1,
        description="With --ray: shards, one Ray task each (spread over the nodes).",
        json_schema_extra=RUNTIME,
    )
    shards_dir: str | None = Field(
        None,
        description="With --ray: the shards' run directories, at this path on each node's own disk (default "
        "out/shards); a shard from another node is copied here on the driver's node.",
        json_schema_extra=RUNTIME,
    )

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

    @field_validator("temperatures")
    @classmethod
    def _temperature_range(cls, values: list[float]) -> list[float]:
        for value in values:
            if not 0.0 <= value <= 5.0:
                raise ValueError(f"temperature {value} is outside 0..5")
        return values

    @model_validator(mode="before")
    @classmethod
    def _teacher_section(cls, data: Any) -> Any:
        """Fold the flat form (``teacher: openai`` with ``model``, ``base_url``… beside it) into
        ``teacher: {kind: openai, model: …}``. A key of another adapter (``concurrency`` with
        ``teacher: hf``, left in a config file whose teacher a flag switched) is checked and dropped,
        as it was always ignored."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        teacher = data.get("teacher", "hf")
        if isinstance(teacher, TeacherOptions):
            return data
        section = {"kind": teacher} if isinstance(teacher, str) else dict(teacher or {})
        kind = section.get("kind")
        if isinstance(kind, str) and kind not in TEACHERS:
            raise ValueError(TEACHERS.unknown(kind))
        chosen = _options_fields(kind)
        for name in [n for n in data if n not in cls.model_fields]:
            if name in chosen:
                section[name] = data.pop(name)  # a flag beside a file's teacher section wins
            elif owners := _owners(name):
                _check_unused_option(owners[0], name, data.pop(name))
        data["teacher"] = section
        return data

    @field_validator("teacher", mode="before")
    @classmethod
    def _adapter_options(cls, value: Any) -> Any:
        if isinstance(value, dict):
            if isinstance(value.get("kind"), str) and value["kind"] not in TEACHERS:
                raise ValueError(TEACHERS.unknown(value["kind"]))
            return teacher_options(value)
        return value

    @model_validator(mode="after")
    def _teacher_needs(self) -> GenerateConfig:
        if self.contrastive and not self.teacher.gives_logits:
            raise ValueError(
                f"contrastive decoding needs the next-token logits of a local model (--teacher hf); "
                f"teacher '{self.teacher.kind}' cannot give them"
            )
        if self.logprobs and (problem := self.teacher.logprobs_problem(self.logprobs)):
            raise ValueError(problem)
        if self.logprobs and self.contrastive:
            raise ValueError("logprobs: recording distributions of contrastive decoding is not supported")
        if self.counterfactual and not self.contrastive:
            raise ValueError("counterfactual needs contrastive")
        if self.search == "tree":
            if problem := self.teacher.tree_search_problem(chat=False):
                raise ValueError(problem)
            if self.contrastive or self.logprobs or self.until_agree or self.until_correct:
                raise ValueError("search 'tree' does not combine with contrastive, logprobs or adaptive sampling")
        return self

    @model_validator(mode="after")
    def _adaptive(self) -> GenerateConfig:
        if self.until_agree and self.until_correct:
            raise ValueError("until_agree and until_correct: choose one stopping rule")
        k = self.until_agree or self.until_correct
        if self.max_samples is not None and not k:
            raise ValueError("max_samples bounds adaptive sampling: give until_agree or until_correct too")
        if k and self.contrastive:
            raise ValueError("adaptive sampling (until_agree / until_correct) does not apply to contrastive decoding")
        if self.rationalize_failures and self.contrastive:
            raise ValueError("rationalize_failures: contrastive decoding already writes rationales for the gold answer")
        if k and self.adaptive_max_samples < k:
            raise ValueError(f"max_samples {self.adaptive_max_samples} is below K = {k}: no problem could settle")
        return self

    @property
    def grid_size(self) -> int:
        """A problem's requests in the fixed grid."""
        return len(self.templates) * len(self.temperatures) * len(self.seeds) * self.samples_per_setting

    @property
    def adaptive_max_samples(self) -> int:
        return self.max_samples or self.grid_size

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


def _options_fields(kind: Any) -> set[str]:
    if not isinstance(kind, str) or kind not in TEACHERS:
        return set()
    return set(TEACHERS.get(kind).Options.model_fields) - {"kind"}


def _check_unused_option(owner: str, name: str, value: Any) -> None:
    """A bad value is an error even for an option the chosen teacher ignores."""
    try:
        TEACHERS.get(owner).Options.model_validate({"kind": owner, name: value})
    except ValidationError as exc:
        message = exc.errors()[0]["msg"].removeprefix("Value error, ")
        raise ValueError(f"'{name}' ({owner} teacher option): {message} (got {value!r})") from None


def _owners(name: str) -> list[str]:
    """The adapters that take option ``name``."""
    return [kind for kind in TEACHERS if name in _options_fields(kind)]
