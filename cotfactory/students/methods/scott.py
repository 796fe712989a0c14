"""SCOTT (Wang et al. 2023): factual ``FACTUAL`` + question → "{rationale} So the answer is {answer}";
counterfactual ``COUNTERFACTUAL`` + question teacher-forced through the counterfactual rationale with
loss on the answer tokens only, so the student learns to answer from its rationale. Weights 1 − alpha
(factual) and alpha (counterfactual). Inference asks the factual prompt."""

from __future__ import annotations

from cotfactory.records import Problem
from cotfactory.students.methods import Method, MethodSettings, Prediction, PromptFormat, TrainingExample
from cotfactory.students.methods.base import ANSWER_IS, ANSWER_MARKER, StudentLike, write_and_extract
from cotfactory.students.records import TeachingRecord, format_question

FACTUAL = "[factual] "
COUNTERFACTUAL = "[counterfactual] "
CONCLUSION = f" So {ANSWER_IS.lower()} "  # between the rationale and its answer


def prompt(problem: Problem, causal: bool = True) -> str:
    return FACTUAL + format_question(problem.question, problem.choices)


def build(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    examples = []
    for r in records:
        question = format_question(r.question, r.choices)
        if r.mode == "counterfactual":
            examples.append(
                TrainingExample(
                    "counterfactual",
                    COUNTERFACTUAL + question,
                    r.answer,
                    context=f"{r.rationale}{CONCLUSION}",
                    weight=settings.alpha,
                    problem_id=r.problem_id,
                )
            )
        else:
            examples.append(
                TrainingExample(
                    "factual",
                    FACTUAL + question,
                    f"{r.rationale}{CONCLUSION}{r.answer}",
                    weight=1 - settings.alpha,
                    problem_id=r.problem_id,
                )
            )
    return examples


def predict(student: StudentLike, problems: list[Problem]) -> list[Prediction]:
    return write_and_extract(student, problems, [prompt(p) for p in problems])


METHOD = Method(
    "scott",
    build,
    predict,
    answer_at_end=frozenset({"factual", "counterfactual"}),
    single_prompt=PromptFormat(prompt, False, ANSWER_MARKER),
)
