"""Reading a run directory into ``ReportData``: the samples and the store (required), the funnel, the kept
samples and the students (each shown when present), and the students' lineage (``cotfactory.lineage``).

Every file is named by ``RunDir`` / ``StudentDir``; the files are read before the store is opened, so a
bad one fails first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import Any, TypeVar

from cotfactory import lineage, rounds
from cotfactory.answers import answers_match
from cotfactory.errors import DataError
from cotfactory.records import Problem, Verdict
from cotfactory.report.data import (
    RANKINGS,
    Evaluation,
    Example,
    Examples,
    FailureReport,
    Funnel,
    FunnelStage,
    LossCurve,
    NeighbourReport,
    ReportData,
    RoundResult,
    SampleExcerpt,
    Score,
    Scores,
    StudentErrorsReport,
    StudentReport,
    Summary,
    TeacherBudget,
    TemperatureYield,
)
from cotfactory.run_dir import RunDir, StudentDir, read_jsonl
from cotfactory.stats import wilson_interval
from cotfactory.store import Store

EXAMPLES_PER_KIND = 3
EXAMPLE_CHARS = 600

_Item = TypeVar("_Item")


def read_report_data(run: RunDir) -> ReportData:
    """Every number the report shows, read from the run directory (without plots: none is drawn yet)."""
    rows = _read_samples(run)
    funnel = _read_funnel(run)  # the files first: a bad one fails before the store is opened
    filtered = _read_optional_jsonl(run.filtered)
    students = [_read_student(student) for student in run.students()]
    with Store.in_run(run.path) as store:
        problems = store.problems()
        verdicts = store.verdicts()
    return ReportData(
        run=run.path.resolve().name,
        summary=_summary(rows, funnel, filtered, students),
        funnel=funnel,
        agreement=_agreements(rows, verdicts),
        scores=_scores(run, verdicts, filtered, funnel),
        yield_by_temperature=_yield_by_temperature(rows, problems),
        students=students,
        examples=_examples(rows, verdicts),
        errors=_errors(run, rows, verdicts),
        budget=_teacher_budget(run, rows, problems),
        rounds=_rounds(run),
    )


def _teacher_budget(run: RunDir, rows: list[dict[str, Any]], problems: dict[str, Problem]) -> TeacherBudget | None:
    """Adaptive sampling's spend against the fixed grid at its cap, and the rationalizations; None when
    the run used neither."""
    config = _read_optional_json(run.config) or {}
    k = config.get("until_correct") or config.get("until_agree")
    rationalized = [row for row in rows if row.get("mode") == "rationalized"]
    if not k and not rationalized:
        return None
    sampled = [row for row in rows if row.get("mode") != "rationalized"]
    tokens = sum(row["prompt_tokens"] + row["completion_tokens"] for row in sampled)
    grid = len(config["templates"]) * len(config["temperatures"]) * len(config["seeds"]) * config["samples_per_setting"]
    cap = config.get("max_samples") or grid
    grid_samples = cap * len({row["problem_id"] for row in sampled})
    rule = None
    if k:
        rule = f"until-{'correct' if config.get('until_correct') else 'agree'} {k}, at most {cap} a problem"
    rescued = sum(
        1
        for row in rationalized
        if (problem := _problem_of(row, problems)) and answers_match(row["answer"], problem.gold, problem)
    )
    per_sample = tokens / len(sampled) if sampled else 0.0
    return TeacherBudget(
        rule, len(sampled), grid_samples, tokens, round(per_sample * grid_samples), len(rationalized), rescued
    )


def _rounds(run: RunDir) -> list[RoundResult]:
    return [
        RoundResult(
            record["round"],
            record["hard_problems"],
            _evaluation(record),
            wrong=record.get("wrong", record["hard_problems"]),
            disagree=record.get("disagree", 0),
            new_problems=record.get("new_problems"),
            records=record.get("records"),
        )
        for record in rounds.round_accuracies(run.path)
    ]


# --- the run's files --------------------------------------------------------------------------------------


def _read_samples(run: RunDir) -> list[dict[str, Any]]:
    if not run.has_store():
        raise DataError(f"{run.path}: not a run directory (no {run.store.name}); make one with `cotfactory generate`")
    if not run.samples.exists():
        raise DataError(f"{run.samples}: missing; run `cotfactory generate` on this run directory to finish it")
    return list(read_jsonl(run.samples))


def _read_optional_jsonl(path: Path) -> list[dict[str, Any]] | None:
    return list(read_jsonl(path)) if path.exists() else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _read_optional_json(path: Path) -> Any:
    return _read_json(path) if path.exists() else None


def _read_funnel(run: RunDir) -> Funnel | None:
    funnel = _read_optional_json(run.funnel)
    if funnel is None:
        return None
    stages = [
        FunnelStage(
            stage=stage["stage"],
            samples_in=stage["samples_in"],
            samples_out=stage["samples_out"],
            problems_out=stage["problems_out"],
            dropped=stage["dropped"],
        )
        for stage in funnel["stages"]
    ]
    return Funnel(reward=(funnel.get("config") or {}).get("reward"), stages=stages)


# --- the teacher's samples --------------------------------------------------------------------------------


def _summary(
    rows: list[dict[str, Any]],
    funnel: Funnel | None,
    filtered: list[dict[str, Any]] | None,
    students: list[StudentReport],
) -> Summary:
    kept = funnel.stages[-1].samples_out if funnel else (len(filtered) if filtered is not None else None)
    return Summary(
        samples=len(rows),
        problems=len({row["problem_id"] for row in rows}),
        failed=sum(row.get("error") is not None for row in rows),
        kept=kept,
        students=len(students),
        accuracy={s.name: s.eval.accuracy for s in students if s.eval},
    )


def _agreements(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> list[float]:
    """One consistency agreement ratio per problem, in plan order (every verdict of a problem holds it)."""
    problem_of = {row["key"]: row["problem_id"] for row in rows}
    by_problem: dict[str, float] = {}
    for verdict in verdicts:
        agreement = verdict.details.get("agreement")
        if verdict.filter == "consistency" and agreement is not None and verdict.sample_key in problem_of:
            by_problem[problem_of[verdict.sample_key]] = float(agreement)
    order = dict.fromkeys(row["problem_id"] for row in rows)
    return [by_problem[p] for p in order if p in by_problem]


def _scores(
    run: RunDir, verdicts: list[Verdict], filtered: list[dict[str, Any]] | None, funnel: Funnel | None
) -> Scores | None:
    """Reward (or answer-gain) scores: the reward filter's verdicts, kept and dropped; else the kept rows'."""
    values = [v.score for v in verdicts if v.filter == "reward" and v.score is not None]
    source = "reward verdicts (kept and dropped)"
    if not values and filtered:
        values = [row["reward"] for row in filtered if row.get("reward") is not None]
        source = f"{run.filtered.name} (kept samples)"
    if not values:
        return None
    return Scores(scorer=funnel.reward if funnel else None, source=source, values=values)


def _problem_of(row: dict[str, Any], problems: dict[str, Problem]) -> Problem | None:
    """The store's Problem; a sample line's own copy when the store lacks it."""
    if row["problem_id"] in problems:
        return problems[row["problem_id"]]
    try:
        return Problem(
            id=row["problem_id"],
            question=row.get("question") or "?",
            gold=row.get("gold"),
            answer_type=row.get("answer_type") or "text",
            choices=row.get("choices"),
        )
    except ValueError:
        return None


def _yield_by_temperature(rows: list[dict[str, Any]], problems: dict[str, Problem]) -> list[TemperatureYield]:
    """Per temperature: samples of problems with a gold answer, how many match it, and the fraction.

    Counterfactual rationales argue for a wrong answer on purpose and are left out; failed samples count
    as incorrect.
    """
    tally: dict[float, list[int]] = {}
    for row in rows:
        problem = _problem_of(row, problems)
        if row.get("mode") == "counterfactual" or problem is None or problem.gold is None:
            continue
        counts = tally.setdefault(float(row["temperature"]), [0, 0])
        counts[0] += 1
        counts[1] += answers_match(row.get("answer"), problem.gold, problem)
    return [TemperatureYield(t, n, c, c / n) for t, (n, c) in sorted(tally.items())]


def _examples(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> Examples:
    """Up to 3 kept and 3 dropped samples, in plan order, preferring distinct problems and drop reasons."""
    by_key: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        by_key.setdefault(verdict.sample_key, []).append(verdict)
    kept: list[Example] = []
    dropped: list[Example] = []
    for row in rows:
        judged = by_key.get(row["key"])
        if not judged:
            continue
        failing = next((v for v in judged if not v.keep), None)
        example = Example(
            key=row["key"],
            problem_id=row["problem_id"],
            question=row.get("question") or "",
            gold=row.get("gold"),
            answer=row.get("answer"),
            temperature=row.get("temperature"),
            rationale=_truncate(row.get("rationale") or row.get("text") or ""),
            filter=failing.filter if failing else None,
            reason=failing.reason if failing else "kept",
        )
        (dropped if failing else kept).append(example)
    by_problem = _spread(dropped, lambda e: e.problem_id)
    return Examples(
        kept=_spread(kept, lambda e: e.problem_id)[:EXAMPLES_PER_KIND],
        dropped=_spread(by_problem, lambda e: e.reason)[:EXAMPLES_PER_KIND],
    )


def _spread(items: list[_Item], value: Callable[[_Item], Hashable]) -> list[_Item]:
    """The first item of each ``value(item)``, then the rest: a few examples show as much variety as they can."""
    firsts: dict[Hashable, int] = {}
    for index, item in enumerate(items):
        firsts.setdefault(value(item), index)
    chosen = set(firsts.values())
    return [items[i] for i in sorted(chosen)] + [e for i, e in enumerate(items) if i not in chosen]


def _truncate(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- the students -----------------------------------------------------------------------------------------


def _read_student(student: StudentDir) -> StudentReport:
    """A student's method, loss curves (its training log), eval and, when the base model was scored too, the
    untrained eval (the "before"; a folder inside the student's, not a student)."""
    info = _read_json(student.info) if student.info.exists() else {}
    evaluation = _read_optional_json(student.evaluation)
    untrained = _read_optional_json(student.untrained.evaluation)
    metrics = _read_optional_jsonl(student.metrics) or []
    return StudentReport(
        name=student.path.name,
        method=(evaluation or {}).get("method") or info.get("method"),
        loss=_loss_curves(metrics),
        eval=_evaluation(evaluation) if evaluation else None,
        untrained=_evaluation(untrained) if untrained else None,
    )


def _evaluation(evaluation: dict[str, Any]) -> Evaluation:
    """eval.json's accuracies, each with its 95 % Wilson interval (computed from the counts when an older
    eval.json lacks it); the ranked (log-likelihood) accuracies only when the file has them."""
    total, correct = evaluation.get("total"), evaluation.get("correct")
    generated = Score(correct, evaluation.get("accuracy"), _interval(evaluation, "", correct, total))
    ranked = {}
    for ranking in RANKINGS:
        correct = evaluation.get(f"{ranking}_correct")
        if correct is None:
            continue
        accuracy = evaluation.get(f"{ranking}_accuracy", correct / total if total else 0.0)
        ranked[ranking] = Score(correct, accuracy, _interval(evaluation, f"{ranking}_", correct, total))
    return Evaluation(
        total=total,
        generated=generated,
        rationale_agreement=evaluation.get("rationale_agreement"),
        rationale_accuracy=evaluation.get("rationale_accuracy"),
        ranked=ranked,
    )


def _interval(evaluation: dict[str, Any], prefix: str, correct: Any, total: Any) -> list[float] | None:
    stored = evaluation.get(f"{prefix}interval")
    if stored is not None:
        return [float(bound) for bound in stored]
    if isinstance(correct, int) and isinstance(total, int) and 0 <= correct <= total:
        return list(wilson_interval(correct, total))
    return None


def _loss_curves(metrics: list[dict[str, Any]]) -> dict[str, LossCurve]:
    """``loss`` and every ``loss_<task>``: steps and values, from the training log lines that have them."""
    curves: dict[str, LossCurve] = {}
    for line in metrics:
        for key, value in line.items():
            if (key == "loss" or key.startswith("loss_")) and isinstance(value, int | float) and "step" in line:
                if not math.isfinite(value):
                    continue
                curve = curves.setdefault(key, LossCurve())
                curve.steps.append(line["step"])
                curve.values.append(float(value))
    return dict(sorted(curves.items(), key=lambda item: (item[0] != "loss", item[0])))


# --- where the students fail ------------------------------------------------------------------------------


def _errors(run: RunDir, rows: list[dict[str, Any]], verdicts: list[Verdict]) -> list[StudentErrorsReport]:
    """Per student with a lineage: its first wrong held-out problems, each with the nearest training examples
    traced to their teacher samples and verdicts (texts truncated like the example views)."""
    students = lineage.students_with_lineage(run.path)
    if not students:
        return []
    teacher = lineage.TeacherIndex.from_rows(rows, verdicts, run.path)
    traced = (lineage.trace_student(student, teacher) for student in students)
    return [_student_errors(t) for t in traced if t is not None]


def _student_errors(errors: lineage.StudentErrors) -> StudentErrorsReport:
    return StudentErrorsReport(
        student=errors.student,
        total=errors.total,
        wrong=errors.wrong,
        ranked_wrong=errors.ranked_wrong,
        examples=errors.examples,
        failures=[_failure(failure) for failure in errors.failures],
    )


def _failure(failure: lineage.Failure) -> FailureReport:
    answer = failure.prediction
    return FailureReport(
        problem_id=answer.problem_id,
        question=answer.question,
        choices=list(answer.choices) if answer.choices else None,
        gold=answer.gold,
        prediction=answer.prediction,
        rationale=_truncate(answer.rationale),
        ranked=answer.ranked,
        ranked_correct=answer.ranked_correct,
        in_training=failure.in_training,
        neighbours=[_neighbour(neighbour) for neighbour in failure.neighbours],
    )


def _neighbour(neighbour: lineage.Neighbour) -> NeighbourReport:
    example, sample = neighbour.example, neighbour.sample
    return NeighbourReport(
        similarity=round(neighbour.similarity, 4),
        same_problem=neighbour.same_problem,
        problem_id=example.problem_id,
        task=example.task,
        source=_truncate(example.source),
        target=_truncate(example.target),
        sample_key=example.sample_key,
        sample=None if sample is None else SampleExcerpt(_truncate(sample.text), sample.answer, sample.temperature),
        verdicts=list(neighbour.verdicts),
    )
