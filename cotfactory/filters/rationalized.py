"""Drop rationalized samples (``--no-rationalized``): rationales the teacher wrote for a gold answer it
was given (``generate --rationalize-failures``), so a student can be trained with or without them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.records import Verdict

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig


class Rationalized(Filter):
    name = "rationalized"

    @classmethod
    def from_config(cls, config: FilterConfig) -> Rationalized | None:
        return None if config.rationalized else cls()

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        verdicts = []
        for sample in group.survivors:
            rationalized = sample.request.mode == "rationalized"
            verdicts.append(self.verdict(sample, not rationalized, "rationalized" if rationalized else ""))
        return verdicts
