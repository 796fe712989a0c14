"""The scorer interface."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cotfactory.hashing import stable_hash
from cotfactory.records import Problem, Sample

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig


@dataclass(frozen=True)
class ScoreItem:
    problem: Problem
    sample: Sample


#: (score or None when it could not be scored, details such as the judge's raw reply)
Score = tuple[float | None, dict[str, Any]]


class Scorer(ABC):
    """Subclasses set ``name``, check their dependencies in ``__init__`` (one-line errors, before any
    output is written), and score items in batches."""

    name: str = ""

    def __init__(self, config: FilterConfig):
        self.config = config

    def settings(self) -> dict[str, Any]:
        """Everything that changes the scores (model, template, prompt format); not thresholds."""
        return {}

    @property
    def identity(self) -> str:
        """The cache key of this scorer's scores: name + hash of its settings."""
        return f"{self.name}:{stable_hash(self.settings(), 12)}"

    @abstractmethod
    def score(self, items: list[ScoreItem]) -> list[Score]:
        """One score per item, in order. Called with batches of ``config.reward_batch_size`` or more."""
