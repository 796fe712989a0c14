"""A pipeline file: one experiment as YAML — generate → filter → students → eval → report.

``load_pipeline`` reads it, applies ``--set key.path=value`` overrides and fills the keys the
pipeline owns (each stage's output folder) before validation, so errors name the file and the key.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from cotfactory.config.eval import EvalSettings
from cotfactory.config.files import read_config_file
from cotfactory.config.filter import FilterConfig
from cotfactory.config.generate import GenerateConfig
from cotfactory.config.train import TrainConfig
from cotfactory.errors import ConfigError


class EvalSection(EvalSettings):
    """Held-out problems every student is evaluated on."""

    untrained: bool = Field(
        False,
        description="Also score each student's base model untrained (label-only format) on the same problems, "
        "into students/NAME/untrained/: the student's 'before'.",
    )


class StudentSection(TrainConfig):
    """A student to train: every train-student key, plus a name; input and out are set by the pipeline."""

    name: str = Field(description="Folder name under RUN_DIR/students/.")
    input: str = Field("", description="(set by the pipeline: the run directory)")
    out: str = Field("", description="(set by the pipeline: RUN_DIR/students/NAME)")


class RoundsSection(BaseModel):
    """Hard-problem rounds (Lion): probe the last student on a training-side pool, sample the teacher on
    the problems it fails, retrain on the union, evaluate — ``count`` times (see ``cotfactory.rounds``)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(1, ge=1, description="Rounds after the first student.")
    pool: str = Field(description="Training-side problems the student is probed on (never the eval split).")
    format: str = Field("jsonl", description="Loader of the pool.")
    answer_type: str | None = Field(None, description="Generic jsonl/csv pool: answer type.")
    limit: int | None = Field(None, ge=1, description="Probe the first N problems of the pool.")
    samples: int = Field(
        4, ge=1, description="Teacher samples of each problem the student failed (round r: seeds (r−1)·N + 1 … r·N)."
    )
    problem_template: str | None = Field(
        None,
        description="Template (e.g. new-problem) asking the teacher for one new question like each failed problem; "
        "the teacher samples it like them and it is kept, its majority answer as pseudo-gold, when more than half "
        "of those samples agree.",
    )

    @model_validator(mode="after")
    def _agreement_possible(self) -> RoundsSection:
        if self.problem_template is not None and self.samples < 2:
            raise ValueError(
                "problem_template needs samples >= 2: a new question is kept when more than half of its samples agree"
            )
        return self


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The experiment's name.")
    description: str = Field("", description="What the experiment shows.")
    out: str = Field(description="Run directory.")
    generate: GenerateConfig = Field(description="`cotfactory generate` keys (out is the run directory).")
    filter: FilterConfig | None = Field(None, description="`cotfactory filter` keys (run_dir is set).")
    students: list[StudentSection] = Field([], description="Students to train from the filtered samples.")
    eval: EvalSection | None = Field(None, description="Held-out evaluation of every student.")
    rounds: RoundsSection | None = Field(None, description="Hard-problem rounds after the first student.")
    report: bool = Field(True, description="Write RUN_DIR/report/report.html at the end.")

    @model_validator(mode="after")
    def _rounds_need(self) -> PipelineConfig:
        if self.rounds is None:
            return self
        if not self.students or self.filter is None or self.eval is None:
            raise ValueError("rounds need a student, a filter and an eval section (each round retrains and evaluates)")
        if Path(self.rounds.pool).resolve() == Path(self.eval.input).resolve():
            raise ValueError("rounds.pool is the eval input: probe a training-side pool, never the test split")
        if self.rounds.problem_template is not None and self.generate.contrastive:
            raise ValueError(
                "rounds.problem_template: new questions have no gold answer, which contrastive decoding needs; "
                "sample with plain templates"
            )
        return self


def _inject(raw: dict[str, Any]) -> dict[str, Any]:
    """Fill the keys the pipeline owns (output folders) before validation."""
    raw = copy.deepcopy(raw)
    out = raw.get("out")
    if isinstance(raw.get("generate"), dict):
        raw["generate"].setdefault("out", out)
    if isinstance(raw.get("filter"), dict):
        raw["filter"].setdefault("run_dir", out)
    for student in raw.get("students") or []:
        if isinstance(student, dict) and out is not None:
            student.setdefault("input", out)
            student.setdefault("out", str(Path(out) / "students" / str(student.get("name", "student"))))
    return raw


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """``--set generate.limit=4`` / ``students.0.lr=1e-3``: values are read as YAML scalars."""
    raw = copy.deepcopy(raw)
    for item in overrides:
        path, sep, value = item.partition("=")
        if not sep or not path:
            raise ConfigError(f"--set {item!r}: expected key.path=value")
        node: Any = raw
        parts = path.split(".")
        for part in parts[:-1]:
            _check_step(node, part, item)
            node = node[int(part)] if isinstance(node, list) else node.setdefault(part, {})
        last = parts[-1]
        _check_step(node, last, item)
        node[int(last) if isinstance(node, list) else last] = yaml.safe_load(value)
    return raw


def _check_step(node: Any, part: str, item: str) -> None:
    """``part`` must name a key of a section or an existing index of a list."""
    if isinstance(node, list) and part.isdigit() and int(part) < len(node):
        return
    if isinstance(node, dict):
        return
    raise ConfigError(f"--set {item!r}: '{part}' is not a key or index of that section")


def read_rounds_flag(value: str) -> int:
    """``--rounds N``: a whole number, 1 or more."""
    try:
        count = int(value)
    except ValueError:
        raise ConfigError(f"--rounds {value!r}: expected a whole number of rounds, 1 or more") from None
    if count < 1:
        raise ConfigError(f"--rounds {count}: must be 1 or more (leave out the rounds: section to run none)")
    return count


def load_pipeline(
    path: str | Path, overrides: list[str] | None = None, out: str | None = None, rounds: int | None = None
) -> PipelineConfig:
    """The pipeline file with ``--set`` overrides, then ``--out`` and ``--rounds`` (``rounds.count``: the
    flag wins over the file and over ``--set``), validated."""
    raw = read_config_file(path)
    raw = apply_overrides(raw, overrides or [])
    if out is not None:
        raw["out"] = out
    if rounds is not None:
        if not isinstance(raw.get("rounds"), dict):
            raise ConfigError(
                f"--rounds {rounds}: {path} has no rounds: section; add one naming the pool to probe (rounds.pool)"
            )
        raw["rounds"]["count"] = rounds
    try:
        return PipelineConfig.model_validate(_inject(raw))
    except ValidationError as exc:
        raise ConfigError(_describe(exc, str(path))) from None


def _describe(exc: ValidationError, source: str) -> str:
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains the rest
    where = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        model = _model_at(err["loc"][:-1])
        close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1) if model else []
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: {where}: unknown key{hint}"
    if err["type"] == "missing":
        return f"{source}: {where}: required"
    return f"{source}: {where}: {err['msg'].removeprefix('Value error, ')}"


def _model_at(loc: tuple) -> type[BaseModel] | None:
    sections = {
        "generate": GenerateConfig,
        "filter": FilterConfig,
        "students": StudentSection,
        "eval": EvalSection,
        "rounds": RoundsSection,
    }
    if not loc:
        return PipelineConfig
    return sections.get(str(loc[0]))
