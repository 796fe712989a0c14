"""In-context distillation: K-shot training sources and the fixed K-shot prefix at evaluation."""

from __future__ import annotations

import pytest

from cotfactory.errors import ConfigError
from cotfactory.students.in_context import (
    InContextStudent,
    demonstration_text,
    pick_demonstrations,
    with_demonstrations,
)
from cotfactory.students.methods.base import TrainingExample


def _ex(task: str, problem: str, n: int = 0) -> TrainingExample:
    return TrainingExample(task, f"Q{problem}{n}:", f" A{problem}{n}", problem_id=f"p{problem}", sample_key=f"s{n}")


# two tasks of three problems each; p1 has two samples in "label" (diverse reasoning), which must not
# demonstrate each other
EXAMPLES = [
    _ex("label", "1"),
    _ex("rationale", "1"),
    _ex("label", "1", 1),
    _ex("label", "2"),
    _ex("rationale", "2"),
    _ex("label", "3"),
    _ex("rationale", "3"),
]


def _demonstrations(shown: TrainingExample, original: TrainingExample) -> list[str]:
    """The demonstrations before the real source, checking the source itself is kept as it was."""
    *demos, last = shown.source.split("\n\n")
    assert last == original.source
    return demos


def test_demonstration_text_is_source_then_what_is_written():
    example = TrainingExample("scott", "Q: 1+1?", " 2", context=" So", problem_id="p")
    assert demonstration_text(example) == "Q: 1+1? So 2"


def test_each_source_gets_k_demonstrations_of_its_task_and_other_problems():
    shown = with_demonstrations(EXAMPLES, k=2, seed=0)
    assert len(shown) == len(EXAMPLES)
    for original, example in zip(EXAMPLES, shown, strict=True):
        demos = _demonstrations(example, original)
        assert len(demos) == 2
        allowed = {
            demonstration_text(e): e
            for e in EXAMPLES
            if e.task == original.task and e.problem_id != original.problem_id
        }
        assert set(demos) <= set(allowed)
        assert len(set(demos)) == 2  # drawn without replacement
        # only the source changes
        assert (example.task, example.target, example.problem_id, example.sample_key) == (
            original.task,
            original.target,
            original.problem_id,
            original.sample_key,
        )
    # p1's label examples can only be shown p2 and p3
    assert set(_demonstrations(shown[0], EXAMPLES[0])) == {"Q20: A20", "Q30: A30"}


def test_same_seed_same_prompts_other_seed_other_prompts():
    first = with_demonstrations(EXAMPLES, k=2, seed=0)
    assert with_demonstrations(EXAMPLES, k=2, seed=0) == first
    assert with_demonstrations(EXAMPLES, k=2, seed=1) != first


def test_fewer_eligible_than_k_uses_all_of_them():
    shown = with_demonstrations(EXAMPLES, k=5, seed=0)
    # rationale of p1: only p2 and p3 are eligible
    assert sorted(_demonstrations(shown[1], EXAMPLES[1])) == ["Q20: A20", "Q30: A30"]
    # a task with a single problem has nothing to show: its source stays as it was
    alone = [_ex("label", "1"), _ex("label", "1", 1)]
    assert with_demonstrations(alone, k=2, seed=0) == alone


def test_exact_source_with_one_demonstration():
    pair = [_ex("label", "1"), _ex("label", "2")]
    shown = with_demonstrations(pair, k=1, seed=3)
    assert [e.source for e in shown] == ["Q20: A20\n\nQ10:", "Q10: A10\n\nQ20:"]


def test_k_zero_returns_the_examples_unchanged():
    assert with_demonstrations(EXAMPLES, k=0, seed=0) is EXAMPLES
    assert pick_demonstrations(EXAMPLES, k=0, task=None, seed=0) == []


def test_negative_k_is_refused():
    with pytest.raises(ConfigError, match="k=-1"):
        with_demonstrations(EXAMPLES, k=-1, seed=0)


def test_pick_demonstrations_is_fixed_and_from_the_task():
    first = pick_demonstrations(EXAMPLES, k=2, task=None, seed=0)
    assert len(first) == 2
    assert {e.task for e in first} == {"label"}  # the first task in order of appearance
    assert pick_demonstrations(EXAMPLES, k=2, task=None, seed=0) == first
    rationale = pick_demonstrations(EXAMPLES, k=5, task="rationale", seed=0)
    assert sorted(e.problem_id for e in rationale) == ["p1", "p2", "p3"]  # fewer than k: all of them
    with pytest.raises(ConfigError, match="'nope'"):
        pick_demonstrations(EXAMPLES, k=2, task="nope", seed=0)


class ScriptedStudent:
    """Stands for a model: records what it is asked and answers from a script."""

    causal = True
    explain = False
    batch_size = 4

    def __init__(self) -> None:
        self.prompts: list[str] = []
        self.pairs: list[tuple[str, str]] = []
        self.max_new_tokens: int | None = None

    def write(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        self.prompts += prompts
        self.max_new_tokens = max_new_tokens
        return [f"reply {i}" for i in range(len(prompts))]

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        self.pairs += pairs
        return [-float(i) for i in range(len(pairs))]


def test_in_context_student_prefixes_prompts_and_contexts():
    inner = ScriptedStudent()
    student = InContextStudent(inner, [_ex("label", "2"), _ex("label", "3")])
    assert student.write(["Q9:", "Q8:"], max_new_tokens=7) == ["reply 0", "reply 1"]
    assert inner.prompts == ["Q20: A20\n\nQ30: A30\n\nQ9:", "Q20: A20\n\nQ30: A30\n\nQ8:"]
    assert inner.max_new_tokens == 7
    assert student.loglikelihoods([("Q9:", " yes"), ("Q9:", " no")]) == [0.0, -1.0]
    assert inner.pairs == [("Q20: A20\n\nQ30: A30\n\nQ9:", " yes"), ("Q20: A20\n\nQ30: A30\n\nQ9:", " no")]
    assert (student.causal, student.explain, student.batch_size) == (True, False, 4)
    assert student.problem_ids == {"p2", "p3"}
    inner.causal = False  # properties read the wrapped student, not a copy
    assert student.causal is False
    with pytest.raises(AttributeError):
        _ = student.missing


def test_in_context_student_without_demonstrations_asks_as_is():
    inner = ScriptedStudent()
    InContextStudent(inner, []).write(["Q9:"])
    assert inner.prompts == ["Q9:"]
