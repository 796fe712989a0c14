"""Fine-tune-CoT (Ho et al. 2023): every kept rationale of a question is an example (diverse
reasoning). The student reads the question (a causal one followed by ``PROMPT_END``) and writes the
rationale, ``COT_SEPARATOR`` and the answer; the answer is read after the last separator."""

from __future__ import annotations

from cotfactory.records import Problem
from cotfactory.students.methods import Method, MethodSettings, Prediction, PromptFormat, TrainingExample
from cotfactory.students.methods.base import StudentLike, answer_from, factual, label_target, rank_choices
from cotfactory.students.records import TeachingRecord, format_question

COT_SEPARATOR = " --> "
SEPARATOR_MARK = COT_SEPARATOR.strip()  # what the reader splits at (the student may drop the spaces)
PROMPT_END = " ###"  # ends a causal student's prompt


def source(question: str, choices: list[str] | None, causal: bool) -> str:
    return format_question(question, choices) + (PROMPT_END if causal else "")


def build(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    return [
        TrainingExample(
            "cot",
            source(r.question, r.choices, settings.causal),
            label_target(f"{r.rationale}{COT_SEPARATOR}{r.answer}", settings.causal),
            problem_id=r.problem_id,
            sample_key=r.sample_key or "",
        )
        for r in factual(records)
    ]


def predict(student: StudentLike, problems: list[Problem]) -> list[Prediction]:
    """The rationale, then the answer after the separator; a text without one answers nothing.
    A causal student's choices are ranked after its own rationale."""
    sources = [source(p.question, p.choices, student.causal) for p in problems]
    texts = student.write(sources)
    out = []
    for problem, text in zip(problems, texts, strict=True):
        rationale, _, answer = text.rpartition(SEPARATOR_MARK)
        out.append(Prediction(problem, answer_from(answer, problem) if rationale else None, rationale.strip(), text))
    if student.causal:
        contexts = [
            f"{src} {(p.rationale or p.text).strip()} {SEPARATOR_MARK}" for src, p in zip(sources, out, strict=True)
        ]
        rank_choices(student, out, contexts)
    return out


METHOD = Method(
    "finetune-cot",
    build,
    predict,
    answer_at_end=frozenset({"cot"}),
    single_prompt=PromptFormat(lambda p, causal: source(p.question, p.choices, causal), False, SEPARATOR_MARK),
)
