"""Keep samples whose answer equals the gold answer (or, without gold, the consistency pseudo-label)."""

from __future__ import annotations

from cotfactory.answers import answers_match
from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.records import Verdict


class Correct(Filter):
    name = "correct"

    def __init__(self, tolerance: float = 1e-4):
        self.tolerance = tolerance

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        label = group.problem.gold if group.problem.gold is not None else group.label
        if label is None:
            return [self.verdict(s, False, "no_gold") for s in group.survivors]
        return [
            self.verdict(
                s,
                answers_match(s.answer, label, group.problem, self.tolerance),
                "wrong_answer",
                label=label,
                pseudo_label=group.problem.gold is None,
            )
            for s in group.survivors
        ]
