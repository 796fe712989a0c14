"""In-context distillation (Huang et al. 2022, "In-context Learning Distillation", Multitask-ICT).

The student learns to use demonstrations: every training source is preceded by K other training
examples of its task, and at evaluation the student is asked with one fixed K-shot prefix
(``InContextStudent``), so it reads at test time what it read in training.

A demonstration is an example's source followed by what it writes (``context`` + ``target``; a causal
student's target already starts with a space). Demonstrations and the real source are separated by a
blank line.

Leakage: a training source never shows a demonstration of its own problem (its answer would be on the
page). The evaluation prefix is drawn from training examples, and a training split never shares a
problem with its held-out split, so evaluation problems are never among the demonstrations' problems;
``InContextStudent.problem_ids`` names them for a caller that wants to check.
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from cotfactory.errors import ConfigError
from cotfactory.students.methods.base import StudentLike, TrainingExample

SEPARATOR = "\n\n"  # between demonstrations, and before the real source


def demonstration_text(example: TrainingExample) -> str:
    """One demonstration: what the student reads, then what it writes (its teacher-forced context too)."""
    return f"{example.source}{example.context}{example.target}"


def prefixed(demonstrations: list[TrainingExample], text: str) -> str:
    """``text`` after the demonstrations and a blank line; no demonstrations leave it as it is."""
    return SEPARATOR.join([*(demonstration_text(d) for d in demonstrations), text])


def _check_k(k: int) -> None:
    if k < 0:
        raise ConfigError(f"the number of demonstrations must be 0 or more, got k={k}")


def _eligible(examples: list[TrainingExample], index: int) -> list[TrainingExample]:
    """The examples that may demonstrate ``examples[index]``: same task, another problem.

    An empty ``problem_id`` (unknown problem) only excludes the example itself: nothing says which
    others share its problem."""
    asked = examples[index]
    return [
        e
        for i, e in enumerate(examples)
        if i != index and e.task == asked.task and not (asked.problem_id and e.problem_id == asked.problem_id)
    ]


def with_demonstrations(examples: list[TrainingExample], k: int, seed: int) -> list[TrainingExample]:
    """Each example with K demonstrations of other problems of its task before its source.

    Each example draws from its own ``random.Random(f"{seed}:{index}")`` (a string seed is hashed with
    SHA-512, not ``hash()``), so a rerun gives the same prompts whatever ``PYTHONHASHSEED`` is and one
    example's draw does not depend on the others'. A task with fewer than K eligible others uses all of
    them (in a drawn order), so small tasks train on shorter prompts rather than being dropped. k=0
    returns the list unchanged."""
    _check_k(k)
    if k == 0:
        return examples
    out = []
    for index, example in enumerate(examples):
        eligible = _eligible(examples, index)
        drawn = random.Random(f"{seed}:{index}").sample(eligible, min(k, len(eligible)))
        out.append(replace(example, source=prefixed(drawn, example.source)))
    return out


def pick_demonstrations(examples: list[TrainingExample], k: int, task: str | None, seed: int) -> list[TrainingExample]:
    """The fixed K demonstrations an evaluation prompt starts with, from ``task`` (None: the first task
    in order of appearance — a method's main task comes first). Deterministic in ``seed``; a task with
    fewer than K examples gives all of them."""
    _check_k(k)
    if k == 0 or not examples:
        return []
    tasks = list(dict.fromkeys(e.task for e in examples))
    task = tasks[0] if task is None else task
    if task not in tasks:
        raise ConfigError(f"no training examples of task {task!r} to demonstrate; the tasks are {tasks}")
    candidates = [e for e in examples if e.task == task]
    return random.Random(f"{seed}:eval").sample(candidates, min(k, len(candidates)))


class InContextStudent:
    """A student asked with a fixed demonstration prefix, as in-context distillation trained it.

    Only ``write`` and ``loglikelihoods`` see the prefix; anything else (``batch_size``, ``info``,
    ``encode_prompt`` …) is the wrapped student's own, unprefixed."""

    def __init__(self, student: StudentLike, demonstrations: list[TrainingExample]):
        self.student = student
        self.demonstrations = list(demonstrations)
        self.problem_ids = {d.problem_id for d in self.demonstrations}

    @property
    def causal(self) -> bool:
        return self.student.causal

    @property
    def explain(self) -> bool:
        return self.student.explain

    def write(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        return self.student.write([prefixed(self.demonstrations, p) for p in prompts], max_new_tokens)

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        return self.student.loglikelihoods([(prefixed(self.demonstrations, c), x) for c, x in pairs])

    def __getattr__(self, name: str) -> Any:
        """Called only for what the wrapper lacks: the wrapped student's attribute."""
        if name == "student":  # not set yet (copy, unpickling): no recursion
            raise AttributeError(name)
        return getattr(self.student, name)
