"""Adaptive sampling: stop sampling a problem once it is settled (``--until-agree K`` / ``--until-correct K``).

A fixed grid spends as much teacher on a problem every sample gets right as on one none does. Here a
problem's requests are drawn in its sample order (``Plan.sample_sequence``) in waves: first K, then,
while it is unsettled and under ``--max-samples``, as many more as could settle it at the earliest
(K minus the largest agreeing — or correct — group so far). Which requests a problem gets is a pure
function of the samples stored for its earlier requests, recomputed from the store on every wave: a
killed run resumes to exactly the same final set, and a finished one sends nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cotfactory.answers import answers_match
from cotfactory.filters.consistency import majority
from cotfactory.plan import Plan
from cotfactory.records import Problem, Request, Sample
from cotfactory.store import Store


@dataclass(frozen=True)
class StoppingRule:
    """When a problem has enough samples: K of them agree on one answer, or K reach the gold answer."""

    kind: Literal["agree", "correct"]
    k: int
    max_samples: int  # per problem, whatever the rule says

    def missing(self, problem: Problem, samples: list[Sample]) -> int:
        """The fewest further samples that could settle ``problem`` (0: settled)."""
        answered = [s for s in samples if not s.failed and s.answer is not None]
        if self.kind == "correct":
            best = sum(answers_match(s.answer, problem.gold, problem) for s in answered)
        else:
            _, share, _ = majority(answered, same=lambda a, b: answers_match(a, b, problem))
            best = round(share * len(answered))
        return max(self.k - best, 0)


def adaptive_prefix(
    plan: Plan, rule: StoppingRule, store: Store, problem: Problem, with_prompts: bool
) -> list[Request]:
    """The first n requests of the problem's sequence: n starts at K and grows by what could settle
    it, for as long as every request so far has its sample stored and none settled it."""
    sequence = plan.sample_sequence(problem, with_prompts)
    taken: list[Request] = []
    samples: list[Sample] = []
    wanted = min(rule.k, rule.max_samples)
    while True:
        new = [next(sequence) for _ in range(wanted - len(taken))]
        taken += new
        found = list(store.samples([r.key for r in new]))
        if len(found) < len(new):  # some of this wave is still to be sent
            return taken
        samples += found
        missing = rule.missing(problem, samples)
        if missing == 0 or len(taken) >= rule.max_samples:
            return taken
        wanted = min(len(taken) + missing, rule.max_samples)
