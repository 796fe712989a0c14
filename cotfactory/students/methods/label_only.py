"""Label-only: standard fine-tuning, question → answer (rationales are ignored).

Also the format a model is asked in untrained (``UNTRAINED_METHOD``): the "before" of every student.
"""

from __future__ import annotations

from cotfactory.records import Problem
from cotfactory.students.methods import Method, MethodSettings, Prediction, PromptFormat, TrainingExample
from cotfactory.students.methods.base import StudentLike, answer_from, factual, label_target, rank_choices
from cotfactory.students.records import TeachingRecord, format_question

# A causal student reads its answer after a cue and writes it after a space, as lm-eval's multiple-choice
# tasks score it (context + " " + choice); without the cue the answer runs on from the question's last
# word, a format a pretrained model has never seen. Seq2seq students keep the papers' bare targets.
ANSWER_CUE = "\nAnswer:"
ANSWER_TOKENS = 32  # what a student that answers bare may write


def label_source(question: str, choices: list[str] | None, causal: bool, prefix: str = "") -> str:
    """What a student reads before writing a bare answer (label-only; step-by-step after its prefix)."""
    text = prefix + format_question(question, choices)
    return text + ANSWER_CUE if causal else text


def build(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """One example per question: the first factual record's answer."""
    seen: dict[str, TrainingExample] = {}
    for r in factual(records):
        seen.setdefault(
            r.problem_id,
            TrainingExample(
                "label",
                label_source(r.question, r.choices, settings.causal),
                label_target(r.answer, settings.causal),
                problem_id=r.problem_id,
                sample_key=r.sample_key or "",
            ),
        )
    return list(seen.values())


def predict_label(student: StudentLike, problems: list[Problem], prefix: str = "") -> list[Prediction]:
    """A bare answer to each problem, and (multiple choice) each choice ranked as a continuation."""
    sources = [label_source(p.question, p.choices, student.causal, prefix) for p in problems]
    texts = student.write(sources, ANSWER_TOKENS)
    predictions = [Prediction(p, answer_from(t, p), "", t) for p, t in zip(problems, texts, strict=True)]
    rank_choices(student, predictions, sources)
    return predictions


def predict(student: StudentLike, problems: list[Problem]) -> list[Prediction]:
    return predict_label(student, problems)


METHOD = Method(
    "label-only",
    build,
    predict,
    answer_at_end=frozenset({"label"}),
    single_prompt=PromptFormat(
        lambda p, causal: label_source(p.question, p.choices, causal), True, max_gen_toks=ANSWER_TOKENS
    ),
)
