"""``report/``: one self-contained HTML page with plots of a run — funnel, agreement, scores, yield, students,
and where each student fails next to what it learned from (``lineage.py``).

``write_report(run_dir)`` reads what the run directory holds (``samples.jsonl`` and the store are required;
``funnel.json``, ``filtered.jsonl`` and ``students/*/`` are shown when present), gathers every number it
plots into ``report/report.json``, draws one PNG per plot and writes ``report/report.html``, which refers to
the PNGs by relative name: the folder can be copied or zipped whole. No JavaScript, no external resources;
every piece of text taken from the data is HTML-escaped.

Plots use matplotlib's object-oriented ``Figure`` (rendered by the Agg canvas, never pyplot), so no GUI
backend is touched and no figure outlives its ``savefig``.
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Iterator
from html import escape
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotfactory import lineage
from cotfactory.answers import answers_match
from cotfactory.errors import ConfigError, DataError
from cotfactory.export import SAMPLES_FILE, read_jsonl, write_json_atomic
from cotfactory.filtering import FILTERED_FILE, FUNNEL_FILE
from cotfactory.records import Problem, Verdict
from cotfactory.stats import wilson_interval
from cotfactory.store import Store

if TYPE_CHECKING:
    from matplotlib.figure import Figure

REPORT_DIR = "report"
HTML_FILE = "report.html"
JSON_FILE = "report.json"
STUDENTS_DIR = "students"
EXAMPLES_PER_KIND = 3
EXAMPLE_CHARS = 600
UNTRAINED_DIR = "untrained"  # students/NAME/untrained/: the base model, untrained, on the same problems


# --- entry point ------------------------------------------------------------------------------------------


def write_report(run_dir: Path) -> Path:
    """Write ``RUN_DIR/report/{report.html, report.json, *.png}``; returns the HTML file's path."""
    run_dir = Path(run_dir)
    figure_class = _matplotlib_figure()  # fails here, before anything is written
    numbers = collect(run_dir)
    out = run_dir / REPORT_DIR
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob("*.png"):  # the folder is ours: a plot skipped this time must not linger
        stale.unlink()
    numbers["plots"] = _draw_plots(numbers, out, figure_class)
    write_json_atomic(out / JSON_FILE, numbers)
    html_path = out / HTML_FILE
    _write_text_atomic(html_path, render_html(numbers))
    for path in (out / JSON_FILE, html_path):
        _readable(path)
    return html_path


def _matplotlib_figure() -> type[Figure]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("report: needs matplotlib; install it with `pip install matplotlib`") from None
    return Figure


# --- the numbers ------------------------------------------------------------------------------------------


def collect(run_dir: Path) -> dict[str, Any]:
    """Every number the report shows, read from the run directory (the content of ``report.json``)."""
    rows = _read_samples(run_dir)
    funnel = _read_funnel(run_dir)  # the files first: a bad one fails before the store is opened
    filtered = _read_optional_jsonl(run_dir / FILTERED_FILE)
    students = _read_students(run_dir)
    with Store.in_run(run_dir) as store:
        problems = store.problems()
        verdicts = store.verdicts()
    return {
        "run": run_dir.resolve().name,
        "summary": _summary(rows, funnel, filtered, students),
        "funnel": funnel,
        "agreement": _agreements(rows, verdicts),
        "scores": _scores(verdicts, filtered, funnel),
        "yield_by_temperature": _yield_by_temperature(rows, problems),
        "students": students,
        "examples": _examples(rows, verdicts),
        "errors": _errors(run_dir, rows, verdicts),
    }


def _read_samples(run_dir: Path) -> list[dict[str, Any]]:
    if not (run_dir / Store.FILENAME).exists():
        raise DataError(f"{run_dir}: not a run directory (no {Store.FILENAME}); make one with `cotfactory generate`")
    path = run_dir / SAMPLES_FILE
    if not path.exists():
        raise DataError(f"{path}: missing; run `cotfactory generate` on this run directory to finish it")
    return list(read_jsonl(path))


def _read_optional_jsonl(path: Path) -> list[dict[str, Any]] | None:
    return list(read_jsonl(path)) if path.exists() else None


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not valid JSON ({exc})") from None


def _read_funnel(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / FUNNEL_FILE
    if not path.exists():
        return None
    funnel = _read_json(path)
    stages = [
        {key: stage[key] for key in ("stage", "samples_in", "samples_out", "problems_out", "dropped")}
        for stage in funnel["stages"]
    ]
    return {"reward": (funnel.get("config") or {}).get("reward"), "stages": stages}


def _summary(
    rows: list[dict[str, Any]],
    funnel: dict[str, Any] | None,
    filtered: list[dict[str, Any]] | None,
    students: list[dict[str, Any]],
) -> dict[str, Any]:
    kept = funnel["stages"][-1]["samples_out"] if funnel else (len(filtered) if filtered is not None else None)
    return {
        "samples": len(rows),
        "problems": len({row["problem_id"] for row in rows}),
        "failed": sum(row.get("error") is not None for row in rows),
        "kept": kept,
        "students": len(students),
        "accuracy": {s["name"]: s["eval"]["accuracy"] for s in students if s["eval"]},
    }


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
    verdicts: list[Verdict], filtered: list[dict[str, Any]] | None, funnel: dict[str, Any] | None
) -> dict[str, Any] | None:
    """Reward (or answer-gain) scores: the reward filter's verdicts, kept and dropped; else the kept rows'."""
    values = [v.score for v in verdicts if v.filter == "reward" and v.score is not None]
    source = "reward verdicts (kept and dropped)"
    if not values and filtered:
        values = [row["reward"] for row in filtered if row.get("reward") is not None]
        source = f"{FILTERED_FILE} (kept samples)"
    if not values:
        return None
    return {"scorer": funnel["reward"] if funnel else None, "source": source, "values": values}


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


def _yield_by_temperature(rows: list[dict[str, Any]], problems: dict[str, Problem]) -> list[dict[str, Any]]:
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
    return [{"temperature": t, "samples": n, "correct": c, "fraction": c / n} for t, (n, c) in sorted(tally.items())]


def _read_students(run_dir: Path) -> list[dict[str, Any]]:
    """Each ``students/<name>/`` with its method, loss curves (metrics.jsonl), eval.json and, when the base
    model was scored too, ``untrained/eval.json`` (the "before"; a folder inside the student's, not a student)."""
    folder = run_dir / STUDENTS_DIR
    if not folder.is_dir():
        return []
    students = []
    for path in sorted(p for p in folder.iterdir() if p.is_dir()):
        info = _read_json(path / "student.json") if (path / "student.json").exists() else {}
        evaluation = _read_optional_json(path / "eval.json")
        untrained = _read_optional_json(path / UNTRAINED_DIR / "eval.json")
        metrics = _read_optional_jsonl(path / "metrics.jsonl") or []
        method = (evaluation or {}).get("method") or info.get("method")
        students.append(
            {
                "name": path.name,
                "method": method,
                "loss": _loss_series(metrics),
                "eval": _eval_numbers(evaluation) if evaluation else None,
                "untrained": _eval_numbers(untrained) if untrained else None,
            }
        )
    return students


def _read_optional_json(path: Path) -> Any:
    return _read_json(path) if path.exists() else None


def _eval_numbers(evaluation: dict[str, Any]) -> dict[str, Any]:
    """eval.json's accuracies, each with its 95 % Wilson interval (computed from the counts when an older
    eval.json lacks it); the ranked (log-likelihood) accuracies only when the file has them."""
    numbers = {
        key: evaluation.get(key)
        for key in ("total", "correct", "accuracy", "rationale_agreement", "rationale_accuracy")
    }
    numbers["interval"] = _interval(evaluation, "", numbers["correct"], numbers["total"])
    for name in ("ranked", "ranked_norm"):
        correct = evaluation.get(f"{name}_correct")
        if correct is None:
            continue
        total = numbers["total"]
        numbers[f"{name}_correct"] = correct
        numbers[f"{name}_accuracy"] = evaluation.get(f"{name}_accuracy", correct / total if total else 0.0)
        numbers[f"{name}_interval"] = _interval(evaluation, f"{name}_", correct, total)
    return numbers


def _interval(evaluation: dict[str, Any], prefix: str, correct: Any, total: Any) -> list[float] | None:
    stored = evaluation.get(f"{prefix}interval")
    if stored is not None:
        return [float(bound) for bound in stored]
    if isinstance(correct, int) and isinstance(total, int) and 0 <= correct <= total:
        return list(wilson_interval(correct, total))
    return None


def _errors(run_dir: Path, rows: list[dict[str, Any]], verdicts: list[Verdict]) -> list[dict[str, Any]]:
    """Per student with a lineage: its first wrong held-out problems, each with the nearest training examples
    traced to their teacher samples and verdicts (texts truncated like the example views)."""
    folders = lineage.students_with_lineage(run_dir)
    if not folders:
        return []
    teacher = lineage.TeacherIndex.from_rows(rows, verdicts, run_dir)
    traced = (lineage.trace_student(folder, teacher) for folder in folders)
    return [_student_errors_json(t) for t in traced if t is not None]


def _student_errors_json(errors: lineage.StudentErrors) -> dict[str, Any]:
    return {
        "student": errors.student,
        "total": errors.total,
        "wrong": errors.wrong,
        "ranked_wrong": errors.ranked_wrong,
        "examples": errors.examples,
        "failures": [
            {
                "problem_id": f.prediction.problem_id,
                "question": f.prediction.question,
                "choices": list(f.prediction.choices) if f.prediction.choices else None,
                "gold": f.prediction.gold,
                "prediction": f.prediction.prediction,
                "rationale": _truncate(f.prediction.rationale),
                "ranked": f.prediction.ranked,
                "ranked_correct": f.prediction.ranked_correct,
                "in_training": f.in_training,
                "neighbours": [_neighbour_json(n) for n in f.neighbours],
            }
            for f in errors.failures
        ],
    }


def _neighbour_json(neighbour: lineage.Neighbour) -> dict[str, Any]:
    example, sample = neighbour.example, neighbour.sample
    return {
        "similarity": round(neighbour.similarity, 4),
        "same_problem": neighbour.same_problem,
        "problem_id": example.problem_id,
        "task": example.task,
        "source": _truncate(example.source),
        "target": _truncate(example.target),
        "sample_key": example.sample_key,
        "sample": None
        if sample is None
        else {"text": _truncate(sample.text), "answer": sample.answer, "temperature": sample.temperature},
        "verdicts": [{"filter": v.filter, "kept": v.kept, "reason": v.reason} for v in neighbour.verdicts],
    }


def _loss_series(metrics: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """``loss`` and every ``loss_<task>``: steps and values, from the training log lines that have them."""
    series: dict[str, dict[str, list[float]]] = {}
    for line in metrics:
        for key, value in line.items():
            if (key == "loss" or key.startswith("loss_")) and isinstance(value, int | float) and "step" in line:
                if not math.isfinite(value):
                    continue
                entry = series.setdefault(key, {"steps": [], "values": []})
                entry["steps"].append(line["step"])
                entry["values"].append(float(value))
    return dict(sorted(series.items(), key=lambda item: (item[0] != "loss", item[0])))


def _examples(rows: list[dict[str, Any]], verdicts: list[Verdict]) -> dict[str, list[dict[str, Any]]]:
    """Up to 3 kept and 3 dropped samples, in plan order, preferring distinct problems and drop reasons."""
    by_key: dict[str, list[Verdict]] = {}
    for verdict in verdicts:
        by_key.setdefault(verdict.sample_key, []).append(verdict)
    kept, dropped = [], []
    for row in rows:
        judged = by_key.get(row["key"])
        if not judged:
            continue
        failing = next((v for v in judged if not v.keep), None)
        example = {
            "key": row["key"],
            "problem_id": row["problem_id"],
            "question": row.get("question") or "",
            "gold": row.get("gold"),
            "answer": row.get("answer"),
            "temperature": row.get("temperature"),
            "rationale": _truncate(row.get("rationale") or row.get("text") or ""),
            "filter": failing.filter if failing else None,
            "reason": failing.reason if failing else "kept",
        }
        (dropped if failing else kept).append(example)
    return {
        "kept": _spread(kept, "problem_id")[:EXAMPLES_PER_KIND],
        "dropped": _spread(_spread(dropped, "problem_id"), "reason")[:EXAMPLES_PER_KIND],
    }


def _spread(examples: list[dict[str, Any]], field: str) -> list[dict[str, Any]]:
    """The first example of each ``field`` value, then the rest: a few examples show as much variety as they can."""
    firsts: dict[Any, int] = {}
    for index, example in enumerate(examples):
        firsts.setdefault(example[field], index)
    chosen = set(firsts.values())
    return [examples[i] for i in sorted(chosen)] + [e for i, e in enumerate(examples) if i not in chosen]


def _truncate(text: str, limit: int = EXAMPLE_CHARS) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


# --- the plots --------------------------------------------------------------------------------------------


def _draw_plots(numbers: dict[str, Any], out: Path, figure_class: type[Figure]) -> dict[str, str]:
    """Draw every plot the numbers allow; returns plot id → PNG file name (relative to ``out``)."""
    plots: dict[str, str] = {}

    def save(plot_id: str, figure: Figure) -> None:
        name = f"{plot_id}.png"
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plots[plot_id] = name

    if numbers["funnel"]:
        save("funnel", plot_funnel(figure_class(figsize=(7, 4)), numbers["funnel"]["stages"]))
    if numbers["agreement"]:
        save("agreement", plot_agreement(figure_class(figsize=(6, 3.5)), numbers["agreement"]))
    if numbers["scores"]:
        save("scores", plot_scores(figure_class(figsize=(6, 3.5)), numbers["scores"]))
    if numbers["yield_by_temperature"]:
        save("yield", plot_yield(figure_class(figsize=(6, 3.5)), numbers["yield_by_temperature"]))
    for index, student in enumerate(numbers["students"]):
        if student["loss"]:
            plot_id = f"loss_{index}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', student['name'])}"
            save(plot_id, plot_loss(figure_class(figsize=(6, 3.5)), student["name"], student["loss"]))
            student["plot"] = f"{plot_id}.png"
    if any(s["eval"] for s in numbers["students"]):
        save("accuracy", plot_accuracy(figure_class(figsize=(6, 3.5)), numbers["students"]))
    return plots


def plot_funnel(figure: Figure, stages: list[dict[str, Any]]) -> Figure:
    ax = figure.add_subplot()
    names = [s["stage"] for s in stages]
    bars = ax.bar(names, [s["samples_out"] for s in stages], color="#4c72b0")
    for bar, stage in zip(bars, stages, strict=True):
        ax.annotate(
            f"{stage['samples_out']}\n{stage['problems_out']} problems",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, max(1, max(s["samples_out"] for s in stages)) * 1.3)
    ax.set_ylabel("samples out")
    ax.set_title("filter funnel")
    return figure


def plot_agreement(figure: Figure, agreements: list[float]) -> Figure:
    ax = figure.add_subplot()
    ax.hist(agreements, bins=[i / 10 for i in range(11)], color="#55a868", edgecolor="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("agreement ratio (majority share of votes)")
    ax.set_ylabel("problems")
    ax.set_title(f"self-consistency agreement ({len(agreements)} problems)")
    return figure


def plot_scores(figure: Figure, scores: dict[str, Any]) -> Figure:
    ax = figure.add_subplot()
    ax.hist(scores["values"], bins=min(30, max(5, len(scores["values"]) // 3)), color="#c44e52", edgecolor="white")
    ax.set_xlabel(f"score ({scores['scorer'] or 'reward'})")
    ax.set_ylabel("samples")
    ax.set_title(f"score distribution: {scores['source']}", fontsize=10)
    return figure


def plot_yield(figure: Figure, rows: list[dict[str, Any]]) -> Figure:
    ax = figure.add_subplot()
    labels = [f"{r['temperature']:g}" for r in rows]
    bars = ax.bar(labels, [r["fraction"] for r in rows], color="#8172b2")
    for bar, row in zip(bars, rows, strict=True):
        ax.annotate(
            f"{row['correct']}/{row['samples']}",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("temperature")
    ax.set_ylabel("fraction correct")
    ax.set_title("yield of correct samples per temperature")
    return figure


def plot_loss(figure: Figure, name: str, series: dict[str, dict[str, list[float]]]) -> Figure:
    from matplotlib.ticker import MaxNLocator

    ax = figure.add_subplot()
    for key, line in series.items():
        ax.plot(line["steps"], line["values"], marker="o", markersize=3, label=key, linewidth=2 if key == "loss" else 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss: {name}")
    ax.legend(fontsize=8)
    return figure


def plot_accuracy(figure: Figure, students: list[dict[str, Any]]) -> Figure:
    """Accuracy per student with its 95 % interval; the untrained base model's beside it when scored."""
    ax = figure.add_subplot()
    evaluated = [s for s in students if s["eval"]]
    before = any(s.get("untrained") for s in evaluated)
    width = 0.38 if before else 0.6
    positions = list(range(len(evaluated)))
    series = [("after (trained)", "eval", "#dd8452", width / 2 if before else 0.0)]
    if before:
        series.insert(0, ("before (untrained)", "untrained", "#8c8c8c", -width / 2))
    for label, field, color, offset in series:
        shown = [(x + offset, s[field]) for x, s in zip(positions, evaluated, strict=True) if s.get(field)]
        xs = [x for x, _ in shown]
        values = [numbers["accuracy"] or 0.0 for _, numbers in shown]
        errors = [_error_bar(numbers) for _, numbers in shown]
        ax.bar(xs, values, width=width, color=color, label=label)
        ax.errorbar(xs, values, yerr=list(zip(*errors, strict=True)) or None, fmt="none", ecolor="#333", capsize=3)
        for x, value, (_, high) in zip(xs, values, errors, strict=True):
            ax.annotate(f"{value:.3f}", (x, value + high), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(positions, [f"{s['name']}\n({s['method']})" for s in evaluated])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy (95 % interval)")
    ax.set_title("eval accuracy per student")
    if before:
        ax.legend(fontsize=8)
    return figure


def _error_bar(numbers: dict[str, Any]) -> tuple[float, float]:
    """Distances from the accuracy down to and up to its interval's bounds (0 without an interval)."""
    accuracy, interval = numbers["accuracy"] or 0.0, numbers.get("interval")
    if not interval:
        return (0.0, 0.0)
    return (max(0.0, accuracy - interval[0]), max(0.0, interval[1] - accuracy))


# --- the page ---------------------------------------------------------------------------------------------

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em auto; max-width: 1000px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { margin-bottom: 0.1em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; margin-top: 1.6em; }
.sub { color: #666; margin-top: 0; }
table { border-collapse: collapse; margin: 0.6em 0; }
th, td { border: 1px solid #ddd; padding: 0.25em 0.7em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 0.8em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption { color: #555; font-size: 0.9em; }
.example { border-left: 4px solid #55a868; background: #f8fbf8; padding: 0.5em 0.9em; margin: 0.7em 0; }
.example.dropped { border-left-color: #c44e52; background: #fdf7f7; }
.example .meta { color: #555; font-size: 0.9em; }
.example pre { white-space: pre-wrap; word-wrap: break-word; font-family: inherit; margin: 0.4em 0 0; }
.reason { font-weight: 600; }
.failure { border-left: 4px solid #c44e52; padding: 0.3em 0.9em; margin: 1.2em 0; }
.failure .meta { color: #555; font-size: 0.9em; }
.failure pre, .neighbour pre { white-space: pre-wrap; word-wrap: break-word; font-family: inherit; margin: 0.3em 0; }
.neighbour { border-left: 4px solid #4c72b0; background: #f6f8fc; padding: 0.4em 0.9em; margin: 0.6em 0 0.6em 1em; }
.neighbour .meta { color: #555; font-size: 0.9em; }
.verdicts { margin: 0.2em 0; padding-left: 1.2em; font-size: 0.9em; }
.dropped-verdict { color: #c44e52; }
.warning { color: #c44e52; font-weight: 600; }
"""


def render_html(numbers: dict[str, Any]) -> str:
    """The report page; every string taken from the run is escaped."""
    run = escape(numbers["run"])
    sections = [
        _summary_html(numbers["summary"]),
        _funnel_html(numbers),
        _section("Self-consistency", _figure_html(numbers, "agreement", "Agreement ratio, one value per problem.")),
        _section("Scores", _figure_html(numbers, "scores", "Reward / answer-gain scores.")),
        _yield_html(numbers),
        _students_html(numbers),
        _examples_html(numbers["examples"]),
        _errors_html(numbers["errors"]),
    ]
    body = "\n".join(section for section in sections if section)
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>cotfactory report: {run}</title>
<style>{_CSS}</style>
</head>
<body>
<h1>cotfactory report</h1>
<p class="sub">run directory <code>{run}</code></p>
{body}
</body>
</html>
"""


def _section(title: str, content: str) -> str:
    return f"<h2>{title}</h2>\n{content}" if content else ""


def _figure_html(numbers: dict[str, Any], plot_id: str, caption: str) -> str:
    name = numbers["plots"].get(plot_id)
    return _img_html(name, caption) if name else ""


def _img_html(name: str, caption: str) -> str:
    caption = escape(caption)
    return f'<figure><img src="{escape(name)}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _table(header: list[str], rows: Iterator[list[str]] | list[list[str]]) -> str:
    """A table of already-escaped cells; cells that look like numbers are right-aligned."""
    head = "".join(f"<th>{h}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td{_num_class(c)}>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _num_class(cell: str) -> str:
    return ' class="num"' if re.fullmatch(r"[-+]?[\d.,/%]+", cell) else ""


def _fmt(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}"
    return escape(str(value))


def _fmt_temperature(value: float | None) -> str:
    return "–" if value is None else f"{value:g}"


def _summary_html(summary: dict[str, Any]) -> str:
    rows = [
        ["samples", _fmt(summary["samples"])],
        ["problems", _fmt(summary["problems"])],
        ["failed samples", _fmt(summary["failed"])],
        ["kept after filtering", _fmt(summary["kept"])],
        ["students", _fmt(summary["students"])],
    ]
    rows += [[f"accuracy of {escape(name)}", _fmt(acc)] for name, acc in summary["accuracy"].items()]
    return "<h2>Summary</h2>\n" + _table(["", "value"], rows)


def _funnel_html(numbers: dict[str, Any]) -> str:
    funnel = numbers["funnel"]
    if not funnel:
        return ""
    rows = [
        [
            escape(s["stage"]),
            _fmt(s["samples_in"]),
            _fmt(s["samples_out"]),
            _fmt(s["problems_out"]),
            escape(", ".join(f"{reason} {n}" for reason, n in s["dropped"].items())),
        ]
        for s in funnel["stages"]
    ]
    table = _table(["stage", "in", "out", "problems", "dropped"], rows)
    return "<h2>Filter funnel</h2>\n" + _figure_html(numbers, "funnel", "Samples out per stage.") + table


def _yield_html(numbers: dict[str, Any]) -> str:
    rows = [
        [_fmt_temperature(r["temperature"]), _fmt(r["samples"]), _fmt(r["correct"]), _fmt(r["fraction"])]
        for r in numbers["yield_by_temperature"]
    ]
    if not rows:
        return ""
    caption = "Fraction of samples whose answer matches the gold answer, per sampling temperature."
    return (
        "<h2>Teacher yield</h2>\n"
        + _figure_html(numbers, "yield", caption)
        + _table(["temperature", "samples", "correct", "fraction"], rows)
    )


def _students_html(numbers: dict[str, Any]) -> str:
    students = numbers["students"]
    if not students:
        return ""
    before = any(s.get("untrained") for s in students)
    ranked = any("ranked_correct" in (s.get(field) or {}) for s in students for field in ("eval", "untrained"))
    columns: list[tuple[str, str, str]] = []  # (header, "eval" or "untrained", accuracy prefix)
    for prefix, name in [("", "accuracy")] + ([("ranked_", "ranked by log-likelihood")] if ranked else []):
        if before:
            columns.append((f"{name}: before (untrained)", "untrained", prefix))
        columns.append((f"{name}: after (trained)" if before else name, "eval", prefix))
    rows = [
        [escape(s["name"]), _fmt(s["method"])]
        + [_fmt_accuracy(s.get(field), prefix) for _, field, prefix in columns]
        + [_fmt((s["eval"] or {}).get("rationale_agreement"))]
        for s in students
    ]
    header = ["student", "method", *(escape(h) for h, _, _ in columns), "rationale agreement"]
    table = _table(header, rows)
    note = (
        '<p class="sub">correct/total = accuracy [95 % Wilson interval] on the held-out problems; '
        "before: the base model untrained, on the same problems.</p>"
    )
    caption = "Eval accuracy per student, with 95 % intervals" + ("; untrained beside trained." if before else ".")
    losses = "".join(_img_html(s["plot"], f"Training loss per task: {s['name']}") for s in students if s.get("plot"))
    return "<h2>Students</h2>\n" + table + note + _figure_html(numbers, "accuracy", caption) + losses


def _fmt_accuracy(numbers: dict[str, Any] | None, prefix: str = "") -> str:
    """'11/16 = 0.688 [0.444, 0.858]' (the format of ``stats.format_accuracy``); '–' when not measured."""
    if not numbers or numbers.get(f"{prefix}correct") is None:
        return "–"
    correct, total = numbers[f"{prefix}correct"], numbers["total"]
    accuracy, interval = numbers.get(f"{prefix}accuracy"), numbers.get(f"{prefix}interval")
    text = f"{_fmt(correct)}/{_fmt(total)} = {_fmt(accuracy)}"
    return text + (f" [{interval[0]:.3f}, {interval[1]:.3f}]" if interval else "")


def _examples_html(examples: dict[str, list[dict[str, Any]]]) -> str:
    if not examples["kept"] and not examples["dropped"]:
        return ""
    parts = ["<h2>Examples</h2>"]
    for kind in ("kept", "dropped"):
        parts.append(f"<h3>{kind}</h3>")
        parts.extend(_example_html(e, kind) for e in examples[kind])
        if not examples[kind]:
            parts.append("<p>none</p>")
    return "\n".join(parts)


def _example_html(example: dict[str, Any], kind: str) -> str:
    where = f" by {escape(example['filter'])}" if example["filter"] else ""
    return (
        f'<div class="example {kind}">'
        f'<div class="meta"><span class="reason">{escape(example["reason"])}</span>{where}'
        f" · answer {_fmt(example['answer'])} · gold {_fmt(example['gold'])}"
        f" · temperature {_fmt_temperature(example['temperature'])}</div>"
        f"<p><b>Q:</b> {escape(example['question'])}</p>"
        f"<pre>{escape(example['rationale'])}</pre></div>"
    )


def _errors_html(errors: list[dict[str, Any]]) -> str:
    if not errors:
        return ""
    parts = [
        "<h2>Where the student fails, and what it learned from</h2>",
        '<p class="sub">Each student\'s first wrong held-out problems, each followed by the training examples '
        "nearest to it (TF-IDF cosine of its question against the examples' sources, one per training problem), "
        "traced by request key to the teacher sample they came from and every filter's verdict on it.</p>",
    ]
    for student in errors:
        ranked = (
            "" if student["ranked_wrong"] is None else f"; {student['ranked_wrong']} wrong ranked by log-likelihood"
        )
        parts.append(
            f"<h3>{escape(student['student'])}: {student['wrong']} of {student['total']} wrong{ranked}</h3>"
            f'<p class="sub">{len(student["failures"])} shown; {student["examples"]} training examples searched.</p>'
        )
        parts.extend(_failure_html(f) for f in student["failures"])
        if not student["failures"]:
            parts.append("<p>none wrong</p>")
    return "\n".join(parts)


def _failure_html(failure: dict[str, Any]) -> str:
    ranked = ""
    if failure["ranked_correct"] is not None:
        verdict = "right" if failure["ranked_correct"] else "wrong"
        ranked = f" · ranked by log-likelihood {_fmt(failure['ranked'])} ({verdict})"
    choices = failure["choices"] or []
    options = " ".join(f"({'abcdefghij'[i] if i < 10 else i}) {escape(c)}" for i, c in enumerate(choices))
    leak = (
        '<p class="warning">This held-out problem is also among the training examples: it leaked into training.</p>'
        if failure["in_training"]
        else ""
    )
    neighbours = "".join(_neighbour_html(n, i) for i, n in enumerate(failure["neighbours"], start=1))
    return (
        '<div class="failure">'
        f'<div class="meta">problem {_fmt(failure["problem_id"])} · gold {_fmt(failure["gold"])}'
        f" · student's answer {_fmt(failure['prediction'])}{ranked}</div>"
        f"<p><b>Q:</b> {escape(failure['question'])}</p>"
        + (f"<p><b>Choices:</b> {options}</p>" if options else "")
        + f"<p><b>Student's rationale:</b></p><pre>{escape(failure['rationale']) or '–'}</pre>"
        + leak
        + (neighbours or "<p>no training example shares a word with this question</p>")
        + "</div>"
    )


def _neighbour_html(neighbour: dict[str, Any], rank: int) -> str:
    which = "the same problem" if neighbour["same_problem"] else f"nearest #{rank}"
    sample = neighbour["sample"]
    if sample is not None:
        same = sample["text"].strip() == neighbour["target"].strip()
        teacher = (
            f'<div class="meta">teacher sample {_fmt(neighbour["sample_key"])} · answer {_fmt(sample["answer"])}'
            f" · temperature {_fmt_temperature(sample['temperature'])}"
            + (" · its text is the target above</div>" if same else f"</div><pre>{escape(sample['text'])}</pre>")
        )
    elif neighbour["sample_key"]:
        teacher = f'<div class="meta">teacher sample {_fmt(neighbour["sample_key"])}: not found in this run</div>'
    else:
        teacher = '<div class="meta">from the dataset, not from a teacher sample</div>'
    verdicts = "".join(
        f'<li class="{"kept" if v["kept"] else "dropped-verdict"}">{escape(v["filter"])}: '
        f"{'kept' if v['kept'] else 'dropped, ' + escape(v['reason'])}</li>"
        for v in neighbour["verdicts"]
    )
    return (
        '<div class="neighbour">'
        f'<div class="meta">{which} · similarity {neighbour["similarity"]:.3f}'
        f" · problem {_fmt(neighbour['problem_id'])} · task {_fmt(neighbour['task'])}</div>"
        f"<p><b>Trained on:</b> {escape(neighbour['source'])}</p>"
        f"<p><b>Target:</b></p><pre>{escape(neighbour['target'])}</pre>"
        f"{teacher}" + (f'<ul class="verdicts">{verdicts}</ul>' if verdicts else "") + "</div>"
    )


def _readable(path: Path) -> None:
    """Atomic writes come out 0600 (mkstemp); a report is meant to be shared, like its PNGs."""
    path.chmod(0o644)


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
