"""Near-duplicate removal within a problem: word 3-gram Jaccard similarity on normalized text.

Samples of one problem are few (tens), so exact pairwise Jaccard is cheap and needs no MinHash.
Groups are formed greedily in order of preference (best reward score first, then plan order), so
the best-scored sample of each group is the one kept.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.records import Sample, Verdict

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig

_WORD = re.compile(r"[a-z0-9]+(?:\.[0-9]+)?")


def shingles(text: str, n: int = 3) -> frozenset[tuple[str, ...]]:
    words = _WORD.findall(text.lower())
    if len(words) < n:
        return frozenset([tuple(words)])
    return frozenset(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def jaccard(a: frozenset, b: frozenset) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


class Dedup(Filter):
    name = "dedup"

    @classmethod
    def from_config(cls, config: FilterConfig) -> Dedup | None:
        return cls(config.dedup) if config.dedup is not None else None

    def __init__(self, threshold: float = 0.9):
        self.threshold = threshold

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        order = {s.key: i for i, s in enumerate(group.survivors)}

        def preference(sample: Sample) -> tuple[float, int]:
            score = group.scores.get(sample.key)
            return (-(score if score is not None else float("-inf")), order[sample.key])

        kept: list[tuple[Sample, frozenset]] = []
        decided: dict[str, Verdict] = {}
        for sample in sorted(group.survivors, key=preference):
            grams = shingles(sample.rationale or sample.text)
            match = next(((k, sim) for k, g in kept if (sim := jaccard(grams, g)) >= self.threshold), None)
            if match is None:
                kept.append((sample, grams))
                decided[sample.key] = self.verdict(sample, True, "")
            else:
                decided[sample.key] = self.verdict(sample, False, "duplicate", match[1], duplicate_of=match[0].key)
        return [decided[s.key] for s in group.survivors]
