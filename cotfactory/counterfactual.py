"""Counterfactual arithmetic problems (DISCO, Chen et al. 2023, adapted to reasoning): change the numbers
that determine a word problem's answer and recompute the gold from its own equation.

A problem is eligible when its numbers can be traced: SVAMP's ``Equation`` names them, GSM8K's
calculator annotations (``<<48/2=24>>``) chain them to the answer. The new problem is kept only when
the recomputed gold is verified — every changed number appears exactly once in the text, the chain
reproduces the original gold before the change, no two numbers of the new text are equal, the new gold
differs from the old, is positive where the old one was and whole where the old one was — otherwise it
is dropped and the reason counted. Multiple-choice and
yes/no edits (DISCO's teacher-written span infilling) are made by :mod:`cotfactory.counterfactual_edits`.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

from cotfactory.answers import safe_eval
from cotfactory.loaders.common import format_number
from cotfactory.records import Problem

NUMBER = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?![\w.]*\d)")
ANNOTATION = re.compile(r"<<([^=<>]+)=([^<>]+)>>")
ATTEMPTS = 20  # draws of new numbers per counterfactual before the problem is given up


@dataclass
class Counterfactuals:
    problems: list[Problem] = field(default_factory=list)
    dropped: Counter[str] = field(default_factory=Counter)  # reason → problems for which none was kept


def make_counterfactuals(problems: list[Problem], per_problem: int, seed: int = 0) -> Counterfactuals:
    """Up to ``per_problem`` verified counterfactuals of each problem, seeded per problem."""
    result = Counterfactuals()
    for problem in problems:
        rng = random.Random(f"{seed}:{problem.id}")
        made, reason = _counterfactuals(problem, per_problem, rng)
        result.problems += made
        if not made:
            result.dropped[reason] += 1
    return result


def _counterfactuals(problem: Problem, count: int, rng: random.Random) -> tuple[list[Problem], str]:
    if re.search(r"\d,\d", problem.question):
        return [], "a number with a thousands separator"
    recompute = _recomputer(problem)
    if isinstance(recompute, str):
        return [], recompute
    unchanged = recompute({})
    if unchanged is None or abs(unchanged - float(problem.gold or "nan")) > 1e-6:
        return [], "the equation does not give the gold answer"
    numbers = _numbers_in_text(problem.question)
    changeable = [value for value in recompute.inputs if numbers.get(value) == 1]
    if not changeable:
        return [], "no number of the equation appears exactly once in the text"
    made: list[Problem] = []
    seen = {problem.gold}
    reason = "no draw gave a new answer that is whole, positive and keeps the numbers apart"
    for _ in range(ATTEMPTS * count):
        if len(made) == count:
            break
        new = {value: _nearby(value, rng) for value in changeable}
        stated = [new.get(value, value) for value in numbers.elements()]
        if len(set(stated)) < len(set(numbers.elements())):  # two numbers of the text would read the same
            continue
        gold = recompute(new)
        old = float(problem.gold or 0)
        if gold is None or gold < 0 or (old > 0 and gold == 0) or (old.is_integer() and not float(gold).is_integer()):
            continue
        text = format_number(round(gold, 6))
        if text in seen:
            continue
        seen.add(text)
        made.append(_problem(problem, new, text, len(made)))
    return made, reason


@dataclass
class _Recompute:
    """A problem's answer as a function of its input numbers (those the text states)."""

    inputs: list[str]  # the numbers, as written in the text
    evaluate: object  # callable: {old number text: new number text} → new gold

    def __call__(self, new: dict[str, str]) -> float | None:
        return self.evaluate(new)  # type: ignore[operator]


def _recomputer(problem: Problem) -> _Recompute | str:
    """How to recompute ``problem``'s gold from new input numbers, or why it cannot be."""
    if problem.answer_type != "number" or problem.gold is None:
        return "not an arithmetic problem with a gold answer"
    equation = problem.metadata.get("equation")
    if isinstance(equation, str) and equation.strip():
        return _from_equation(problem, equation)
    solution = problem.metadata.get("solution")
    if isinstance(solution, str) and ANNOTATION.search(solution):
        return _from_annotations(problem, solution)
    return "no equation or calculator annotations to recompute the gold from"


def _from_equation(problem: Problem, equation: str) -> _Recompute | str:
    """SVAMP: the equation's operands are the text's numbers ("( 76.0 - 25.0 )")."""
    operands = [_plain(token) for token in NUMBER.findall(equation)]
    original = safe_eval(equation)
    if original is None or abs(original - float(problem.gold or "nan")) > 1e-6:
        return "the equation does not give the gold answer"

    def evaluate(new: dict[str, str]) -> float | None:
        return safe_eval(NUMBER.sub(lambda m: new.get(_plain(m.group()), m.group()), equation))

    return _Recompute(list(dict.fromkeys(operands)), evaluate)


def _from_annotations(problem: Problem, solution: str) -> _Recompute | str:
    """GSM8K: each ``<<expr=result>>`` step is recomputed in order; an operand equal to a number of the
    text takes its new value, one equal to an earlier step's result takes that step's new result, any
    other is a constant ("half" → /2). An operand value that could be both is ambiguous: refused."""
    steps = [(expr, _plain(result)) for expr, result in ANNOTATION.findall(solution)]
    if not steps or abs(float(steps[-1][1]) - float(problem.gold or "nan")) > 1e-6:
        return "the calculator annotations do not end at the gold answer"
    text_numbers = _numbers_in_text(problem.question)
    operands = Counter(_plain(token) for expr, _ in steps for token in NUMBER.findall(expr))
    results = {result for _, result in steps}
    inputs = [value for value in operands if value in text_numbers]
    if any(operands[value] > 1 or value in results for value in inputs):
        return "a number of the text is used twice (or also as a result): its role is ambiguous"

    def evaluate(new: dict[str, str]) -> float | None:
        values = dict(new)
        value: float | None = None
        for expr, result in steps:
            value = safe_eval(NUMBER.sub(lambda m: values.get(_plain(m.group()), m.group()), expr))
            if value is None:
                return None
            values[result] = format_number(round(value, 6))
        return value

    return _Recompute(inputs, evaluate)


def _numbers_in_text(text: str) -> Counter[str]:
    return Counter(_plain(token) for token in NUMBER.findall(text.replace(",", "")))


def _plain(token: str) -> str:
    """'76.0' → '76', '2.50' → '2.5': one spelling per value."""
    return format_number(float(token))


def _nearby(value: str, rng: random.Random) -> str:
    """Another whole number of about the same size (half to twice), never the same."""
    old = float(value)
    if not old.is_integer():
        return format_number(round(old * rng.choice([0.5, 1.5, 2.0, 3.0]), 2))
    low, high = max(1, int(old) // 2), max(int(old) * 2, 3)
    choice = rng.randint(low, high)
    return str(choice if choice != int(old) else choice + 1)


def _problem(problem: Problem, new: dict[str, str], gold: str, index: int) -> Problem:
    def swap(match: re.Match[str]) -> str:
        return new.get(_plain(match.group().replace(",", "")), match.group())

    question = NUMBER.sub(swap, problem.question)
    metadata = {"origin": problem.id, "edit": "numbers", "changed": new}
    changed = {"id": f"{problem.id}-cf{index}", "question": question, "gold": gold, "metadata": metadata}
    return Problem(**{**problem.model_dump(), **changed})  # validated anew (a copy would keep cached hashes)


def problem_rows(problems: list[Problem]) -> Iterator[dict[str, object]]:
    """The generic-JSONL lines of counterfactual problems (``generate --format jsonl --answer-type TYPE``)."""
    for problem in problems:
        row: dict[str, object] = {"id": problem.id, "question": problem.question, "answer": problem.gold}
        if problem.choices is not None:
            row["choices"] = problem.choices
        yield {**row, "metadata": problem.metadata}
