"""Adding a teacher, a filter or a scorer is one class plus one `register` call — here from the test
module itself, with no package file edited — and each then works through the real commands."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from helpers import invoke, invoke_ok, read_jsonl, write_jsonl
from pydantic import Field

from cotfactory.errors import ConfigError, TemplateError
from cotfactory.filters import FILTERS
from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.records import Request, Sample, Verdict
from cotfactory.registry import Registry
from cotfactory.scorers import SCORERS
from cotfactory.scorers.base import Score, ScoreItem, Scorer
from cotfactory.teachers import TEACHERS
from cotfactory.teachers.base import Teacher, TeacherOptions


class EchoOptions(TeacherOptions):
    kind: Literal["echo"] = "echo"
    answer: str = Field("7", description="The answer every sample gives.")


class EchoTeacher(Teacher):
    """Writes a rationale of `words` words ending in its configured answer."""

    name = "echo"
    Options = EchoOptions

    async def generate(self, requests: Iterator[Request]) -> AsyncIterator[list[Sample]]:
        for request in requests:
            words = " ".join(["step"] * (1 + request.seed))
            text = f"{words}. The answer is {self.options.answer}."
            yield [Sample(request=request, text=text, latency_s=time.monotonic() % 1)]


class ShortFilter(Filter):
    """Drops rationales longer than six words."""

    name = "short"

    @classmethod
    def from_config(cls, config: Any) -> ShortFilter:
        return cls()

    def apply(self, group: ProblemGroup) -> list[Verdict]:
        return [self.verdict(s, len(s.text.split()) <= 6, "too_long") for s in group.survivors]


class LengthScorer(Scorer):
    """Shorter is better."""

    name = "length"

    def score(self, items: list[ScoreItem]) -> list[Score]:
        return [(-float(len(item.sample.text)), {}) for item in items]


@pytest.fixture()
def toys() -> Iterator[None]:
    TEACHERS.register("echo", EchoTeacher)
    FILTERS.register("short", ShortFilter)
    SCORERS.register("length", LengthScorer)
    yield
    TEACHERS.unregister("echo")
    FILTERS.unregister("short")
    SCORERS.unregister("length")


def _problems(tmp_path: Path) -> Path:
    rows = [{"id": f"p{i}", "question": f"{i} + 7 - {i}?", "answer": "7"} for i in range(3)]
    return write_jsonl(tmp_path / "q.jsonl", rows)


def test_a_registered_teacher_filter_and_scorer_run_through_the_commands(tmp_path: Path, toys: None) -> None:
    config = tmp_path / "generate.yaml"
    config.write_text(
        f"input: {_problems(tmp_path)}\nanswer_type: number\nout: {tmp_path / 'run'}\n"
        "teacher: {kind: echo, answer: '7'}\nseeds: [0, 1, 2, 3]\ntemperatures: [0.5]\n"
    )
    invoke_ok("generate", "--config", str(config))
    samples = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert len(samples) == 12 and {s["teacher"] for s in samples} == {"echo"}
    assert {s["answer"] for s in samples} == {"7"}

    args = ["filter", str(tmp_path / "run"), "--chain", "well_formed,short,reward", "--reward", "length"]
    invoke_ok(*args, "--top-k", "1")
    kept = read_jsonl(tmp_path / "run" / "filtered.jsonl")
    # short keeps seeds 0 and 1 (1 and 2 "step"s + "The answer is 7."), top-1 by length keeps seed 0
    assert len(kept) == 3 and all(row["verdicts"]["reward"]["score"] == -len(row["text"]) for row in kept)
    funnel = json.loads((tmp_path / "run" / "funnel.json").read_text())["stages"]
    assert [(s["stage"], s["samples_out"]) for s in funnel] == [
        ("input", 12),
        ("well_formed", 12),
        ("short", 6),
        ("reward", 3),
    ]


def test_a_teacher_option_is_checked_by_its_own_adapter(tmp_path: Path, toys: None) -> None:
    from cotfactory.config.generate import GenerateConfig

    config = GenerateConfig(input="q", out="o", teacher={"kind": "echo", "answer": "9"})
    assert config.teacher.answer == "9"  # type: ignore[attr-defined]
    flat = GenerateConfig(input="q", out="o", teacher="echo", answer="8")  # the flat form folds in too
    assert flat.teacher.answer == "8"  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="answr"):
        GenerateConfig(input="q", out="o", teacher={"kind": "echo", "answr": "9"})


def test_unknown_names_suggest_the_close_one() -> None:
    registry: Registry[int] = Registry("widget")
    registry.register("sprocket", 1)
    registry.register("gear", "math:pi")  # lazy: imported on first use
    assert registry.get("gear") == pytest.approx(3.14159, abs=1e-5)
    with pytest.raises(ConfigError, match=r"unknown widget 'sprockt' \(did you mean 'sprocket'\?\); available: gear"):
        registry.get("sprockt")
    with pytest.raises(ValueError, match="already registered"):
        registry.register("gear", 2)


def test_unknown_teacher_and_filter_are_one_line_exit_2(tmp_path: Path) -> None:
    code, output = invoke("generate", "--input", "q", "--out", str(tmp_path / "r"), "--teacher", "opnai")
    assert code == 2 and "unknown teacher 'opnai' (did you mean 'openai'?)" in output
    code, output = invoke("filter", str(tmp_path), "--chain", "well_formed,dedupe")
    assert code == 2 and "unknown filter 'dedupe' (did you mean 'dedup'?)" in output


def test_a_registered_template_is_found_by_name(tmp_path: Path) -> None:
    from cotfactory.prompts import TEMPLATES, available_templates, load_template

    path = tmp_path / "anywhere.yaml"
    path.write_text(
        "name: toy-template\nversion: 1\ndescription: A toy.\nform: completion\n"
        "prompt: 'Question: {{ question }}\\nAnswer:'\n"
    )
    TEMPLATES.register("toy-template", path)
    try:
        assert available_templates()["toy-template"] == path
        assert load_template("toy-template").name == "toy-template"
        code, output = invoke("templates", "show", "toy-template", "--problem", "Is ice cold?")
        assert code == 0 and "Question: Is ice cold?" in output
    finally:
        TEMPLATES.unregister("toy-template")
    with pytest.raises(TemplateError, match="unknown template 'toy-template'"):
        load_template("toy-template")
