"""What every student method is made of, and the pieces its files share.

A method is one file in this package that ends with ``METHOD = Method(...)``: the builder that turns
teaching records into training examples, the reader that asks a trained student and reads its answer,
and the prompt strings both use. Trainer, evaluator, preflight and the lm-eval writer ask the ``Method``
and never name a method themselves.

An example is ``source`` (what the student reads) → ``context`` + ``target`` (what it writes); loss
falls on ``target`` only (``context`` is teacher-forced without loss — SCOTT's counterfactual answer
tokens). ``task`` names the loss term; ``weight`` is that term's weight in the total.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cotfactory import answers
from cotfactory.records import Problem
from cotfactory.students.records import TeachingRecord

# The statement a rationale ends with ("So the answer is 7", "The answer is 7."): a bare answer is read by
# putting it after this, and methods that end their text with it have their answer after it.
ANSWER_IS = "The answer is"
ANSWER_MARKER = "answer is"  # where lm-eval's regex finds the answer in such a text


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


@dataclass
class Prediction:
    problem: Problem
    answer: str | None
    rationale: str = ""
    text: str = ""
    ranked: str | None = None  # the choice of highest log-likelihood (multiple choice only)
    ranked_norm: str | None = None  # … per character of the choice (lm-eval's acc_norm)
    choice_logprobs: list[float] | None = None

    @property
    def correct(self) -> bool:
        return answers.answers_match(self.answer, self.problem.gold, self.problem)

    @property
    def rationale_agrees(self) -> bool | None:
        """Does the rationale's own conclusion equal the final answer? None without a rationale."""
        return self._concludes(self.answer)

    @property
    def rationale_correct(self) -> bool | None:
        """Does the rationale's own conclusion equal the gold answer? None without a rationale.

        For step-by-step students this is the accuracy of answering through the rationale written on
        request, next to the accuracy of the bare answer the method is scored by.
        """
        return self._concludes(self.problem.gold)

    def _concludes(self, expected: str | None) -> bool | None:
        if not self.rationale.strip():
            return None
        _, concluded = answers.extract(self.rationale, self.problem)
        return concluded is not None and answers.answers_match(concluded, expected, self.problem)


class StudentLike(Protocol):
    """What a reader asks of a student (``evaluate.Student``; tests pass a scripted stand-in)."""

    causal: bool
    explain: bool  # also write what is only for the record (step-by-step's rationale on request)

    def write(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]: ...

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]: ...


Builder = Callable[[list[TeachingRecord], MethodSettings], list[TrainingExample]]
Predictor = Callable[[StudentLike, list[Problem]], list[Prediction]]


@dataclass(frozen=True)
class PromptFormat:
    """How a method is asked in a single prompt (what the lm-eval task writer needs): its prompt,
    whether choices can be scored after it, where its answer is."""

    prompt: Callable[[Problem, bool], str]  # (problem, causal) → what the student reads
    scores_choices: bool  # a bare answer follows the prompt: choices are continuations of it
    marker: str = ""  # the answer follows the last occurrence of this in the written text ("" = all of it)
    max_gen_toks: int | None = None  # what cotfactory eval lets the method write (None: its --max-new-tokens)


@dataclass(frozen=True)
class Method:
    """A distillation method: how a student learns (``build``) and how it is asked (``predict``)."""

    name: str
    build: Builder
    # None: no reader; a student trained with it could not be evaluated, so training it is refused
    predict: Predictor | None
    # the tasks whose target ends with the answer: cutting its end removes the answer (the preflight)
    answer_at_end: frozenset[str] = frozenset()
    # None: the method asks more than one prompt (Socratic): it has no single lm-eval task
    single_prompt: PromptFormat | None = None


# --- shared by the methods' files ----------------------------------------------------------------------


def factual(records: list[TeachingRecord]) -> list[TeachingRecord]:
    """The records to learn from as they are: all but SCOTT's counterfactual rationales."""
    return [r for r in records if r.mode != "counterfactual"]


def label_target(answer: str, causal: bool) -> str:
    """What a student writes after its prompt: a causal student a space first, as lm-eval scores a
    continuation (context + " " + choice); a seq2seq student the bare text, as in the papers."""
    return f" {answer}" if causal else answer


def answer_from(text: str, problem: Problem) -> str | None:
    """A bare answer ('7', '(c) zoo', 'yes') read with the answer module."""
    return answers.extract(f"{ANSWER_IS} {text.strip()}", problem)[1] if text.strip() else None


def rank_choices(student: StudentLike, predictions: list[Prediction], contexts: list[str]) -> None:
    """Fill ``ranked`` / ``ranked_norm``: each choice as a continuation of its problem's context."""
    asked = [(pred, ctx) for pred, ctx in zip(predictions, contexts, strict=True) if pred.problem.choices]
    if not asked:
        return
    pairs = [(ctx, label_target(c, student.causal)) for pred, ctx in asked for c in pred.problem.choices or []]
    scores = iter(student.loglikelihoods(pairs))
    for prediction, _ in asked:
        choices = prediction.problem.choices or []
        logprobs = [next(scores) for _ in choices]
        prediction.choice_logprobs = logprobs
        prediction.ranked = choices[max(range(len(choices)), key=lambda i: logprobs[i])]
        normalized = [lp / max(1, len(c)) for lp, c in zip(logprobs, choices, strict=True)]
        prediction.ranked_norm = choices[max(range(len(choices)), key=lambda i: normalized[i])]


def write_and_extract(student: StudentLike, problems: list[Problem], prompts: list[str]) -> list[Prediction]:
    """The reader of methods whose text is a rationale ending in its answer statement."""
    texts = student.write(prompts)
    out = []
    for problem, text in zip(problems, texts, strict=True):
        rationale, answer = answers.extract(text, problem)
        out.append(Prediction(problem, answer, rationale, text))
    return out
