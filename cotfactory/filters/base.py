"""The filter interface: one problem's samples in, one verdict per surviving sample out.

Filters run problem by problem (memory is bounded by one problem's samples), in the order of the
config's ``chain`` (default well_formed → correct → consistency → reward → dedup). Before any of
them runs, each sets the problem's facts it knows (``establish``: the majority and pseudo-label);
then each sees the samples that survived the filters before it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from cotfactory.records import Problem, Sample, Verdict

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig


@dataclass
class ProblemGroup:
    """What a filter sees of one problem."""

    problem: Problem
    samples: list[Sample]  # every sample of the problem in the run, in plan order
    survivors: list[Sample]  # those still kept when this filter runs
    scores: dict[str, float | None] = field(default_factory=dict)  # reward score by sample key, if scored
    label: str | None = None  # the answer samples are checked against: gold, or a pseudo-label
    pseudo_label: bool = False


class Filter(ABC):
    """Subclasses set ``name`` and decide; they never call a teacher."""

    name: str = ""

    @classmethod
    @abstractmethod
    def from_config(cls, config: FilterConfig) -> Filter | None:
        """This filter as the config sets it up, or None when the config leaves it off."""

    def establish(self, group: ProblemGroup) -> None:
        """Set the problem's facts (e.g. a pseudo-label) before any filter of the chain runs, so a filter
        earlier in the order can use what a later one knows. Most filters have none."""
        return None

    @abstractmethod
    def apply(self, group: ProblemGroup) -> list[Verdict]:
        """One verdict for each sample in ``group.survivors``."""

    def verdict(
        self, sample: Sample, keep: bool, reason: str, score: float | None = None, **details: object
    ) -> Verdict:
        return Verdict(
            sample_key=sample.key,
            filter=self.name,
            keep=keep,
            reason="kept" if keep else reason,
            score=score,
            details=dict(details),
        )
