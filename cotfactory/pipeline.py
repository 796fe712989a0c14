"""``cotfactory run``: an experiment as one YAML file — generate → filter → train students → eval → report.

Each stage has a fingerprint: its own settings plus the fingerprint of the stage it reads from (and
the content of any input file). A stage whose fingerprint is recorded in RUN_DIR/pipeline.json is
skipped; a changed stage runs again, and so does everything after it, because their fingerprints
change with it. A killed run resumes: generate from its store, training from its last checkpoint.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from rich.console import Console

from cotfactory.config import GenerateConfig, read_config_file
from cotfactory.errors import ConfigError
from cotfactory.export import write_json_atomic
from cotfactory.filter_config import FilterConfig
from cotfactory.hashing import stable_hash
from cotfactory.store import remove_stale_temporaries
from cotfactory.students.config import TrainConfig

STATE_FILE = "pipeline.json"
UNTRAINED = "untrained"  # students/NAME/untrained/: the base model scored before training


class EvalSection(BaseModel):
    """Held-out problems every student is evaluated on."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(description="Held-out problems file.")
    format: str = Field("jsonl", description="Loader of the file.")
    limit: int | None = Field(None, ge=1, description="Evaluate the first N problems.")
    answer_type: str | None = Field(None, description="Generic jsonl/csv: answer type.")
    batch_size: int = Field(16, ge=1, description="Prompts generated together.")
    max_new_tokens: int = Field(256, ge=1, description="Tokens a student may write.")
    untrained: bool = Field(
        False,
        description="Also score each student's base model untrained (label-only format) on the same problems, "
        "into students/NAME/untrained/: the student's 'before'.",
    )
    explain: bool = Field(True, description="step-by-step: also write each rationale on request (explain:).")


class StudentSection(TrainConfig):
    """A student to train: every train-student key, plus a name; input and out are set by the pipeline."""

    name: str = Field(description="Folder name under RUN_DIR/students/.")
    input: str = Field("", description="(set by the pipeline: the run directory)")
    out: str = Field("", description="(set by the pipeline: RUN_DIR/students/NAME)")


class PipelineConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="The experiment's name.")
    description: str = Field("", description="What the experiment shows.")
    out: str = Field(description="Run directory.")
    generate: GenerateConfig = Field(description="`cotfactory generate` keys (out is the run directory).")
    filter: FilterConfig | None = Field(None, description="`cotfactory filter` keys (run_dir is set).")
    students: list[StudentSection] = Field([], description="Students to train from the filtered samples.")
    eval: EvalSection | None = Field(None, description="Held-out evaluation of every student.")
    report: bool = Field(True, description="Write RUN_DIR/report/report.html at the end.")


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


def load_pipeline(path: str | Path, overrides: list[str] | None = None, out: str | None = None) -> PipelineConfig:
    raw = read_config_file(path)
    raw = apply_overrides(raw, overrides or [])
    if out is not None:
        raw["out"] = out
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
    sections = {"generate": GenerateConfig, "filter": FilterConfig, "students": StudentSection, "eval": EvalSection}
    if not loc:
        return PipelineConfig
    return sections.get(str(loc[0]))


def _file_hash(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "missing"


@dataclass
class Stage:
    name: str
    fingerprint: str
    run: Callable[[], None]
    done: Callable[[], bool]


def plan_stages(config: PipelineConfig, console: Console) -> list[Stage]:
    run_dir = Path(config.out)
    gen = config.generate
    gen_print = stable_hash(
        [gen.model_dump(exclude={"concurrency", "rpm", "tpm", "timeout", "batch_size"}), _file_hash(gen.input)]
    )
    stages = [
        Stage("generate", gen_print, lambda: _generate(gen, console), lambda: (run_dir / "samples.jsonl").exists())
    ]
    upstream = gen_print
    if config.filter is not None:
        filt = config.filter
        upstream = stable_hash([filt.model_dump(), gen_print])
        stages.append(
            Stage("filter", upstream, lambda: _filter(filt, console), lambda: (run_dir / "filtered.jsonl").exists())
        )
    for student in config.students:
        train_print = stable_hash([student.model_dump(exclude={"resume"}), upstream])
        stages.append(
            Stage(
                f"train:{student.name}",
                train_print,
                _trainer(student, train_print, console),
                lambda s=student: (Path(s.out) / "student.json").exists(),
            )
        )
        if config.eval is not None:
            ev = config.eval
            eval_print = stable_hash([ev.model_dump(), train_print, _file_hash(ev.input)])
            stages.append(
                Stage(
                    f"eval:{student.name}",
                    eval_print,
                    _evaluator(student, ev, console),
                    lambda s=student, ev=ev: (
                        (Path(s.out) / "eval.json").exists()
                        and (not ev.untrained or (Path(s.out) / UNTRAINED / "eval.json").exists())
                    ),
                )
            )
    if config.report:
        report_print = stable_hash([s.fingerprint for s in stages])
        stages.append(
            Stage(
                "report",
                report_print,
                lambda: _report(run_dir, console),
                lambda: (run_dir / "report" / "report.html").exists(),
            )
        )
    return stages


def run_pipeline(config: PipelineConfig, console: Console | None = None) -> list[tuple[str, str]]:
    """Run the stages in order; returns (stage, 'skipped' | 'ran') for each."""
    console = console or Console(stderr=True)
    if config.students and config.filter is None:
        raise ConfigError("students need a filter section (they learn from RUN_DIR/filtered.jsonl)")
    stages = plan_stages(config, console)
    run_dir = Path(config.out)
    state_path = run_dir / STATE_FILE
    if run_dir.is_dir():
        remove_stale_temporaries(run_dir, [STATE_FILE])  # left by a run killed while noting a stage done
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    outcome = []
    for stage in stages:
        if state.get(stage.name) == stage.fingerprint and stage.done():
            console.print(f"[dim]{stage.name}: unchanged, skipped[/dim]")
            outcome.append((stage.name, "skipped"))
            continue
        console.rule(stage.name)
        stage.run()
        state[stage.name] = stage.fingerprint
        write_json_atomic(state_path, state)
        outcome.append((stage.name, "ran"))
    return outcome


def _generate(config: GenerateConfig, console: Console) -> None:
    from cotfactory.generate import print_summary, run_generate

    result = run_generate(config, console)
    print_summary(result, console)
    if result.exit_code == 3:
        raise ConfigError("generate stopped at the token budget; raise generate.max_total_tokens and run again")


def _filter(config: FilterConfig, console: Console) -> None:
    from cotfactory.filtering import print_funnel, run_filter

    print_funnel(run_filter(config, console), console)


def _trainer(student: StudentSection, fingerprint: str, console: Console) -> Callable[[], None]:
    def run() -> None:
        from cotfactory.students.train import run_train

        folder = Path(student.out)
        marker = folder / ".fingerprint"
        resume = marker.exists() and marker.read_text() == fingerprint and (folder / "checkpoints").exists()
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(fingerprint)
        config = TrainConfig.model_validate(student.model_dump(exclude={"name", "resume"}) | {"resume": resume})
        result = run_train(config, console)
        console.print(
            f"trained {student.name}: {result.examples} examples, {result.steps} steps, "
            f"final loss {result.final_loss:.4f}"
        )

    return run


def _evaluator(student: StudentSection, ev: EvalSection, console: Console) -> Callable[[], None]:
    def run() -> None:
        from cotfactory.students.evaluate import run_eval

        common = dict(limit=ev.limit, batch_size=ev.batch_size, max_new_tokens=ev.max_new_tokens)
        result = run_eval(student.out, ev.format, ev.input, answer_type=ev.answer_type, explain=ev.explain, **common)
        lines = result.lines(student.name)
        if ev.untrained:
            before = Path(student.out) / UNTRAINED / "predictions.jsonl"
            untrained = run_eval(
                student.student, ev.format, ev.input, out=str(before), answer_type=ev.answer_type, **common
            )
            lines += untrained.lines(student.name)
        for line in lines:
            console.print(line, highlight=False, soft_wrap=True)

    return run


def student_summaries(config: PipelineConfig) -> list[str]:
    """One line per evaluated student: held-out accuracy before (untrained) and after training, each
    with its 95 % interval — the choice-ranking accuracy where the problems are multiple choice."""
    from cotfactory.stats import format_accuracy

    lines = []
    for student in config.students:
        after = _read_eval(Path(student.out) / "eval.json")
        if after is None:
            continue
        key = "ranked_correct" if "ranked_correct" in after else "correct"
        how = ", choices ranked by log-likelihood" if key == "ranked_correct" else ""
        text = f"student {student.name} ({after['method']}{how}): "
        before = _read_eval(Path(student.out) / UNTRAINED / "eval.json")
        if before is not None and key in before:
            text += f"untrained {format_accuracy(before[key], before['total'])} → "
        lines.append(text + f"trained {format_accuracy(after[key], after['total'])}")
    return lines


def _read_eval(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _report(run_dir: Path, console: Console) -> None:
    from cotfactory.report import write_report

    console.print(f"report: {write_report(run_dir)}", soft_wrap=True)
