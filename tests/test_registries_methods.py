"""Student methods are pluggable: a method registered from outside the package trains and evaluates
through the same ``run_train`` / ``run_eval`` as the built-ins, and one that could not be evaluated is
refused before anything is read or written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import read_jsonl, write_jsonl

from cotfactory.config.train import TrainConfig
from cotfactory.errors import ConfigError
from cotfactory.records import Problem
from cotfactory.students.methods import (
    METHODS,
    Method,
    MethodSettings,
    Prediction,
    PromptFormat,
    TrainingExample,
    check_method,
)
from cotfactory.students.methods.base import StudentLike, answer_from, factual, label_target
from cotfactory.students.records import TeachingRecord

TOY_PROMPT = "toy question: "
TOY_MARK = "toy reader: "  # what the toy reader puts before the text it read


def _toy_source(question: str) -> str:
    return f"{TOY_PROMPT}{question}\nso:"


def toy_build(records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """Label-only examples, in the toy method's own prompt."""
    causal = settings.causal
    return [TrainingExample("toy", _toy_source(r.question), label_target(r.answer, causal)) for r in factual(records)]


def toy_predict(student: StudentLike, problems: list[Problem]) -> list[Prediction]:
    texts = student.write([_toy_source(p.question) for p in problems], 8)
    return [Prediction(p, answer_from(t, p), "", TOY_MARK + t) for p, t in zip(problems, texts, strict=True)]


TOY = Method(
    "toy",
    toy_build,
    toy_predict,
    answer_at_end=frozenset({"toy"}),
    single_prompt=PromptFormat(lambda p, causal: _toy_source(p.question), True),
)
MUTE = Method("mute", toy_build, None)  # trains, but nothing could read what it learned


@pytest.fixture
def registered() -> Iterator[None]:
    METHODS.register(TOY.name, TOY)
    METHODS.register(MUTE.name, MUTE)
    yield
    METHODS.unregister(TOY.name)
    METHODS.unregister(MUTE.name)


@pytest.fixture
def teaching_file(tmp_path: Path) -> Path:
    path = tmp_path / "teach.jsonl"
    rows = [
        {"problem_id": f"p{i}", "question": f"What is {i} plus {i}?", "answer": str(2 * i), "answer_type": "number"}
        for i in range(8)
    ]
    write_jsonl(path, rows)
    return path


def _config(teaching_file: Path, method: str, out: Path) -> TrainConfig:
    return TrainConfig(
        input=str(teaching_file),
        method=method,
        student="scratch:llama-tiny",
        out=str(out),
        lora_r=0,
        max_steps=2,
        batch_size=4,
        save_steps=100,
    )


def test_a_method_registered_from_outside_trains_and_evaluates(
    registered: None, teaching_file: Path, tmp_path: Path
) -> None:
    from cotfactory.students.evaluate import run_eval
    from cotfactory.students.train import run_train

    out = tmp_path / "toy"
    result = run_train(_config(teaching_file, "toy", out))
    assert result.steps == 2 and result.tasks == {"toy": 8}
    learned = read_jsonl(out / "examples.jsonl")
    assert learned[0]["source"] == f"{TOY_PROMPT}What is 0 plus 0?\nso:" and learned[0]["target"] == " 0"
    assert json.loads((out / "student.json").read_text())["method"] == "toy"

    problems = tmp_path / "held_out.jsonl"
    rows = [{"id": f"t{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(3)]
    write_jsonl(problems, rows)
    evaluation = run_eval(str(out), "jsonl", str(problems), answer_type="number", max_new_tokens=8)
    assert evaluation.method == "toy" and evaluation.total == 3
    predicted = read_jsonl(out / "predictions.jsonl")
    assert len(predicted) == 3 and all(row["text"].startswith(TOY_MARK) for row in predicted)  # the toy reader's
    assert json.loads((out / "eval.json").read_text())["method"] == "toy"


def test_a_method_without_inference_is_refused_before_anything_is_written(
    registered: None, teaching_file: Path, tmp_path: Path
) -> None:
    from cotfactory.students.train import run_train

    assert check_method("toy") is TOY
    message = "method 'mute' has no inference (predict); a student trained with it could not be evaluated"
    with pytest.raises(ConfigError) as refused:
        check_method("mute", "students.0: ")
    assert str(refused.value) == f"students.0: {message}"
    out = tmp_path / "mute"
    missing = tmp_path / "no-such-input.jsonl"  # the method is refused before the input is read
    with pytest.raises(ConfigError, match="no inference"):
        run_train(_config(missing, "mute", out))
    assert not out.exists()


def test_unknown_methods_name_the_closest_and_the_registered(registered: None) -> None:
    with pytest.raises(ConfigError) as unknown:
        check_method("toyy")
    text = str(unknown.value)
    assert text.startswith("unknown method 'toyy' (did you mean 'toy'?); available: ") and "\n" not in text
    assert "label-only" in text and "socratic-unified" in text and "mute" in text


def test_unregistered_methods_are_gone() -> None:
    assert "toy" not in METHODS and "mute" not in METHODS
    assert {"label-only", "step-by-step", "finetune-cot", "socratic", "socratic-unified", "scott"} <= set(METHODS)
