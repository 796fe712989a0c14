"""``cotfactory eval``: run a trained student on held-out problems and score it with the answer module.

Each method reads its own prompt format (the one it was trained on) and turns the student's text into
a final answer; students that write a rationale are also checked for whether the rationale's own
conclusion is the answer they give.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cotfactory import answers
from cotfactory.errors import ConfigError
from cotfactory.export import write_json_atomic, write_jsonl_atomic
from cotfactory.problems import load_problems
from cotfactory.records import Problem
from cotfactory.students.examples import COT_SEPARATOR, solver_source
from cotfactory.students.records import format_question
from cotfactory.students.train import read_student

MAX_SOCRATIC_STEPS = 8


@dataclass
class Prediction:
    problem: Problem
    answer: str | None
    rationale: str = ""
    text: str = ""

    @property
    def correct(self) -> bool:
        return answers.answers_match(self.answer, self.problem.gold, self.problem)

    @property
    def rationale_agrees(self) -> bool | None:
        """Does the rationale's own conclusion equal the final answer? None without a rationale."""
        if not self.rationale.strip():
            return None
        _, concluded = answers.extract(self.rationale, self.problem)
        return concluded is not None and answers.answers_match(concluded, self.answer, self.problem)

    @property
    def rationale_correct(self) -> bool | None:
        """Does the rationale's own conclusion equal the gold answer? None without a rationale.

        For step-by-step students this is the accuracy of answering through `explain:` (the rationale
        on request), next to the `predict:` accuracy the method is scored by.
        """
        if not self.rationale.strip():
            return None
        _, concluded = answers.extract(self.rationale, self.problem)
        return concluded is not None and answers.answers_match(concluded, self.problem.gold, self.problem)


class Student:
    """A trained student ready to write: batched greedy generation, causal or seq2seq."""

    def __init__(self, folder: str | Path, batch_size: int = 16, max_new_tokens: int = 256):
        import torch

        self.info = read_student(folder)
        self.causal = bool(self.info["causal"])
        self.batch_size, self.max_new_tokens = batch_size, max_new_tokens
        self.model, self.tokenizer = _load(Path(folder), self.info)
        self.device = "cuda" if torch.cuda.is_available() else "cpu"
        self.model.to(self.device).eval()

    def write(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        out: list[str] = []
        for start in range(0, len(prompts), self.batch_size):
            out.extend(
                self._write_batch(prompts[start : start + self.batch_size], max_new_tokens or self.max_new_tokens)
            )
        return out

    def _write_batch(self, prompts: list[str], max_new_tokens: int) -> list[str]:
        import torch

        tokenizer = self.tokenizer
        tokenizer.padding_side = "left" if self.causal else "right"
        encoded = [tokenizer(p, add_special_tokens=True)["input_ids"] for p in prompts]
        if self.causal:  # the prompt must not end in EOS (trained that way)
            encoded = [ids[:-1] if ids and ids[-1] == tokenizer.eos_token_id else ids for ids in encoded]
        batch = tokenizer.pad({"input_ids": encoded}, return_tensors="pt").to(self.device)
        with torch.inference_mode():
            output = self.model.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tokenizer.pad_token_id,
                eos_token_id=tokenizer.eos_token_id,
            )
        if self.causal:
            output = output[:, batch["input_ids"].shape[1] :]
        return [tokenizer.decode(row, skip_special_tokens=True).strip() for row in output]


def _load(folder: Path, info: dict[str, Any]) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer

    from cotfactory.models import quiet_transformers

    quiet_transformers()
    auto = AutoModelForCausalLM if info["causal"] else AutoModelForSeq2SeqLM
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if not info["adapter"]:
        return auto.from_pretrained(folder), tokenizer
    from peft import PeftModel

    base = auto.from_pretrained(info["base"])
    return PeftModel.from_pretrained(base, folder), tokenizer


# --- one reader per method ------------------------------------------------------------------------------


def _answer_from(text: str, problem: Problem) -> str | None:
    """A bare answer ('7', '(c) zoo', 'yes') read with the answer module."""
    return answers.extract(f"The answer is {text.strip()}", problem)[1] if text.strip() else None


def predict_label(student: Student, problems: list[Problem], prefix: str = "") -> list[Prediction]:
    texts = student.write([prefix + format_question(p.question, p.choices) for p in problems], 32)
    return [Prediction(p, _answer_from(t, p), "", t) for p, t in zip(problems, texts, strict=True)]


def predict_step_by_step(student: Student, problems: list[Problem]) -> list[Prediction]:
    """Inference uses `predict:` only; the rationale is written on request (`explain:`) for the record."""
    predictions = predict_label(student, problems, "predict: ")
    explanations = student.write([f"explain: {format_question(p.question, p.choices)}" for p in problems])
    for prediction, explanation in zip(predictions, explanations, strict=True):
        prediction.rationale = explanation
    return predictions


def predict_finetune_cot(student: Student, problems: list[Problem]) -> list[Prediction]:
    suffix = " ###" if student.causal else ""
    texts = student.write([format_question(p.question, p.choices) + suffix for p in problems])
    out = []
    for problem, text in zip(problems, texts, strict=True):
        rationale, _, answer = text.rpartition(COT_SEPARATOR.strip())
        out.append(Prediction(problem, _answer_from(answer, problem) if rationale else None, rationale.strip(), text))
    return out


def predict_scott(student: Student, problems: list[Problem]) -> list[Prediction]:
    texts = student.write([f"[factual] {format_question(p.question, p.choices)}" for p in problems])
    out = []
    for problem, text in zip(problems, texts, strict=True):
        rationale, answer = answers.extract(text, problem)
        out.append(Prediction(problem, answer, rationale, text))
    return out


def predict_unified(student: Student, problems: list[Problem]) -> list[Prediction]:
    texts = student.write([format_question(p.question, p.choices) for p in problems])
    out = []
    for problem, text in zip(problems, texts, strict=True):
        rationale, answer = answers.extract(text, problem)
        out.append(Prediction(problem, answer, rationale, text))
    return out


def predict_socratic(student: Student, problems: list[Problem]) -> list[Prediction]:
    """Decompose, then solve the sub-questions in turn (all problems batched per step); the last
    sub-answer is the answer. At most MAX_SOCRATIC_STEPS sub-questions per problem."""
    questions = [format_question(p.question, p.choices) for p in problems]
    plans = [
        [line.strip() for line in text.splitlines() if line.strip()][:MAX_SOCRATIC_STEPS]
        for text in student.write([f"decompose: {q}" for q in questions])
    ]
    solved: list[list[tuple[str, str]]] = [[] for _ in problems]
    for step in range(MAX_SOCRATIC_STEPS):
        active = [i for i, plan in enumerate(plans) if step < len(plan)]
        if not active:
            break
        replies = student.write(
            [f"solve: {solver_source(questions[i], solved[i], plans[i][step])}" for i in active], 64
        )
        for i, reply in zip(active, replies, strict=True):
            solved[i].append((plans[i][step], reply))
    out = []
    for problem, steps in zip(problems, solved, strict=True):
        text = "\n".join(f"{q} ** {a}" for q, a in steps)
        last = steps[-1][1] if steps else ""
        answer = answers.extract(last, problem)[1] if last else None
        out.append(Prediction(problem, answer, text, text))
    return out


PREDICTORS: dict[str, Callable[[Student, list[Problem]], list[Prediction]]] = {
    "label-only": predict_label,
    "step-by-step": predict_step_by_step,
    "finetune-cot": predict_finetune_cot,
    "scott": predict_scott,
    "socratic": predict_socratic,
    "socratic-unified": predict_unified,
}


@dataclass
class EvalResult:
    method: str
    total: int
    correct: int
    rationale_agreement: float | None
    rationale_accuracy: float | None
    predictions_path: Path

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0


def run_eval(
    folder: str,
    format: str,
    input: str,
    limit: int | None = None,
    batch_size: int = 16,
    max_new_tokens: int = 256,
    out: str | None = None,
    answer_type: str | None = None,
) -> EvalResult:
    problems = load_problems(format, input, limit=limit, answer_type=answer_type)
    student = Student(folder, batch_size, max_new_tokens)
    method = student.info["method"]
    if method not in PREDICTORS:
        raise ConfigError(f"{folder}: no evaluator for method '{method}'")
    predictions = PREDICTORS[method](student, problems)
    agreements = [a for a in (p.rationale_agrees for p in predictions) if a is not None]
    rationale_correct = [c for c in (p.rationale_correct for p in predictions) if c is not None]
    path = Path(out) if out else Path(folder) / "predictions.jsonl"
    write_jsonl_atomic(
        path,
        (
            {
                "problem_id": p.problem.id,
                "question": p.problem.question,
                "gold": p.problem.gold,
                "prediction": p.answer,
                "rationale": p.rationale,
                "text": p.text,
                "correct": p.correct,
                "rationale_agrees": p.rationale_agrees,
                "rationale_correct": p.rationale_correct,
            }
            for p in predictions
        ),
    )
    result = EvalResult(
        method,
        len(predictions),
        sum(p.correct for p in predictions),
        sum(agreements) / len(agreements) if agreements else None,
        sum(rationale_correct) / len(rationale_correct) if rationale_correct else None,
        path,
    )
    write_json_atomic(
        path.with_name("eval.json"),
        {
            "method": method,
            "input": input,
            "total": result.total,
            "correct": result.correct,
            "accuracy": result.accuracy,
            "rationale_agreement": result.rationale_agreement,
            "rationale_accuracy": result.rationale_accuracy,
        },
    )
    return result
