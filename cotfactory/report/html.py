"""The report page: one self-contained HTML file rendered from ``ReportData``.

The page refers to the plots by relative file name, so the report folder can be copied or zipped whole.
No JavaScript, no external resources; every piece of text taken from the run is HTML-escaped.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from html import escape
from typing import Any

from cotfactory.records import lettered_choices
from cotfactory.report.data import (
    Evaluation,
    Example,
    Examples,
    FailureReport,
    NeighbourReport,
    ReportData,
    StudentErrorsReport,
    Summary,
)

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


def render_html(data: ReportData) -> str:
    """The report page; every string taken from the run is escaped."""
    run = escape(data.run)
    sections = [
        _summary_html(data.summary),
        _funnel_html(data),
        _section("Self-consistency", _figure_html(data, "agreement", "Agreement ratio, one value per problem.")),
        _section("Scores", _figure_html(data, "scores", "Reward / answer-gain scores.")),
        _yield_html(data),
        _students_html(data),
        _budget_html(data),
        _rounds_html(data),
        _examples_html(data.examples),
        _errors_html(data.errors),
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


# --- building blocks --------------------------------------------------------------------------------------


def _section(title: str, content: str) -> str:
    return f"<h2>{title}</h2>\n{content}" if content else ""


def _figure_html(data: ReportData, plot_id: str, caption: str) -> str:
    name = data.plots.get(plot_id)
    return _img_html(name, caption) if name else ""


def _img_html(name: str, caption: str) -> str:
    caption = escape(caption)
    return f'<figure><img src="{escape(name)}" alt="{caption}"><figcaption>{caption}</figcaption></figure>'


def _table(header: list[str], rows: Iterable[list[str]]) -> str:
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


# --- the sections -----------------------------------------------------------------------------------------


def _summary_html(summary: Summary) -> str:
    rows = [
        ["samples", _fmt(summary.samples)],
        ["problems", _fmt(summary.problems)],
        ["failed samples", _fmt(summary.failed)],
        ["kept after filtering", _fmt(summary.kept)],
        ["students", _fmt(summary.students)],
    ]
    rows += [[f"accuracy of {escape(name)}", _fmt(acc)] for name, acc in summary.accuracy.items()]
    return "<h2>Summary</h2>\n" + _table(["", "value"], rows)


def _funnel_html(data: ReportData) -> str:
    if not data.funnel:
        return ""
    rows = [
        [
            escape(s.stage),
            _fmt(s.samples_in),
            _fmt(s.samples_out),
            _fmt(s.problems_out),
            escape(", ".join(f"{reason} {n}" for reason, n in s.dropped.items())),
        ]
        for s in data.funnel.stages
    ]
    table = _table(["stage", "in", "out", "problems", "dropped"], rows)
    return "<h2>Filter funnel</h2>\n" + _figure_html(data, "funnel", "Samples out per stage.") + table


def _yield_html(data: ReportData) -> str:
    rows = [
        [_fmt_temperature(r.temperature), _fmt(r.samples), _fmt(r.correct), _fmt(r.fraction)]
        for r in data.yield_by_temperature
    ]
    if not rows:
        return ""
    caption = "Fraction of samples whose answer matches the gold answer, per sampling temperature."
    return (
        "<h2>Teacher yield</h2>\n"
        + _figure_html(data, "yield", caption)
        + _table(["temperature", "samples", "correct", "fraction"], rows)
    )


def _budget_html(data: ReportData) -> str:
    budget = data.budget
    if budget is None:
        return ""
    rows = []
    if budget.rule:
        saved = 1 - budget.tokens / budget.grid_tokens if budget.grid_tokens else 0.0
        rows += [
            ["adaptive sampling", escape(budget.rule)],
            ["samples drawn / the fixed grid's", f"{budget.samples:,} / {budget.grid_samples:,}"],
            [
                "teacher tokens / the grid's (estimated)",
                f"{budget.tokens:,} / {budget.grid_tokens:,} ({saved:.0%} saved)",
            ],
        ]
    if budget.rationalized:
        rows.append(["problems every sample missed, rationalized", _fmt(budget.rationalized)])
        rows.append(["… whose rationale reached the gold answer (rescued)", _fmt(budget.rescued)])
    return "<h2>Teacher budget</h2>\n" + _table(["", "value"], rows)


def _rounds_html(data: ReportData) -> str:
    if not data.rounds:
        return ""
    new = any(r.new_problems is not None for r in data.rounds)
    rows = [
        [
            str(r.round),
            f"{_fmt(r.hard_problems)} ({_fmt(r.wrong)} / {_fmt(r.disagree)})" if r.round else "",
            *([_fmt(r.new_problems) if r.round else ""] if new else []),
            _fmt(r.records),
            _fmt_accuracy(r.evaluation, None),
        ]
        for r in data.rounds
    ]
    header = [
        "round",
        "hard problems sampled (wrong / disagree)",
        *(["new problems kept"] if new else []),
        "records trained on",
        "accuracy",
    ]
    caption = "Held-out accuracy of each round's student (95 % interval); round 0 is the pipeline's first student."
    note = (
        '<p class="sub">wrong: pool problems with gold the previous student answered wrong; disagree: pool problems '
        "without gold where its answer differed from the teacher's majority. Records: the round's student's "
        "training set (round 0 and every round's kept samples so far).</p>"
    )
    return "<h2>Hard-problem rounds</h2>\n" + _figure_html(data, "rounds", caption) + _table(header, rows) + note


def _students_html(data: ReportData) -> str:
    students = data.students
    if not students:
        return ""
    before = any(s.untrained for s in students)
    ranked = any(e is not None and "ranked" in e.ranked for s in students for e in (s.eval, s.untrained))
    columns: list[tuple[str, bool, str | None]] = []  # (header, untrained?, ranking or None for generated)
    for ranking, name in [(None, "accuracy")] + ([("ranked", "ranked by log-likelihood")] if ranked else []):
        if before:
            columns.append((f"{name}: before (untrained)", True, ranking))
        columns.append((f"{name}: after (trained)" if before else name, False, ranking))
    rows = [
        [escape(s.name), _fmt(s.method)]
        + [_fmt_accuracy(s.untrained if untrained else s.eval, ranking) for _, untrained, ranking in columns]
        + [_fmt(s.eval.rationale_agreement if s.eval else None)]
        for s in students
    ]
    header = ["student", "method", *(escape(h) for h, _, _ in columns), "rationale agreement"]
    table = _table(header, rows)
    note = (
        '<p class="sub">correct/total = accuracy [95 % Wilson interval] on the held-out problems; '
        "before: the base model untrained, on the same problems.</p>"
    )
    caption = "Eval accuracy per student, with 95 % intervals" + ("; untrained beside trained." if before else ".")
    losses = "".join(_img_html(s.plot, f"Training loss per task: {s.name}") for s in students if s.plot)
    return "<h2>Students</h2>\n" + table + note + _figure_html(data, "accuracy", caption) + losses


def _fmt_accuracy(evaluation: Evaluation | None, ranking: str | None) -> str:
    """'11/16 = 0.688 [0.444, 0.858]' (the format of ``stats.format_accuracy``); '–' when not measured."""
    score = evaluation.score(ranking) if evaluation else None
    if evaluation is None or score is None or score.correct is None:
        return "–"
    text = f"{_fmt(score.correct)}/{_fmt(evaluation.total)} = {_fmt(score.accuracy)}"
    return text + (f" [{score.interval[0]:.3f}, {score.interval[1]:.3f}]" if score.interval else "")


def _examples_html(examples: Examples) -> str:
    if not examples.kept and not examples.dropped:
        return ""
    parts = ["<h2>Examples</h2>"]
    for kind, shown in (("kept", examples.kept), ("dropped", examples.dropped)):
        parts.append(f"<h3>{kind}</h3>")
        parts.extend(_example_html(e, kind) for e in shown)
        if not shown:
            parts.append("<p>none</p>")
    return "\n".join(parts)


def _example_html(example: Example, kind: str) -> str:
    where = f" by {escape(example.filter)}" if example.filter else ""
    return (
        f'<div class="example {kind}">'
        f'<div class="meta"><span class="reason">{escape(example.reason)}</span>{where}'
        f" · answer {_fmt(example.answer)} · gold {_fmt(example.gold)}"
        f" · temperature {_fmt_temperature(example.temperature)}</div>"
        f"<p><b>Q:</b> {escape(example.question)}</p>"
        f"<pre>{escape(example.rationale)}</pre></div>"
    )


# --- where the students fail ------------------------------------------------------------------------------


def _errors_html(errors: list[StudentErrorsReport]) -> str:
    if not errors:
        return ""
    parts = [
        "<h2>Where the student fails, and what it learned from</h2>",
        '<p class="sub">Each student\'s first wrong held-out problems, each followed by the training examples '
        "nearest to it (TF-IDF cosine of its question against the examples' sources, one per training problem), "
        "traced by request key to the teacher sample they came from and every filter's verdict on it.</p>",
    ]
    for student in errors:
        ranked = "" if student.ranked_wrong is None else f"; {student.ranked_wrong} wrong ranked by log-likelihood"
        parts.append(
            f"<h3>{escape(student.student)}: {student.wrong} of {student.total} wrong{ranked}</h3>"
            f'<p class="sub">{len(student.failures)} shown; {student.examples} training examples searched.</p>'
        )
        parts.extend(_failure_html(f) for f in student.failures)
        if not student.failures:
            parts.append("<p>none wrong</p>")
    return "\n".join(parts)


def _failure_html(failure: FailureReport) -> str:
    ranked = ""
    if failure.ranked_correct is not None:
        verdict = "right" if failure.ranked_correct else "wrong"
        ranked = f" · ranked by log-likelihood {_fmt(failure.ranked)} ({verdict})"
    choices = failure.choices or []
    options = escape(lettered_choices(choices))
    leak = (
        '<p class="warning">This held-out problem is also among the training examples: it leaked into training.</p>'
        if failure.in_training
        else ""
    )
    neighbours = "".join(_neighbour_html(n, i) for i, n in enumerate(failure.neighbours, start=1))
    return (
        '<div class="failure">'
        f'<div class="meta">problem {_fmt(failure.problem_id)} · gold {_fmt(failure.gold)}'
        f" · student's answer {_fmt(failure.prediction)}{ranked}</div>"
        f"<p><b>Q:</b> {escape(failure.question)}</p>"
        + (f"<p><b>Choices:</b> {options}</p>" if options else "")
        + f"<p><b>Student's rationale:</b></p><pre>{escape(failure.rationale) or '–'}</pre>"
        + leak
        + (neighbours or "<p>no training example shares a word with this question</p>")
        + "</div>"
    )


def _neighbour_html(neighbour: NeighbourReport, rank: int) -> str:
    which = "the same problem" if neighbour.same_problem else f"nearest #{rank}"
    sample = neighbour.sample
    if sample is not None:
        same = sample.text.strip() == neighbour.target.strip()
        teacher = (
            f'<div class="meta">teacher sample {_fmt(neighbour.sample_key)} · answer {_fmt(sample.answer)}'
            f" · temperature {_fmt_temperature(sample.temperature)}"
            + (" · its text is the target above</div>" if same else f"</div><pre>{escape(sample.text)}</pre>")
        )
    elif neighbour.sample_key:
        teacher = f'<div class="meta">teacher sample {_fmt(neighbour.sample_key)}: not found in this run</div>'
    else:
        teacher = '<div class="meta">from the dataset, not from a teacher sample</div>'
    verdicts = "".join(
        f'<li class="{"kept" if v.kept else "dropped-verdict"}">{escape(v.filter)}: '
        f"{'kept' if v.kept else 'dropped, ' + escape(v.reason)}</li>"
        for v in neighbour.verdicts
    )
    return (
        '<div class="neighbour">'
        f'<div class="meta">{which} · similarity {neighbour.similarity:.3f}'
        f" · problem {_fmt(neighbour.problem_id)} · task {_fmt(neighbour.task)}</div>"
        f"<p><b>Trained on:</b> {escape(neighbour.source)}</p>"
        f"<p><b>Target:</b></p><pre>{escape(neighbour.target)}</pre>"
        f"{teacher}" + (f'<ul class="verdicts">{verdicts}</ul>' if verdicts else "") + "</div>"
    )
