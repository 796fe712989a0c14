"""Keep samples whose answer equals the gold answer (or, without gold, the consistency pseudo-label).

A counterfactual rationale (SCOTT) is correct when it reaches the perturbed answer it was written for.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotfactory.answers import answers_match
from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.records import Sample, Verdict

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig


class Correct(Filter):
    name = "correct"

    @classmethod
    def from_config(cls, config: FilterConfig) -> Correct | None:
        return cls(config.tolerance) if config.correct else None

    def __init__(self, tolerance: float = 1e-4):
        self.tolerance = tolerance

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        return [self._judge(sample, group) for sample in group.survivors]

    def _judge(self, sample: Sample, group: ProblemGroup) -> Verdict:
        gold = group.problem.gold
        label = sample.request.target_answer or (gold if gold is not None else group.label)
        if label is None:
            return self.verdict(sample, False, "no_gold")
        keep = answers_match(sample.answer, label, group.problem, self.tolerance)
        return self.verdict(sample, keep, "wrong_answer", label=label, pseudo_label=gold is None)
