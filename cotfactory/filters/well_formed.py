"""Drop samples a student cannot learn from: failed, empty, truncated, or without an answer."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.records import Sample, Verdict

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig


def malformation(sample: Sample) -> str | None:
    """Why a sample is not well formed, or None."""
    if sample.failed:
        return "failed"
    if not sample.text.strip():
        return "empty"
    if sample.finish_reason == "length":
        return "truncated"
    if sample.answer is None:
        return "no_answer"
    return None


class WellFormed(Filter):
    name = "well_formed"

    @classmethod
    def from_config(cls, config: FilterConfig) -> WellFormed | None:
        return cls() if config.well_formed else None

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        return [self.verdict(s, (why := malformation(s)) is None, why or "") for s in group.survivors]
