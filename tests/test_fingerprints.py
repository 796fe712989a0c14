"""Stage fingerprints come from each field's declaration: a runtime-only setting (retries, concurrency,
batch sizes, logging, checkpoints) reruns nothing; a setting that changes output reruns its stage and
everything downstream of it."""

from __future__ import annotations

from pathlib import Path

import pytest
from rich.console import Console

from cotfactory.config.fields import is_runtime
from cotfactory.config.pipeline import load_pipeline
from cotfactory.pipeline import plan_stages

PIPELINE = """
name: p
out: {out}
generate:
  input: {data}
  teacher: openai
  model: served
  base_url: [http://127.0.0.1:1/v1]
  temperatures: [0.7]
filter: {{correct: true}}
students:
  - {{name: a, method: label-only, student: scratch:llama-tiny}}
  - {{name: b, method: step-by-step, student: scratch:t5-tiny}}
eval: {{input: {data}}}
"""


def _fingerprints(tmp_path: Path, *overrides: str) -> dict[str, str]:
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "1", "question": "1 + 1?", "answer": "2"}\n')
    path = tmp_path / "p.yaml"
    path.write_text(PIPELINE.format(out=tmp_path / "run", data=data))
    config = load_pipeline(path, list(overrides))
    return {stage.name: stage.fingerprint for stage in plan_stages(config, Console(quiet=True))}


RUNTIME_ONLY = [
    "generate.max_attempts=8",
    "generate.concurrency=2",
    "generate.timeout=5",
    "generate.rpm=60",
    "generate.retry_failed=true",
    "generate.max_total_tokens=100000",
    "filter.reward_batch_size=4",
    "filter.device=cpu",
    "students.0.logging_steps=1",
    "students.0.save_steps=7",
    "students.1.resume=true",
    "eval.batch_size=2",
]


@pytest.mark.parametrize("override", RUNTIME_ONLY)
def test_runtime_only_changes_rerun_nothing(tmp_path: Path, override: str) -> None:
    assert _fingerprints(tmp_path, override) == _fingerprints(tmp_path)


def test_a_temperature_change_reruns_every_stage(tmp_path: Path) -> None:
    before, after = _fingerprints(tmp_path), _fingerprints(tmp_path, "generate.temperatures=[0.3]")
    assert list(before) == ["generate", "filter", "train:a", "eval:a", "train:b", "eval:b", "report"]
    assert all(before[name] != after[name] for name in before)


def test_a_student_change_reruns_that_student_its_eval_and_the_report(tmp_path: Path) -> None:
    before, after = _fingerprints(tmp_path), _fingerprints(tmp_path, "students.1.lr=0.01")
    assert {name for name in before if before[name] != after[name]} == {"train:b", "eval:b", "report"}


def test_teacher_options_declare_what_is_runtime() -> None:
    from cotfactory.teachers.hf import HFOptions
    from cotfactory.teachers.openai_api import OpenAIOptions

    assert [n for n in OpenAIOptions.model_fields if is_runtime(OpenAIOptions, n)] == [
        "concurrency",
        "rpm",
        "tpm",
        "timeout",
        "max_attempts",
    ]
    assert [n for n in HFOptions.model_fields if is_runtime(HFOptions, n)] == ["batch_size", "device"]
