"""The records that flow through the factory: Problem → Request → Sample.

Every record is a pydantic model, validated when it is made and when it is read back from the
store, so a bad value fails where it enters rather than three stages later.
"""

from __future__ import annotations

import string
from functools import cached_property
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cotfactory.hashing import derive_seed, stable_hash

AnswerType = Literal["number", "choice", "yes_no", "text"]
FinishReason = Literal["stop", "length", "error"]


def choice_letter(index: int) -> str:
    """The letter a choice is named by, everywhere (prompts, students, answers): 0 → 'a'."""
    return string.ascii_lowercase[index]


def choice_index(letter: str, count: int) -> int | None:
    """The position a letter ('c', '(C)') names among ``count`` choices; None if it names none."""
    letter = letter.strip().strip("()").lower()
    index = string.ascii_lowercase.find(letter) if len(letter) == 1 else -1
    return index if 0 <= index < count else None


def lettered_choices(choices: list[str]) -> str:
    """Choices on one line: '(a) x (b) y'."""
    return " ".join(f"({choice_letter(i)}) {choice}" for i, choice in enumerate(choices))


class Problem(BaseModel):
    """One question of a dataset, with its gold answer where the dataset has one."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(min_length=1, description="Unique within the dataset.")
    question: str = Field(min_length=1)
    gold: str | None = Field(None, description="The gold answer as text (a number, a choice, yes/no).")
    answer_type: AnswerType = "text"
    choices: list[str] | None = Field(None, description="Answer options, for answer_type 'choice'.")
    source: str = Field("", description="Loader name and file the problem came from.")
    metadata: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _choices_match_type(self) -> Problem:
        if self.answer_type == "choice" and not self.choices:
            raise ValueError("a 'choice' problem needs a non-empty 'choices' list")
        return self

    @property
    def content_hash(self) -> str:
        """Changes when the question, gold or choices change under the same id."""
        return stable_hash([self.question, self.gold, self.answer_type, self.choices], 12)


class RenderedPrompt(BaseModel):
    """What a teacher is sent: chat messages or a plain completion prompt, and its stop strings."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    messages: list[dict[str, str]] | None = None
    text: str | None = None
    stop: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _exactly_one_form(self) -> RenderedPrompt:
        if (self.messages is None) == (self.text is None):
            raise ValueError("a prompt is either chat 'messages' or completion 'text'")
        return self

    def char_length(self) -> int:
        if self.text is not None:
            return len(self.text)
        return sum(len(m["content"]) for m in self.messages or [])


class Request(BaseModel):
    """One sample to draw: which problem, template, teacher and sampling setting.

    ``key`` hashes every field that changes the result, so the same request is never sent twice
    for a run. The rendered prompt rides along but is not part of the key (the template hash and
    the problem's content hash already pin it down) and is never stored.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    problem_id: str
    problem_hash: str = ""
    template: str
    template_hash: str
    teacher: str = Field(description="Adapter name: openai, hf, replay.")
    model: str
    temperature: float = Field(ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    seed: int
    max_tokens: int = Field(gt=0)
    sample_index: int = Field(0, ge=0)
    mode: Literal["sample", "contrastive", "counterfactual", "judge", "rationalized", "tree"] = Field(
        "sample",
        description="sample: plain decoding; contrastive/counterfactual: SCOTT decoding; judge: scoring; "
        "rationalized: a rationale written for the gold answer it was given (--rationalize-failures); "
        "tree: the candidate of rank decoding['candidate'] of a step-level tree search (--search tree).",
    )
    decoding: dict[str, Any] = Field(
        default_factory=dict,
        description="Mode settings that change the result, e.g. target_answer, contrast_answer, weight.",
    )
    prompt: RenderedPrompt | None = Field(None, exclude=True, repr=False)
    contrast: RenderedPrompt | None = Field(
        None, exclude=True, repr=False, description="Contrastive: the context contrasted against."
    )

    @cached_property
    def key(self) -> str:
        """Computed once per request: the model is frozen, and ``model_copy`` drops the cached value."""
        fields = self.model_dump(exclude={"prompt", "contrast"})
        if not fields["decoding"]:
            del fields["decoding"]  # keeps the keys of plain requests as they always were
        return stable_hash(fields, 24)

    def model_copy(self, *, update: dict[str, Any] | None = None, deep: bool = False) -> Request:
        copied = super().model_copy(update=update, deep=deep)
        copied.__dict__.pop("key", None)  # a cached key may belong to other field values
        return copied

    @property
    def target_answer(self) -> str | None:
        """The answer a contrastive or counterfactual rationale was written for, given by construction."""
        return self.decoding.get("target_answer")

    @property
    def sample_seed(self) -> int:
        """The seed of this one sample: the grid seed for sample 0, a derived one for the rest."""
        if self.sample_index == 0:
            return self.seed
        return derive_seed(self.seed, self.sample_index)


class Sample(BaseModel):
    """A teacher's answer to one request, with everything needed to trust or reproduce it."""

    model_config = ConfigDict(extra="forbid")

    request: Request
    text: str = ""
    rationale: str = ""
    answer: str | None = None
    finish_reason: FinishReason = "stop"
    prompt_tokens: int = Field(0, ge=0)
    completion_tokens: int = Field(0, ge=0)
    latency_s: float = Field(0.0, ge=0.0)
    attempts: int = Field(1, ge=0)
    error: str | None = Field(None, description="Set when the request failed permanently.")
    sent_seed: int | None = Field(None, description="The seed the teacher was actually given.")
    sent_max_tokens: int | None = Field(None, description="max_tokens of the last attempt.")
    metadata: dict[str, Any] = Field(default_factory=dict)
    distributions: Any = Field(
        None, exclude=True, repr=False, description="The teacher's TokenDistributions (--logprobs); stored apart."
    )

    @field_validator("text")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        return value.replace("\x00", "")

    @property
    def key(self) -> str:
        return self.request.key

    @property
    def failed(self) -> bool:
        return self.error is not None


class Verdict(BaseModel):
    """One filter's decision on one sample, with the reason and the evidence behind it."""

    model_config = ConfigDict(extra="forbid")

    sample_key: str
    filter: str
    keep: bool
    reason: str = Field(description="'kept' or why not: wrong_answer, minority, truncated, duplicate, …")
    score: float | None = None
    details: dict[str, Any] = Field(default_factory=dict)
