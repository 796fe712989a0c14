"""Self-consistency (Wang et al. 2023): a majority vote over a problem's samples.

The vote counts every well-formed sample of the problem (optionally weighted by reward score);
samples that agree with the majority are kept when the agreement ratio reaches the threshold.
Without a gold answer the majority becomes the problem's pseudo-label.

Ties break toward the answer with the larger total weight (the reward-weighted vote), then toward
the answer reached first in plan order — lowest temperature and seed first, i.e. the most
deterministic sample — so the result is reproducible.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cotfactory.answers import answers_match
from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.filters.well_formed import malformation
from cotfactory.records import Sample, Verdict

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig


EXEMPT = ("counterfactual", "rationalized")  # modes that state an answer they were given


def majority(
    samples: list[Sample], weights: dict[str, float | None] | None = None, same=lambda a, b: a == b
) -> tuple[str | None, float, bool]:
    """(majority answer, agreement ratio, whether it was a tie) over samples with answers."""
    votes: list[tuple[str, float, int]] = []  # answer, weight, first position
    total = 0.0
    for position, sample in enumerate(samples):
        if sample.answer is None:
            continue
        weight = 1.0 if weights is None else max(weights.get(sample.key) or 0.0, 0.0)
        total += weight
        for i, (answer, tally, first) in enumerate(votes):
            if same(answer, sample.answer):
                votes[i] = (answer, tally + weight, first)
                break
        else:
            votes.append((sample.answer, weight, position))
    if not votes or total <= 0:
        return None, 0.0, False
    votes.sort(key=lambda v: (-v[1], v[2]))
    tie = len(votes) > 1 and votes[0][1] == votes[1][1]
    return votes[0][0], votes[0][1] / total, tie


class Consistency(Filter):
    name = "consistency"

    @classmethod
    def from_config(cls, config: FilterConfig) -> Consistency | None:
        if config.consistency is None:
            return None
        return cls(config.consistency, weighted=config.weighted_votes)

    def __init__(self, threshold: float, weighted: bool = False):
        self.threshold = threshold
        self.weighted = weighted

    def _vote(self, group: ProblemGroup) -> tuple[list[Sample], str | None, float, bool]:
        # counterfactual rationales argue for a wrong answer on purpose, rationalized ones for the gold they
        # were given: they neither vote nor are judged
        voters = [s for s in group.samples if malformation(s) is None and s.request.mode not in EXEMPT]

        def same(a: str, b: str) -> bool:
            return answers_match(a, b, group.problem)

        return voters, *majority(voters, group.scores if self.weighted else None, same)

    def establish(self, group: ProblemGroup) -> None:
        """Without gold, the majority is the problem's pseudo-label — set before the chain runs, so the
        correct filter (earlier in the order) checks samples against it."""
        if group.problem.gold is None:
            _, answer, _, _ = self._vote(group)
            if answer is not None:
                group.label, group.pseudo_label = answer, True

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        problem = group.problem

        def same(a: str, b: str) -> bool:
            return answers_match(a, b, problem)

        voters, answer, agreement, tie = self._vote(group)
        if problem.gold is None and answer is not None:
            group.label, group.pseudo_label = answer, True
        details = {
            "majority": answer,
            "agreement": round(agreement, 4),
            "voters": len(voters),
            "tie": tie,
            "pseudo_label": problem.gold is None,
        }
        verdicts = []
        for sample in group.survivors:
            if sample.request.mode in EXEMPT:
                verdicts.append(self.verdict(sample, True, "", None, exempt=sample.request.mode))
            elif answer is None or agreement < self.threshold:
                verdicts.append(self.verdict(sample, False, "low_agreement", agreement, **details))
            else:
                agrees = sample.answer is not None and same(sample.answer, answer)
                verdicts.append(self.verdict(sample, agrees, "minority", agreement, **details))
        return verdicts
