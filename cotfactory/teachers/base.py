"""The teacher interface: a stream of requests in, batches of finished samples out."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

from cotfactory.records import Problem, RenderedPrompt, Request, Sample

if TYPE_CHECKING:
    from cotfactory.config import GenerateConfig


class Teacher(ABC):
    """Subclasses set ``name`` and implement ``generate``.

    ``generate`` pulls requests lazily from the iterator (which may stop early, e.g. at the token
    budget) and yields lists of samples; each list is one completed unit of work that the store
    commits in one transaction. Samples carry the raw text; the caller extracts answers.
    """

    name: str = ""

    def __init__(self, config: GenerateConfig):
        self.config = config
        self.problems: dict[str, Problem] = {}

    def attach_problems(self, problems: dict[str, Problem]) -> None:
        """The run's problems by id, for teachers that look a problem up (replay files are positional)."""
        self.problems = problems

    @property
    def model_label(self) -> str:
        """The model name recorded in every request (part of the request key)."""
        return self.config.model or ""

    def check_prompt(self, prompt: RenderedPrompt) -> None:  # noqa: B027 - optional hook
        """Raise TeacherError when this teacher cannot take this form of prompt."""

    async def preflight(self) -> None:  # noqa: B027 - optional hook
        """Fail early (TeacherError) when the teacher cannot work: unreachable URL, missing model."""

    @abstractmethod
    def generate(self, requests: Iterator[Request]) -> AsyncIterator[list[Sample]]: ...

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release connections, models."""
