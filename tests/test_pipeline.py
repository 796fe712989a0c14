"""Pipelines: validated files, stages skipped when unchanged and redone (with what follows) when changed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import invoke, invoke_ok

from cotfactory.config.pipeline import load_pipeline
from cotfactory.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent
BUNDLED = sorted((ROOT / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", BUNDLED, ids=[p.stem for p in BUNDLED])
def test_every_bundled_pipeline_validates_and_documents_itself(path: Path) -> None:
    config = load_pipeline(path)
    assert config.name == path.stem and config.description
    assert path.read_text().startswith(f"# {path.stem} — ")
    for student in config.students:
        assert student.out == str(Path(config.out) / "students" / student.name)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "filter:\n  reward_threshhold: 1\n",
            "filter.reward_threshhold: unknown key (did you mean 'reward_threshold'?)",
        ),
        ("generate:\n  temperatur: [1]\n", "generate.temperatur: unknown key (did you mean 'temperatures'?)"),
        (
            "students:\n  - {name: s, method: label-only, student: x, lr: -1}\n",
            "students.0.lr: Input should be greater than 0",
        ),
        ("colour: red\n", "colour: unknown key"),
    ],
)
def test_mistyped_keys_fail_with_their_path(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "p.yaml"
    base = "name: p\nout: runs/p\n"
    if not body.startswith("generate"):
        base += "generate: {input: x.jsonl}\n"
    path.write_text(base + body)
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert str(info.value) == f"{path}: {message}"


def test_run_skips_unchanged_and_redoes_changed_stages(tmp_path: Path) -> None:
    pipeline = str(ROOT / "pipelines" / "cqa-palm-step-by-step.yaml")
    quick = [
        "--set",
        "students.0.max_steps=2",
        "--set",
        "students.1.max_steps=2",
        "--set",
        "eval.limit=3",
        "--set",
        "eval.max_new_tokens=4",
        "--out",
        str(tmp_path / "run"),
    ]
    output = invoke_ok("run", pipeline, *quick)
    state = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert list(state) == [
        "generate",
        "filter",
        "train:step-by-step",
        "eval:step-by-step",
        "train:label-only",
        "eval:label-only",
        "report",
    ]
    assert (tmp_path / "run" / "report" / "report.html").exists()
    accuracy = json.loads((tmp_path / "run" / "students" / "label-only" / "eval.json").read_text())
    assert accuracy["total"] == 3

    code, output = invoke("run", pipeline, *quick)
    assert code == 0 and "0 stage(s) ran, 7 unchanged" in output

    # a changed filter setting redoes the filter and everything after it, not generate
    code, output = invoke("run", pipeline, *quick, "--set", "filter.dedup=0.95")
    assert code == 0 and "generate: unchanged, skipped" in output and "6 stage(s) ran" in output

    # a changed student redoes only that student, its eval and the report
    code, output = invoke("run", pipeline, *quick, "--set", "filter.dedup=0.95", "--set", "students.1.lr=0.002")
    assert code == 0 and "3 stage(s) ran, 4 unchanged" in output


def test_bad_pipeline_is_exit_2(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("name: p\nout: r\ngenerate: {input: x}\nfilter: {consistency: 2}\n")
    code, output = invoke("run", str(path))
    assert code == 2 and "filter.consistency" in output and not (tmp_path / "r").exists()
    code, output = invoke("run", str(ROOT / "pipelines" / "quickstart.yaml"), "--set", "nonsense")
    assert code == 2 and "expected key.path=value" in output
