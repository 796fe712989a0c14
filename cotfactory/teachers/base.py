"""The teacher interface: a stream of requests in, batches of finished samples out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any, ClassVar, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from cotfactory.records import Problem, RenderedPrompt, Request, Sample


class TeacherOptions(BaseModel):
    """The options one teacher adapter takes; each adapter subclasses this beside its ``Teacher``.

    In a config these sit under ``teacher:`` (``{kind: openai, model: …, base_url: …}``) or, the
    older flat form, beside ``teacher: openai`` at the top of ``generate:`` — both load the same.
    """

    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="Teacher adapter.")
    model: str | None = Field(None, description="The model the adapter runs or asks.")

    #: the adapter can give next-token logits (what SCOTT contrastive decoding needs)
    gives_logits: ClassVar[bool] = False

    def logprobs_problem(self, k: int) -> str | None:
        """Why this teacher cannot record the top-``k`` logprobs of its tokens (None: it can)."""
        return f"teacher '{self.kind}' cannot record token logprobs (--logprobs): use --teacher hf or openai"

    def tree_search_problem(self, chat: bool) -> str | None:
        """Why this teacher cannot run step-level tree search (``--search tree``) with a template of this
        form (None: it can)."""
        return (
            f"search 'tree' needs step log-probabilities, from a local model (hf) or a completions endpoint "
            f"(openai); teacher '{self.kind}' has none"
        )

    #: options the adapter cannot work without → what each is, for the error that names it
    needs: ClassVar[dict[str, str]] = {}

    def check(self) -> None:
        """Raise ValueError when a needed option is missing (the message names the option)."""
        for name, what in self.needs.items():
            if not getattr(self, name):
                raise ValueError(f"teacher '{self.kind}' needs '{name}' ({what})")


OptionsT = TypeVar("OptionsT", bound=TeacherOptions)


class Teacher(ABC, Generic[OptionsT]):
    """Subclasses set ``name`` and ``Options`` and implement ``generate``.

    ``generate`` pulls requests lazily from the iterator (which may stop early, e.g. at the token
    budget) and yields lists of samples; each list is one completed unit of work that the store
    commits in one transaction. Samples carry the raw text; the caller extracts answers.
    """

    name: str = ""
    Options: ClassVar[type[TeacherOptions]] = TeacherOptions

    def __init__(self, options: OptionsT, retry_tokens: int = 0):
        """``retry_tokens``: max_tokens of the one retry after a 'length' finish (0: no retry)."""
        self.options: OptionsT = options
        self.retry_tokens = retry_tokens
        self.problem_of: Callable[[str], Problem | None] = lambda problem_id: None
        self.logprobs_k = 0  # > 0: record the top-K distribution of every generated token (--logprobs)

    def attach_problems(self, problem_of: Callable[[str], Problem | None]) -> None:
        """How to look the run's problems up by id, for teachers that need one (replay files are
        positional); the run reads them from its store, holding none of them."""
        self.problem_of = problem_of

    @property
    def model_label(self) -> str:
        """The model name recorded in every request (part of the request key)."""
        return self.options.model or ""

    def check_prompt(self, prompt: RenderedPrompt) -> None:  # noqa: B027 - optional hook
        """Raise TeacherError when this teacher cannot take this form of prompt."""

    async def preflight(self) -> None:  # noqa: B027 - optional hook
        """Fail early (TeacherError) when the teacher cannot work: unreachable URL, missing model, a
        server that returns no logprobs when ``logprobs_k`` asks for them."""

    def tokenizer_for_distributions(self) -> Any:
        """The tokenizer whose vocabulary the recorded token ids belong to (saved with the run); None
        when the ids belong to the run's own vocabulary of token strings (``TokenDistributions.strings``)."""
        raise NotImplementedError

    @abstractmethod
    def generate(self, requests: Iterator[Request]) -> AsyncIterator[list[Sample]]: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, models."""
