"""The report's plots, one PNG each, drawn from ``ReportData``.

Plots use matplotlib's object-oriented ``Figure`` (rendered by the Agg canvas, never pyplot), so no GUI
backend is touched and no figure outlives its ``savefig``. matplotlib is imported only when a report is
written: the rest of cotfactory runs without it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cotfactory.errors import ConfigError
from cotfactory.report.data import (
    Evaluation,
    FunnelStage,
    LossCurve,
    ReportData,
    RoundResult,
    Scores,
    StudentReport,
    TemperatureYield,
)

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def matplotlib_figure() -> type[Figure]:
    """matplotlib's ``Figure``; a clear error when matplotlib is not installed."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ConfigError("report: needs matplotlib; install it with `pip install matplotlib`") from None
    return Figure


def draw_plots(data: ReportData, out: Path, figure_class: type[Figure]) -> ReportData:
    """Draw every plot the data allows into ``out``; returns the data naming each PNG (relative to ``out``)."""
    plots: dict[str, str] = {}
    student_plots: dict[str, str] = {}

    def save(plot_id: str, figure: Figure) -> str:
        name = f"{plot_id}.png"
        figure.tight_layout()
        figure.savefig(out / name, dpi=100)
        plots[plot_id] = name
        return name

    if data.funnel:
        save("funnel", plot_funnel(figure_class(figsize=(7, 4)), data.funnel.stages))
    if data.agreement:
        save("agreement", plot_agreement(figure_class(figsize=(6, 3.5)), data.agreement))
    if data.scores:
        save("scores", plot_scores(figure_class(figsize=(6, 3.5)), data.scores))
    if data.yield_by_temperature:
        save("yield", plot_yield(figure_class(figsize=(6, 3.5)), data.yield_by_temperature))
    for index, student in enumerate(data.students):
        if student.loss:
            plot_id = f"loss_{index}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', student.name)}"
            figure = plot_loss(figure_class(figsize=(6, 3.5)), student.name, student.loss)
            student_plots[student.name] = save(plot_id, figure)
    if any(s.eval for s in data.students):
        save("accuracy", plot_accuracy(figure_class(figsize=(6, 3.5)), data.students))
    if data.rounds:
        save("rounds", plot_rounds(figure_class(figsize=(6, 3.5)), data.rounds))
    return data.with_plots(plots, student_plots)


def _annotated_bars(ax: Axes, labels: list[str], heights: Sequence[float], notes: list[str], color: str) -> None:
    """A bar per label, each with its note above it."""
    bars = ax.bar(labels, heights, color=color)
    for bar, note in zip(bars, notes, strict=True):
        ax.annotate(note, (bar.get_x() + bar.get_width() / 2, bar.get_height()), ha="center", va="bottom", fontsize=8)


def plot_funnel(figure: Figure, stages: list[FunnelStage]) -> Figure:
    ax = figure.add_subplot()
    notes = [f"{s.samples_out}\n{s.problems_out} problems" for s in stages]
    _annotated_bars(ax, [s.stage for s in stages], [s.samples_out for s in stages], notes, "#4c72b0")
    ax.set_ylim(0, max(1, max(s.samples_out for s in stages)) * 1.3)
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


def plot_scores(figure: Figure, scores: Scores) -> Figure:
    ax = figure.add_subplot()
    ax.hist(scores.values, bins=min(30, max(5, len(scores.values) // 3)), color="#c44e52", edgecolor="white")
    ax.set_xlabel(f"score ({scores.scorer or 'reward'})")
    ax.set_ylabel("samples")
    ax.set_title(f"score distribution: {scores.source}", fontsize=10)
    return figure


def plot_yield(figure: Figure, rows: list[TemperatureYield]) -> Figure:
    ax = figure.add_subplot()
    notes = [f"{r.correct}/{r.samples}" for r in rows]
    _annotated_bars(ax, [f"{r.temperature:g}" for r in rows], [r.fraction for r in rows], notes, "#8172b2")
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("temperature")
    ax.set_ylabel("fraction correct")
    ax.set_title("yield of correct samples per temperature")
    return figure


def plot_loss(figure: Figure, name: str, curves: dict[str, LossCurve]) -> Figure:
    from matplotlib.ticker import MaxNLocator

    ax = figure.add_subplot()
    for key, curve in curves.items():
        ax.plot(curve.steps, curve.values, marker="o", markersize=3, label=key, linewidth=2 if key == "loss" else 1)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.set_title(f"training loss: {name}")
    ax.legend(fontsize=8)
    return figure


def plot_accuracy(figure: Figure, students: list[StudentReport]) -> Figure:
    """Accuracy per student with its 95 % interval; the untrained base model's beside it when scored."""
    ax = figure.add_subplot()
    evaluated = [s for s in students if s.eval]
    before = any(s.untrained for s in evaluated)
    width = 0.38 if before else 0.6
    positions = list(range(len(evaluated)))
    series = [("after (trained)", "#dd8452", width / 2 if before else 0.0, [s.eval for s in evaluated])]
    if before:
        series.insert(0, ("before (untrained)", "#8c8c8c", -width / 2, [s.untrained for s in evaluated]))
    for label, color, offset, evaluations in series:
        shown = [(x + offset, e) for x, e in zip(positions, evaluations, strict=True) if e]
        xs = [x for x, _ in shown]
        values = [e.accuracy or 0.0 for _, e in shown]
        errors = [_error_bar(e) for _, e in shown]
        ax.bar(xs, values, width=width, color=color, label=label)
        ax.errorbar(xs, values, yerr=list(zip(*errors, strict=True)) or None, fmt="none", ecolor="#333", capsize=3)
        for x, value, (_, high) in zip(xs, values, errors, strict=True):
            ax.annotate(f"{value:.3f}", (x, value + high), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(positions, [f"{s.name}\n({s.method})" for s in evaluated])
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("accuracy (95 % interval)")
    ax.set_title("eval accuracy per student")
    if before:
        ax.legend(fontsize=8)
    return figure


def plot_rounds(figure: Figure, results: list[RoundResult]) -> Figure:
    """Held-out accuracy per hard-problem round, with its 95 % interval."""
    ax = figure.add_subplot()
    xs = [r.round for r in results]
    values = [r.evaluation.accuracy or 0.0 for r in results]
    errors = [_error_bar(r.evaluation) for r in results]
    ax.errorbar(xs, values, yerr=list(zip(*errors, strict=True)) or None, fmt="o-", color="#4c72b0", capsize=3)
    ax.set_xticks(xs)
    ax.set_xlabel("round")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("accuracy (95 % interval)")
    ax.set_title("held-out accuracy per round")
    return figure


def _error_bar(evaluation: Evaluation) -> tuple[float, float]:
    """Distances from the accuracy down to and up to its interval's bounds (0 without an interval)."""
    accuracy, interval = evaluation.accuracy or 0.0, evaluation.generated.interval
    if not interval:
        return (0.0, 0.0)
    return (max(0.0, accuracy - interval[0]), max(0.0, interval[1] - accuracy))
