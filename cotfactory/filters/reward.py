"""Keep samples by reward score: above a threshold, or the top k of each problem.

Scores come from a scorer (reward model, LLM judge, answer-gain) and are cached in the store by
sample and scorer configuration, so a new threshold never re-scores. A sample the scorer could not
score (say, a judge reply that does not parse) is dropped with reason ``unscored``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.records import Verdict

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig


class Reward(Filter):
    name = "reward"

    @classmethod
    def from_config(cls, config: FilterConfig) -> Reward | None:
        return cls(config.reward_threshold, config.top_k) if config.reward is not None else None

    def __init__(self, threshold: float | None = None, top_k: int | None = None):
        self.threshold = threshold
        self.top_k = top_k

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        scored = [(s, group.scores.get(s.key)) for s in group.survivors]
        ranked = sorted((pair for pair in scored if pair[1] is not None), key=lambda pair: -pair[1])  # type: ignore[operator]
        top = {s.key for s, _ in ranked[: self.top_k]} if self.top_k is not None else None
        verdicts = []
        for sample, score in scored:
            if score is None:
                verdicts.append(self.verdict(sample, False, "unscored"))
            elif top is not None:
                verdicts.append(self.verdict(sample, sample.key in top, "below_top_k", score))
            else:
                verdicts.append(
                    self.verdict(sample, self.threshold is None or score >= self.threshold, "below_threshold", score)
                )
        return verdicts
