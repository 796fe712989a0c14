"""``cotfactory run``: an experiment as one YAML file — generate → filter → train students → eval → report.

Each stage has a fingerprint: the settings that can change its output (every config field not
declared ``RUNTIME``, see ``cotfactory.config.fields``) plus the fingerprint of the stage it reads
from (and the content of any input file). A stage whose fingerprint is recorded in
RUN_DIR/pipeline.json is skipped; a changed stage runs again, and so does everything after it,
because their fingerprints change with it. A runtime-only change (retries, concurrency, batch sizes,
logging) reruns nothing. A killed run resumes: generate from its store, training from its last
checkpoint.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rich.console import Console

from cotfactory.config.fields import output_settings
from cotfactory.config.filter import FilterConfig
from cotfactory.config.generate import GenerateConfig
from cotfactory.config.pipeline import EvalSection, PipelineConfig, StudentSection
from cotfactory.config.train import TrainConfig
from cotfactory.console import make_console, section
from cotfactory.errors import ConfigError
from cotfactory.hashing import stable_hash
from cotfactory.run_dir import RunDir, StudentDir, write_json_atomic


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
    run_dir = RunDir(config.out)
    gen = config.generate
    gen_print = stable_hash([output_settings(gen), _file_hash(gen.input)])
    stages = [Stage("generate", gen_print, lambda: _generate(gen, console), run_dir.samples.exists)]
    upstream = gen_print
    if config.filter is not None:
        filt = config.filter
        upstream = stable_hash([output_settings(filt), gen_print])
        stages.append(Stage("filter", upstream, lambda: _filter(filt, console), run_dir.filtered.exists))
    for student in config.students:
        folder = StudentDir(student.out)
        train_print = stable_hash([output_settings(student), upstream])
        stages.append(
            Stage(f"train:{student.name}", train_print, _trainer(student, train_print, console), folder.is_student)
        )
        if config.eval is not None:
            ev = config.eval
            eval_print = stable_hash([output_settings(ev), train_print, _file_hash(ev.input)])
            stages.append(
                Stage(
                    f"eval:{student.name}",
                    eval_print,
                    _evaluator(student, ev, console),
                    lambda folder=folder, ev=ev: (
                        folder.evaluation.exists() and (not ev.untrained or folder.untrained.evaluation.exists())
                    ),
                )
            )
    if config.rounds is not None and config.students:
        first = config.students[0]
        previous = stable_hash([output_settings(first), upstream])
        for number in range(1, config.rounds.count + 1):
            round_stages = _round_stages(config, number, previous, console)
            stages += round_stages
            previous = round_stages[-2].fingerprint  # the round's student
    if config.report:
        report_print = stable_hash([s.fingerprint for s in stages])
        stages.append(Stage("report", report_print, lambda: _report(run_dir, console), run_dir.report_html.exists))
    return stages


def run_pipeline(config: PipelineConfig, console: Console | None = None) -> list[tuple[str, str]]:
    """Run the stages in order; returns (stage, 'skipped' | 'ran') for each."""
    console = console or make_console(stderr=True)
    if config.students and config.filter is None:
        raise ConfigError("students need a filter section (they learn from RUN_DIR/filtered.jsonl)")
    stages = plan_stages(config, console)
    run_dir = RunDir(config.out)
    if run_dir.path.is_dir():
        run_dir.remove_stale_temporaries([run_dir.pipeline_state])  # left by a run killed while noting a stage done
    state = json.loads(run_dir.pipeline_state.read_text()) if run_dir.pipeline_state.exists() else {}
    outcome = []
    for stage in stages:
        if state.get(stage.name) == stage.fingerprint and stage.done():
            console.print(f"[dim]{stage.name}: unchanged, skipped[/dim]")
            outcome.append((stage.name, "skipped"))
            continue
        section(console, stage.name)
        stage.run()
        state[stage.name] = stage.fingerprint
        write_json_atomic(run_dir.pipeline_state, state)
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

        folder = StudentDir(student.out)
        marker = folder.fingerprint
        resume = marker.exists() and marker.read_text() == fingerprint and folder.checkpoints.exists()
        folder.path.mkdir(parents=True, exist_ok=True)
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
            before = StudentDir(student.out).untrained.predictions
            untrained = run_eval(
                student.student, ev.format, ev.input, out=str(before), answer_type=ev.answer_type, **common
            )
            lines += untrained.lines(student.name)
        for line in lines:
            console.print(line, highlight=False, soft_wrap=True)

    return run


def _round_stages(config: PipelineConfig, number: int, previous: str, console: Console) -> list[Stage]:
    """Round ``number``'s probe, generate, filter, train and eval stages (``previous``: the fingerprint of
    the student it probes)."""
    from cotfactory import rounds

    assert config.rounds is not None and config.filter is not None and config.eval is not None
    settings, out = config.rounds, config.out
    here = RunDir(rounds.round_dir(out, number))
    prober = StudentDir(config.students[0].out) if number == 1 else StudentDir(rounds.student_dir(out, number - 1))
    probe_print = stable_hash(
        [output_settings(settings), output_settings(config.eval), previous, _file_hash(settings.pool)]
    )
    gen = _round_generate(config, number)
    gen_print = stable_hash([output_settings(gen), probe_print])
    filt = config.filter.model_copy(update={"run_dir": str(here.path)})
    filter_print = stable_hash([output_settings(filt), gen_print])
    first = config.students[0]
    student = first.model_copy(
        update={"input": str(rounds.union_path(out, number)), "out": str(rounds.student_dir(out, number))}
    )
    train_print = stable_hash([output_settings(student), filter_print, number])
    ev = config.eval.model_copy(update={"untrained": False})
    eval_print = stable_hash([output_settings(ev), train_print, _file_hash(ev.input)])
    folder = StudentDir(student.out)

    def probe() -> None:
        from cotfactory.students.evaluate import run_eval

        result = run_eval(
            str(prober.path), settings.format, settings.pool, limit=settings.limit, batch_size=ev.batch_size,
            max_new_tokens=ev.max_new_tokens, out=str(rounds.probe_path(out, number)),
            answer_type=settings.answer_type, explain=False,
        )  # fmt: skip
        hard = rounds.write_hard_problems(out, number)
        if number == 1:
            write_json_atomic(rounds.first_student_record(out), {"student": str(prober.path)})
        console.print(f"round {number}: the student failed {hard} of {result.total} pool problems", highlight=False)

    def has_hard() -> bool:
        path = rounds.hard_problems_path(out, number)
        return path.exists() and path.stat().st_size > 0

    def generate() -> None:
        if has_hard():
            _generate(gen, console)

    def filter_round() -> None:
        if has_hard():
            _filter(filt, console)

    def train() -> None:
        count = rounds.write_union(out, number)
        console.print(f"round {number}: training on {count} records (round 0 and the hard problems so far)")
        _trainer(student, train_print, console)()

    return [
        Stage(f"round{number}:probe", probe_print, probe, rounds.probe_path(out, number).exists),
        Stage(f"round{number}:generate", gen_print, generate, lambda: not has_hard() or here.samples.exists()),
        Stage(f"round{number}:filter", filter_print, filter_round, lambda: not has_hard() or here.filtered.exists()),
        Stage(f"round{number}:train", train_print, train, folder.is_student),
        Stage(f"round{number}:eval", eval_print, _evaluator(student, ev, console), folder.evaluation.exists),
    ]


def _round_generate(config: PipelineConfig, number: int) -> GenerateConfig:
    """The pipeline's generate settings, on the round's hard problems, with ``samples`` seeds."""
    from cotfactory import rounds
    from cotfactory.problems import load_problems

    assert config.rounds is not None
    settings = config.rounds
    answer_type = settings.answer_type
    if answer_type is None:  # a named format knows its own: read it from the pool's first problem
        answer_type = load_problems(settings.format, settings.pool, limit=1, answer_type=None)[0].answer_type
    data = config.generate.model_dump() | {
        "input": str(rounds.hard_problems_path(config.out, number)),
        "format": "jsonl",
        "question_field": "question",
        "answer_field": "answer",
        "id_field": "id",
        "answer_type": answer_type,
        "limit": None,
        "shard": None,
        "seeds": list(range(1, settings.samples + 1)),
        "out": str(rounds.round_dir(config.out, number)),
    }
    return GenerateConfig.model_validate(data)


def student_summaries(config: PipelineConfig) -> list[str]:
    """One line per evaluated student: held-out accuracy before (untrained) and after training, each
    with its 95 % interval — the choice-ranking accuracy where the problems are multiple choice."""
    from cotfactory.stats import format_accuracy

    lines = []
    for student in config.students:
        after = _read_eval(StudentDir(student.out).evaluation)
        if after is None:
            continue
        key = "ranked_correct" if "ranked_correct" in after else "correct"
        how = ", choices ranked by log-likelihood" if key == "ranked_correct" else ""
        text = f"student {student.name} ({after['method']}{how}): "
        before = _read_eval(StudentDir(student.out).untrained.evaluation)
        if before is not None and key in before:
            text += f"untrained {format_accuracy(before[key], before['total'])} → "
        lines.append(text + f"trained {format_accuracy(after[key], after['total'])}")
    return lines


def _read_eval(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def _report(run_dir: RunDir, console: Console) -> None:
    from cotfactory.report import write_report

    console.print(f"report: {write_report(run_dir.path)}", soft_wrap=True)
