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
from cotfactory.run_dir import RunDir, StudentDir, write_json_atomic, write_jsonl_atomic


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
        pool_teacher = _pool_teacher_stage(config, console)
        stages.append(pool_teacher)
        for number in range(1, config.rounds.count + 1):
            round_stages = _round_stages(config, number, previous, pool_teacher.fingerprint, console)
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
            console.print(f"[dim]{stage.name}: unchanged, skipped[/dim]", emoji=False)  # round1:train: is no 🚋
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
    from cotfactory.ray_launch import distributed, run_ray_generate

    result = (run_ray_generate if distributed(config) else run_generate)(config, console)
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


#: settings of a run whose problems have no gold: the fixed grid (until-correct and rationalization need gold)
GOLD_LESS = dict(until_agree=None, until_correct=None, max_samples=None, rationalize_failures=None)


def _pool_teacher_stage(config: PipelineConfig, console: Console) -> Stage:
    """The teacher's samples of the pool problems without gold (the pipeline's generate settings, on the
    fixed grid), once for every round; their majority answers are what a probe compares the student's with."""
    from cotfactory import rounds

    assert config.rounds is not None
    settings, out = config.rounds, config.out
    if config.generate.contrastive and any(p.gold is None for p in _pool(config)):  # before any stage runs
        raise ConfigError(
            f"rounds.pool {settings.pool}: problems without gold are compared with the teacher's majority, which "
            "contrastive decoding cannot sample (it needs gold); give every pool problem its answer or sample "
            "with plain templates"
        )
    gen = _round_generate(
        config, 0, input=str(rounds.pool_teacher_input(out)), out=str(rounds.pool_teacher_dir(out)),
        seeds=config.generate.seeds, **GOLD_LESS,
    )  # fmt: skip
    pool = {k: output_settings(settings)[k] for k in ("pool", "format", "answer_type", "limit")}
    fingerprint = stable_hash([pool, _file_hash(settings.pool), output_settings(gen)])

    def run() -> None:
        problems = _pool(config)
        count = rounds.write_pool_without_gold(out, problems)
        if count:
            _generate(gen, console)
        answered = rounds.write_teacher_answers(out, _answer_patterns(gen))
        console.print(
            f"rounds: {count} of {len(problems)} pool problems have no gold; the teacher's majority answers "
            f"{sum(a['answer'] is not None for a in answered)} of them",
            highlight=False,
        )

    return Stage("rounds:pool_teacher", fingerprint, run, rounds.teacher_answers_path(out).exists)


def _pool(config: PipelineConfig) -> list[Any]:
    """The pool's problems the probe answers."""
    from cotfactory.problems import load_problems

    assert config.rounds is not None
    settings = config.rounds
    return load_problems(settings.format, settings.pool, limit=settings.limit, answer_type=settings.answer_type)


def _answer_patterns(gen: GenerateConfig) -> dict[str, str | None]:
    """Template name → its answer pattern, to read samples' answers as the filter reads them."""
    from cotfactory.prompts import load_template

    extra_dirs = [Path(d) for d in gen.prompts_dir]
    return {t.name: t.spec.answer_pattern for t in (load_template(n, extra_dirs) for n in gen.templates)}


def _pseudo_label_filter(config: PipelineConfig, run_dir: str, drawn: int) -> FilterConfig:
    """The pipeline's filter for a run of problems without gold: self-consistency added, its threshold
    raised to more than half of the ``drawn`` samples, so the majority is each problem's pseudo-label,
    the label the correct filter checks samples against."""
    from cotfactory.new_problems import agreement_needed

    assert config.filter is not None
    chain = config.filter.chain if "consistency" in config.filter.chain else [*config.filter.chain, "consistency"]
    threshold = max(config.filter.consistency or 0.0, agreement_needed(drawn) / drawn)
    return config.filter.model_copy(update={"run_dir": run_dir, "chain": chain, "consistency": threshold})


def _round_stages(
    config: PipelineConfig, number: int, previous: str, pool_teacher: str, console: Console
) -> list[Stage]:
    """Round ``number``'s probe, generate, filter, [write, solve, agree,] train and eval stages (``previous``:
    the fingerprint of the student it probes, ``pool_teacher`` that of the teacher's pool answers; the
    bracketed three with ``problem_template``)."""
    from cotfactory import rounds

    assert config.rounds is not None and config.filter is not None and config.eval is not None
    settings, out = config.rounds, config.out
    here = RunDir(rounds.round_dir(out, number))
    prober = StudentDir(config.students[0].out) if number == 1 else StudentDir(rounds.student_dir(out, number - 1))
    # not the probe's: the template (the write stage's), nor how many rounds follow (raising it keeps these)
    probing = {k: v for k, v in output_settings(settings).items() if k not in {"problem_template", "count"}}
    probe_print = stable_hash(
        [probing, output_settings(config.eval), previous, _file_hash(settings.pool), pool_teacher]
    )
    gen = _round_generate(config, number, input=str(rounds.wrong_input_path(out, number)))
    disagree = RunDir(rounds.disagree_dir(out, number))
    gen_disagree = _round_generate(
        config, number, input=str(rounds.disagree_input_path(out, number)), out=str(disagree.path), **GOLD_LESS
    )
    gen_print = stable_hash([output_settings(gen), output_settings(gen_disagree), probe_print])
    filt = config.filter.model_copy(update={"run_dir": str(here.path)})
    filt_disagree = _pseudo_label_filter(config, str(disagree.path), gen_disagree.grid_size)
    filter_print = stable_hash([output_settings(filt), output_settings(filt_disagree), gen_print])
    new_stages = _new_problem_stages(config, number, probe_print, console) if settings.problem_template else []
    first = config.students[0]
    student = first.model_copy(
        update={"input": str(rounds.union_path(out, number)), "out": str(rounds.student_dir(out, number))}
    )
    train_print = stable_hash([output_settings(student), filter_print, number, *[s.fingerprint for s in new_stages]])
    ev = config.eval.model_copy(update={"untrained": False})
    eval_print = stable_hash([output_settings(ev), train_print, _file_hash(ev.input)])
    folder = StudentDir(student.out)
    wrong, disagreeing = rounds.wrong_input_path(out, number), rounds.disagree_input_path(out, number)

    def probe() -> None:
        from cotfactory.students.evaluate import run_eval

        run_eval(
            str(prober.path), settings.format, settings.pool, limit=settings.limit, batch_size=ev.batch_size,
            max_new_tokens=ev.max_new_tokens, out=str(rounds.probe_path(out, number)),
            answer_type=settings.answer_type, explain=False,
        )  # fmt: skip
        hard = rounds.write_hard_problems(out, number)
        if number == 1:
            write_json_atomic(rounds.first_student_record(out), {"student": str(prober.path)})
        console.print(rounds.probe_line(hard), highlight=False)

    def generate() -> None:
        if rounds.has_rows(wrong):
            _generate(gen, console)
        if rounds.has_rows(disagreeing):
            _generate(gen_disagree, console)

    def filter_round() -> None:
        if rounds.has_rows(wrong):
            _filter(filt, console)
        if rounds.has_rows(disagreeing):
            _filter(filt_disagree, console)

    def generated() -> bool:
        return (not rounds.has_rows(wrong) or here.samples.exists()) and (
            not rounds.has_rows(disagreeing) or disagree.samples.exists()
        )

    def filtered() -> bool:
        return (not rounds.has_rows(wrong) or here.filtered.exists()) and (
            not rounds.has_rows(disagreeing) or disagree.filtered.exists()
        )

    def train() -> None:
        count = rounds.write_union(out, number)
        console.print(f"round {number}: training on {count} records (round 0 and the rounds' problems so far)")
        _trainer(student, train_print, console)()

    return [
        Stage(f"round{number}:probe", probe_print, probe, rounds.hard_summary_path(out, number).exists),
        Stage(f"round{number}:generate", gen_print, generate, generated),
        Stage(f"round{number}:filter", filter_print, filter_round, filtered),
        *new_stages,
        Stage(f"round{number}:train", train_print, train, folder.is_student),
        Stage(f"round{number}:eval", eval_print, _evaluator(student, ev, console), folder.evaluation.exists),
    ]


def _new_problem_stages(config: PipelineConfig, number: int, probe_print: str, console: Console) -> list[Stage]:
    """Round ``number``'s new problems (``rounds.problem_template``, see ``cotfactory.new_problems``): the
    teacher writes one like each hard problem (write), samples them (solve), and those whose samples agree
    are kept with their majority as pseudo-gold, their samples filtered into training records (agree)."""
    from cotfactory import new_problems, rounds
    from cotfactory.prompts import load_template

    assert config.rounds is not None and config.rounds.problem_template is not None and config.filter is not None
    out, gen = config.out, config.generate
    extra_dirs = [Path(d) for d in gen.prompts_dir]
    template = load_template(config.rounds.problem_template, extra_dirs)  # a bad one fails before any stage runs
    write = _round_generate(
        config, number, input=str(new_problems.origins_path(out, number)), out=str(new_problems.write_run(out, number)),
        templates=[config.rounds.problem_template],
        temperatures=gen.temperatures[:1], seeds=[number], samples_per_setting=1, logprobs=0, **GOLD_LESS,
    )  # fmt: skip
    write_print = stable_hash([output_settings(write), template.hash, probe_print])
    questions = new_problems.questions_path(out, number)
    solve = _round_generate(
        config, number, input=str(questions), out=str(new_problems.solve_run(out, number)), **GOLD_LESS
    )
    solve_print = stable_hash([output_settings(solve), write_print])
    drawn = solve.grid_size
    filt = _pseudo_label_filter(config, solve.out, drawn)  # the majority is the label the correct filter checks
    agree_print = stable_hash([output_settings(filt), solve_print])
    hard = rounds.hard_problems_path(out, number)
    summary = new_problems.summary_path(out, number)

    def write_stage() -> None:
        if not rounds.has_rows(hard):
            write_jsonl_atomic(questions, [])
            write_jsonl_atomic(new_problems.unwritten_path(out, number), [])
            return
        new_problems.write_origins(out, number)
        _generate(write, console)
        counts = new_problems.write_questions(out, number)
        dropped = ", ".join(f"{n} {reason}" for reason, n in counts.items() if reason not in {"asked", "written"})
        console.print(
            f"round {number}: the teacher wrote {counts['written']} new questions for {counts['asked']} hard "
            f"problems{f' (dropped: {dropped})' if dropped else ''}",
            highlight=False,
        )

    def solve_stage() -> None:
        if rounds.has_rows(questions):
            _generate(solve, console)

    def agree_stage() -> None:
        if rounds.has_rows(questions):
            _filter(filt, console)
        result = new_problems.agree(out, number, drawn, _answer_patterns(solve))
        console.print(new_problems.summary_line(result), highlight=False)

    return [
        Stage(f"round{number}:write", write_print, write_stage, questions.exists),
        Stage(
            f"round{number}:solve",
            solve_print,
            solve_stage,
            lambda: not rounds.has_rows(questions) or RunDir(solve.out).samples.exists(),
        ),
        Stage(f"round{number}:agree", agree_print, agree_stage, summary.exists),
    ]


def _round_generate(config: PipelineConfig, number: int, **changes: Any) -> GenerateConfig:
    """The pipeline's generate settings, on the round's hard problems, with the round's ``samples`` seeds
    ((r−1)·samples + 1 … r·samples: a problem failed again in a later round gets new samples, not the same
    requests again); ``changes`` replace any of them."""
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
        "ray": None,  # a round's few hard problems run here, not as the main run's shards
        "shards": None,
        "shards_dir": None,
        "seeds": list(range((number - 1) * settings.samples + 1, number * settings.samples + 1)),
        "out": str(rounds.round_dir(config.out, number)),
    }
    return GenerateConfig.model_validate(data | changes)


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
