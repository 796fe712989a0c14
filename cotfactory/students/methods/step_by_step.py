"""Distilling Step-by-Step (Hsieh et al. 2023): one model, two tasks told apart by their prefixes —
answer on ``PREDICT``, write the rationale on ``EXPLAIN`` — with
loss = alpha · L_label + (1 − alpha) · L_rationale. Inference answers through ``PREDICT`` only."""

from __future__ import annotations

from cotfactory.records import Problem
from cotfactory.students.methods import Method, MethodSettings, Prediction, PromptFormat, TrainingExample
from cotfactory.students.methods.base import StudentLike, factual, label_target
from cotfactory.students.methods.label_only import ANSWER_TOKENS, label_source, predict_label
from cotfactory.students.records import TeachingRecord, format_question

PREDICT = "predict: "
EXPLAIN = "explain: "
EXPLANATION_CUE = "\nExplanation:"  # a causal student's cue to write its rationale (as ANSWER_CUE for answers)


def explain_source(question: str, choices: list[str] | None, causal: bool) -> str:
    """What a step-by-step student reads before writing its rationale on request."""
    text = EXPLAIN + format_question(question, choices)
    return text + EXPLANATION_CUE if causal else text


def build(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    examples = []
    for r in factual(records):
        key = r.sample_key or ""
        examples.append(
            TrainingExample(
                "label",
                label_source(r.question, r.choices, settings.causal, PREDICT),
                label_target(r.answer, settings.causal),
                weight=settings.alpha,
                problem_id=r.problem_id,
                sample_key=key,
            )
        )
        if r.rationale:
            examples.append(
                TrainingExample(
                    "rationale",
                    explain_source(r.question, r.choices, settings.causal),
                    label_target(r.rationale, settings.causal),
                    weight=1 - settings.alpha,
                    problem_id=r.problem_id,
                    sample_key=key,
                )
            )
    return examples


def predict(student: StudentLike, problems: list[Problem]) -> list[Prediction]:
    """The answer on ``PREDICT``; the rationale is written on request (``EXPLAIN``) for the record,
    unless the student was told not to (``explain=False``: it costs a generation per problem)."""
    predictions = predict_label(student, problems, PREDICT)
    if not student.explain:
        return predictions
    explanations = student.write([explain_source(p.question, p.choices, student.causal) for p in problems])
    for prediction, explanation in zip(predictions, explanations, strict=True):
        prediction.rationale = explanation
    return predictions


METHOD = Method(
    "step-by-step",
    build,
    predict,
    answer_at_end=frozenset({"label"}),
    single_prompt=PromptFormat(
        lambda p, causal: label_source(p.question, p.choices, causal, PREDICT), True, max_gen_toks=ANSWER_TOKENS
    ),
)
