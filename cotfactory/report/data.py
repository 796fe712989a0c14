"""What the report shows, as typed records: every number and text the plots and the page are drawn from.

``ReportData.to_json()`` is the content of ``report/report.json`` (users and tests read it), so each
record's fields keep the names and order of that file's keys. Reading a run directory into these records
is ``read.py``'s job; nothing here touches a file.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from typing import Any

from cotfactory.lineage import Judgement


@dataclass(frozen=True)
class FunnelStage:
    """One filter stage of ``funnel.json``: samples in and out, problems left, and why the rest went."""

    stage: str
    samples_in: int
    samples_out: int
    problems_out: int
    dropped: dict[str, int]


@dataclass(frozen=True)
class Funnel:
    reward: str | None  # the reward scorer the filter ran with, if any
    stages: list[FunnelStage]


@dataclass(frozen=True)
class Summary:
    samples: int
    problems: int
    failed: int
    kept: int | None  # None: the run was never filtered
    students: int
    accuracy: dict[str, float | None]  # student name → eval accuracy, for the students that were evaluated


@dataclass(frozen=True)
class Scores:
    """Reward (or answer-gain) scores of samples, and where they were read from."""

    scorer: str | None
    source: str
    values: list[float]


@dataclass(frozen=True)
class TemperatureYield:
    """Samples of problems with a gold answer at one temperature, and how many match it."""

    temperature: float
    samples: int
    correct: int
    fraction: float


@dataclass(frozen=True)
class LossCurve:
    """One loss (``loss`` or ``loss_<task>``) over the training steps that logged it."""

    steps: list[int] = field(default_factory=list)  # filled step by step as metrics.jsonl is read
    values: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class Score:
    """One way of judging the held-out answers: how many were right, the fraction, its 95 % interval."""

    correct: int | None
    accuracy: float | None
    interval: list[float] | None


RANKINGS = ("ranked", "ranked_norm")  # log-likelihood rankings of the choices, raw and length-normalised


@dataclass(frozen=True)
class Evaluation:
    """A student's ``eval.json`` (or its untrained base model's), as the report shows it."""

    total: int | None
    generated: Score  # the answers the student wrote
    rationale_agreement: float | None
    rationale_accuracy: float | None
    ranked: dict[str, Score] = field(default_factory=dict)  # RANKINGS name → score, for those eval.json has

    @property
    def accuracy(self) -> float | None:
        return self.generated.accuracy

    def score(self, ranking: str | None) -> Score | None:
        """The generated answers' score (``ranking`` None) or a ranking's; None when it was not measured."""
        return self.generated if ranking is None else self.ranked.get(ranking)

    def to_json(self) -> dict[str, Any]:
        """eval.json's flat layout: ``correct``, ``accuracy``, ``interval``, then ``ranked_correct``, …"""
        numbers: dict[str, Any] = {
            "total": self.total,
            "correct": self.generated.correct,
            "accuracy": self.generated.accuracy,
            "rationale_agreement": self.rationale_agreement,
            "rationale_accuracy": self.rationale_accuracy,
            "interval": self.generated.interval,
        }
        for ranking, score in self.ranked.items():
            numbers |= {f"{ranking}_{key}": value for key, value in asdict(score).items()}
        return numbers


@dataclass(frozen=True)
class StudentReport:
    """A ``students/NAME/`` folder: its method, loss curves, and its eval before and after training."""

    name: str
    method: str | None
    loss: dict[str, LossCurve]  # "loss" first, then "loss_<task>"
    eval: Evaluation | None
    untrained: Evaluation | None  # the base model scored untrained on the same problems: the "before"
    plot: str | None = None  # the loss plot's file name, once drawn

    def to_json(self) -> dict[str, Any]:
        numbers: dict[str, Any] = {
            "name": self.name,
            "method": self.method,
            "loss": {key: asdict(curve) for key, curve in self.loss.items()},
            "eval": self.eval.to_json() if self.eval else None,
            "untrained": self.untrained.to_json() if self.untrained else None,
        }
        if self.plot is not None:
            numbers["plot"] = self.plot
        return numbers


@dataclass(frozen=True)
class Example:
    """A sample shown on the page: kept, or dropped by ``filter`` for ``reason``."""

    key: str
    problem_id: str
    question: str
    gold: str | None
    answer: str | None
    temperature: float | None
    rationale: str  # truncated
    filter: str | None
    reason: str  # "kept" when kept


@dataclass(frozen=True)
class Examples:
    """A few kept and a few dropped samples, chosen to vary in problem and drop reason."""

    kept: list[Example]
    dropped: list[Example]


@dataclass(frozen=True)
class SampleExcerpt:
    """The teacher sample behind a training example (its text truncated)."""

    text: str
    answer: str | None
    temperature: float | None


@dataclass(frozen=True)
class NeighbourReport:
    """A training example near a wrong held-out problem (texts truncated), with its teacher sample and verdicts."""

    similarity: float
    same_problem: bool
    problem_id: str
    task: str
    source: str
    target: str
    sample_key: str
    sample: SampleExcerpt | None
    verdicts: list[Judgement]


@dataclass(frozen=True)
class FailureReport:
    """A held-out problem the student answered wrong, with the training examples nearest to it."""

    problem_id: str
    question: str
    choices: list[str] | None
    gold: str | None
    prediction: str | None
    rationale: str  # truncated
    ranked: str | None
    ranked_correct: bool | None
    in_training: bool
    neighbours: list[NeighbourReport]


@dataclass(frozen=True)
class StudentErrorsReport:
    """A student's first wrong held-out problems (see ``cotfactory.lineage.StudentErrors``)."""

    student: str
    total: int
    wrong: int
    ranked_wrong: int | None
    examples: int
    failures: list[FailureReport]


@dataclass(frozen=True)
class TeacherBudget:
    """What adaptive sampling and rationalization did with the teacher (generate --until-*, --rationalize-failures)."""

    rule: str | None  # e.g. "until-correct 2, at most 8 a problem"; None: the fixed grid
    samples: int  # drawn by sampling (rationalizations apart)
    grid_samples: int  # what the fixed grid at the cap draws for the same problems
    tokens: int  # prompt + completion tokens of those samples
    grid_tokens: int  # the grid's, estimated at the same mean tokens per sample
    rationalized: int  # problems asked for a rationale of their gold answer (every sample missed it)
    rescued: int  # of those, the ones whose rationale reached the gold answer


@dataclass(frozen=True)
class RoundResult:
    """One hard-problem round's student on the held-out problems (round 0: the pipeline's first student)."""

    round: int
    hard_problems: int  # pool problems sampled again this round: wrong + disagree
    evaluation: Evaluation
    wrong: int = 0  # with gold: the previous student's answer was wrong
    disagree: int = 0  # without gold: its answer differed from the teacher's majority
    new_problems: int | None = None  # new problems kept (None: the round wrote none, no problem_template)
    records: int | None = None  # records its student trained on (round 0: the run's filtered samples)


@dataclass(frozen=True)
class ReportData:
    """Every number and text of the report. ``plots`` (plot id → PNG file name) is filled once drawn."""

    run: str
    summary: Summary
    funnel: Funnel | None
    agreement: list[float]  # consistency agreement ratio per problem, in plan order
    scores: Scores | None
    yield_by_temperature: list[TemperatureYield]
    students: list[StudentReport]
    examples: Examples
    errors: list[StudentErrorsReport]
    budget: TeacherBudget | None = None
    rounds: list[RoundResult] = field(default_factory=list)
    plots: dict[str, str] = field(default_factory=dict)

    def with_plots(self, plots: dict[str, str], student_plots: dict[str, str]) -> ReportData:
        """A copy naming the drawn plots; ``student_plots`` maps a student's name to its loss plot."""
        students = [replace(s, plot=student_plots.get(s.name, s.plot)) for s in self.students]
        return replace(self, plots=dict(plots), students=students)

    def to_json(self) -> dict[str, Any]:
        """The content of ``report.json``."""
        return {
            "run": self.run,
            "summary": asdict(self.summary),
            "funnel": asdict(self.funnel) if self.funnel else None,
            "agreement": list(self.agreement),
            "scores": asdict(self.scores) if self.scores else None,
            "yield_by_temperature": [asdict(row) for row in self.yield_by_temperature],
            "students": [student.to_json() for student in self.students],
            "examples": asdict(self.examples),
            "errors": [asdict(errors) for errors in self.errors],
            "budget": asdict(self.budget) if self.budget else None,
            "rounds": [asdict(r) for r in self.rounds],
            "plots": dict(self.plots),
        }
