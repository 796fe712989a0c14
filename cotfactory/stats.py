"""Confidence intervals for accuracies: every reported accuracy carries one."""

from __future__ import annotations

import math

Z_95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z_95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion (95 % by default).

    Chosen over the normal approximation (p ± z·√(p(1−p)/n)) because it stays inside [0, 1] and keeps
    its coverage at accuracies near 0 or 1 and at small n — both common for small students.
    """
    if total <= 0:
        return (0.0, 1.0)
    if not 0 <= correct <= total:
        raise ValueError(f"correct {correct} is not between 0 and total {total}")
    p = correct / total
    denominator = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denominator
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denominator
    low = 0.0 if correct == 0 else max(0.0, centre - half)
    high = 1.0 if correct == total else min(1.0, centre + half)
    return (low, high)


def format_accuracy(correct: int, total: int) -> str:
    """'52/300 = 0.173 [0.135, 0.219]'."""
    low, high = wilson_interval(correct, total)
    accuracy = correct / total if total else 0.0
    return f"{correct}/{total} = {accuracy:.3f} [{low:.3f}, {high:.3f}]"


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar test for two students scored on the same problems: the probability,
    if neither is better, of a split of the discordant problems at least this uneven.

    ``only_first``: problems the first got right and the second wrong; ``only_second`` the reverse.
    Paired, so it sees a difference that two overlapping Wilson intervals cannot."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    k = min(only_first, only_second)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)
