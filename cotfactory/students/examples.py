"""Training examples, one builder per distillation method. The exact strings are the methods' own.

An example is ``source`` (what the student reads) → ``context`` + ``target`` (what it writes);
loss falls on ``target`` only (``context`` is teacher-forced without loss — SCOTT's counterfactual
answer tokens). ``task`` names the loss term; ``weight`` is that term's weight in the total.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from cotfactory.errors import ConfigError
from cotfactory.students.records import TeachingRecord, format_question

Method = Literal["label-only", "step-by-step", "finetune-cot", "socratic", "socratic-unified", "scott"]
COT_SEPARATOR = " --> "
# A causal student reads its answer after a cue and writes it after a space, as lm-eval's multiple-choice
# tasks score it (context + " " + choice); without the cue the answer runs on from the question's last
# word, a format a pretrained model has never seen. Seq2seq students keep the papers' bare targets.
ANSWER_CUE = "\nAnswer:"
EXPLANATION_CUE = "\nExplanation:"


def label_source(question: str, choices: list[str] | None, causal: bool, prefix: str = "") -> str:
    """What a student reads before writing a bare answer (label-only, step-by-step's `predict:`)."""
    text = prefix + format_question(question, choices)
    return text + ANSWER_CUE if causal else text


def label_target(answer: str, causal: bool) -> str:
    return f" {answer}" if causal else answer


def explain_source(question: str, choices: list[str] | None, causal: bool) -> str:
    """What a step-by-step student reads before writing its rationale on request (`explain:`)."""
    text = "explain: " + format_question(question, choices)
    return text + EXPLANATION_CUE if causal else text


@dataclass(frozen=True)
class TrainingExample:
    task: str
    source: str
    target: str
    context: str = ""
    weight: float = 1.0
    problem_id: str = ""
    sample_key: str = ""  # the teacher sample this example was made from (lineage); "" for dataset rationales


@dataclass(frozen=True)
class MethodSettings:
    alpha: float = 0.5  # step-by-step: label-loss weight; scott: counterfactual-loss weight
    causal: bool = True


Builder = Callable[[list[TeachingRecord], MethodSettings], list[TrainingExample]]
BUILDERS: dict[str, Builder] = {}


def register(name: str) -> Callable[[Builder], Builder]:
    def wrap(builder: Builder) -> Builder:
        BUILDERS[name] = builder
        return builder

    return wrap


def build_examples(method: str, records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    if method not in BUILDERS:
        raise ConfigError(f"unknown method '{method}'; choose one of: {', '.join(BUILDERS)}")
    examples = BUILDERS[method](records, settings)
    if not examples:
        raise ConfigError(f"method '{method}': the input gives no training examples (see its requirements)")
    return examples


def _factual(records: list[TeachingRecord]) -> list[TeachingRecord]:
    return [r for r in records if r.mode != "counterfactual"]


@register("label-only")
def label_only(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """Standard fine-tuning: question → answer, one example per question (rationales are ignored)."""
    seen: dict[str, TrainingExample] = {}
    for r in _factual(records):
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


@register("step-by-step")
def step_by_step(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """Distilling Step-by-Step (Hsieh et al. 2023): `predict:` → label and `explain:` → rationale,
    loss = alpha · L_label + (1 − alpha) · L_rationale."""
    examples = []
    for r in _factual(records):
        key = r.sample_key or ""
        examples.append(
            TrainingExample(
                "label",
                label_source(r.question, r.choices, settings.causal, "predict: "),
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


@register("finetune-cot")
def finetune_cot(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """Fine-tune-CoT (Ho et al. 2023): every kept rationale of a question is an example (diverse
    reasoning). Causal: "{question} ###" → " {rationale} --> {answer}" + EOS; seq2seq: question →
    "{rationale} --> {answer}"."""
    examples = []
    for r in _factual(records):
        question = format_question(r.question, r.choices)
        if settings.causal:
            examples.append(
                TrainingExample(
                    "cot",
                    f"{question} ###",
                    f" {r.rationale}{COT_SEPARATOR}{r.answer}",
                    problem_id=r.problem_id,
                    sample_key=r.sample_key or "",
                )
            )
        else:
            examples.append(
                TrainingExample(
                    "cot",
                    question,
                    f"{r.rationale}{COT_SEPARATOR}{r.answer}",
                    problem_id=r.problem_id,
                    sample_key=r.sample_key or "",
                )
            )
    return examples


def solver_source(question: str, solved: list[tuple[str, str]], next_question: str) -> str:
    """The Socratic solver's input: the problem, the sub-questions answered so far, the next one."""
    lines = [question]
    lines += [f"Q: {q} A: {a}" for q, a in solved]
    lines.append(f"Q: {next_question} A:")
    return "\n".join(lines)


@register("socratic")
def socratic(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """Socratic CoT (Shridhar et al. 2023): a decomposer (question → its sub-questions, one per line)
    and a solver (question + earlier pairs + next sub-question → sub-answer), in one model told apart
    by their prefixes. Sub-questions without known answers train the decomposer only, and one solver
    example maps the question and all its sub-questions to the final answer."""
    examples = []
    for r in _factual(records):
        if not r.subquestions:
            continue
        question = format_question(r.question, r.choices)
        examples.append(
            TrainingExample(
                "decompose", f"decompose: {question}", "\n".join(q for q, _ in r.subquestions), problem_id=r.problem_id
            )
        )
        if all(answer is not None for _, answer in r.subquestions):
            solved: list[tuple[str, str]] = []
            for sub_question, sub_answer in r.subquestions:
                examples.append(
                    TrainingExample(
                        "solve",
                        f"solve: {solver_source(question, solved, sub_question)}",
                        str(sub_answer),
                        problem_id=r.problem_id,
                    )
                )
                solved.append((sub_question, str(sub_answer)))
        else:  # sub-answers unknown (StrategyQA): answer the question from its plan
            plan = "\n".join(f"Q: {q}" for q, _ in r.subquestions)
            examples.append(
                TrainingExample(
                    "solve", f"solve: {question}\n{plan}\nThe answer is", f" {r.answer}", problem_id=r.problem_id
                )
            )
    return examples


@register("socratic-unified")
def socratic_unified(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """The unified Socratic variant: one pass writes every sub-question with its answer
    ("sub-question ** sub-answer" lines), then "The answer is X."."""
    examples = []
    for r in _factual(records):
        if not r.subquestions or any(a is None for _, a in r.subquestions):
            continue
        steps = "\n".join(f"{q} ** {a}" for q, a in r.subquestions)
        examples.append(
            TrainingExample(
                "unified",
                format_question(r.question, r.choices),
                f"{steps}\nThe answer is {r.answer}.",
                problem_id=r.problem_id,
            )
        )
    return examples


@register("scott")
def scott(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """SCOTT (Wang et al. 2023): factual "[factual] q" → "{rationale} So the answer is {answer}";
    counterfactual "[counterfactual] q" teacher-forced through the counterfactual rationale with loss
    on the answer tokens only, so the student learns to answer from its rationale. Weights 1 − alpha
    (factual) and alpha (counterfactual)."""
    examples = []
    for r in records:
        question = format_question(r.question, r.choices)
        if r.mode == "counterfactual":
            examples.append(
                TrainingExample(
                    "counterfactual",
                    f"[counterfactual] {question}",
                    r.answer,
                    context=f"{r.rationale} So the answer is ",
                    weight=settings.alpha,
                    problem_id=r.problem_id,
                )
            )
        else:
            examples.append(
                TrainingExample(
                    "factual",
                    f"[factual] {question}",
                    f"{r.rationale} So the answer is {r.answer}",
                    weight=1 - settings.alpha,
                    problem_id=r.problem_id,
                )
            )
    return examples
