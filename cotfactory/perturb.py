"""Perturbed answers for SCOTT's contrastive decoding: the wrong answer a rationale is contrasted
against (and, for counterfactual rationales, the answer it is written for).

Deterministic in (problem, seed): the same request always contrasts against the same answer.
"""

from __future__ import annotations

import random
from typing import Literal

from cotfactory.answers import normalize_number
from cotfactory.errors import DataError
from cotfactory.hashing import derive_seed
from cotfactory.records import Problem, choice_letter

Perturbation = Literal["auto", "choice", "flip", "number", "empty"]
_AUTO = {"choice": "choice", "yes_no": "flip", "number": "number", "text": "empty"}


def perturbed_answer(problem: Problem, how: Perturbation, seed: int) -> str:
    """A wrong answer for ``problem``: another choice, the flipped yes/no, a nearby number, or ''."""
    if problem.gold is None:
        raise DataError(f"problem '{problem.id}' has no gold answer; contrastive decoding needs one")
    kind = _AUTO[problem.answer_type] if how == "auto" else how
    rng = random.Random(derive_seed(problem.id, seed, kind))
    if kind == "empty":
        return ""
    if kind == "choice":
        others = [c for c in problem.choices or [] if c.lower() != problem.gold.lower()]
        if not others:
            raise DataError(f"problem '{problem.id}': perturb 'choice' needs choices other than the gold one")
        return rng.choice(others)
    if kind == "flip":
        if problem.gold not in ("yes", "no"):
            raise DataError(f"problem '{problem.id}': perturb 'flip' needs a yes/no gold answer, got {problem.gold!r}")
        return "no" if problem.gold == "yes" else "yes"
    return _nearby_number(problem, rng)


def _nearby_number(problem: Problem, rng: random.Random) -> str:
    gold = normalize_number(problem.gold or "")
    if gold is None:
        raise DataError(f"problem '{problem.id}': perturb 'number' needs a numeric gold answer, got {problem.gold!r}")
    value = float(gold)
    if value.is_integer():
        offset = rng.choice([-3, -2, -1, 1, 2, 3])
        if abs(value) >= 20:
            offset *= max(1, int(abs(value)) // 10)
        return str(int(value) + offset)
    return f"{value * rng.choice([0.5, 0.9, 1.1, 2.0]):g}"


def display_answer(problem: Problem, answer: str) -> str:
    """How an answer is written in an answer-first prompt: '(c) wooded area' for choices."""
    if problem.answer_type == "choice" and problem.choices and answer in problem.choices:
        return f"({choice_letter(problem.choices.index(answer))}) {answer}"
    return answer
