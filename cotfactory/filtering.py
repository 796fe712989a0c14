"""``cotfactory filter``: decide which samples a student may learn from, and record why.

Reads a run directory's store (never the teacher), re-extracts answers with the current extractor,
scores samples where a reward is asked for (cached in the store by scorer identity, so a new
threshold never re-scores), then runs the filters problem by problem — memory is bounded by one
problem's samples — and writes ``filtered.jsonl``, a ``filtered/`` datasets folder and
``funnel.json``. Every verdict, kept or dropped, is stored in the store's ``verdicts`` table.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from cotfactory import answers
from cotfactory.config.filter import FilterConfig
from cotfactory.console import make_console
from cotfactory.errors import DataError
from cotfactory.export import sample_row, write_dataset_atomic
from cotfactory.filters import FILTERS
from cotfactory.filters.base import Filter, ProblemGroup
from cotfactory.prompts import TemplateError, load_template
from cotfactory.records import Problem, Sample, Verdict
from cotfactory.run_dir import RunDir, write_json_atomic, write_jsonl_atomic
from cotfactory.scorers import make_scorer
from cotfactory.scorers.base import ScoreItem, Scorer
from cotfactory.store import Store


def build_filters(config: FilterConfig) -> list[Filter]:
    """The filters the config turns on, in its chain's order."""
    built = (FILTERS.get(name).from_config(config) for name in config.chain)
    return [stage for stage in built if stage is not None]


#: drop reasons whose cause is in the text's ending: the funnel keeps a few endings of each to show why
EXPLAINED_REASONS = ("no_answer", "wrong_answer")
EXAMPLES_KEPT = 5  # per reason, in funnel.json
ENDING_CHARS = 120


@dataclass
class DropExample:
    """One dropped sample, as the funnel shows it: where its text ends and what was read there."""

    sample_key: str
    ending: str  # the last ENDING_CHARS characters of the text, the invented next turn included
    answer: str | None
    label: str | None

    @classmethod
    def of(cls, sample: Sample, label: str | None) -> DropExample:
        text = " ".join(sample.text.split())
        ending = text if len(text) <= ENDING_CHARS else "…" + text[-ENDING_CHARS:]
        return cls(sample.key, ending, sample.answer, label)


@dataclass
class StageCount:
    stage: str
    samples_in: int = 0
    samples_out: int = 0
    problems_out: int = 0
    dropped: Counter = field(default_factory=Counter)
    examples: dict[str, list[DropExample]] = field(default_factory=dict)
    examples_kept: int = EXAMPLES_KEPT

    def note_drop(self, verdict: Verdict, sample: Sample, label: str | None) -> None:
        self.dropped[verdict.reason] += 1
        if verdict.reason in EXPLAINED_REASONS:
            shown = self.examples.setdefault(verdict.reason, [])
            if len(shown) < self.examples_kept:
                shown.append(DropExample.of(sample, label))

    def as_dict(self) -> dict[str, Any]:
        return {
            "stage": self.stage,
            "samples_in": self.samples_in,
            "samples_out": self.samples_out,
            "problems_out": self.problems_out,
            "dropped": dict(self.dropped),
            "examples": {reason: [asdict(e) for e in shown] for reason, shown in self.examples.items()},
        }


@dataclass
class FilterResult:
    run_dir: Path
    funnel: list[StageCount]
    kept: int
    scored_now: int
    explain: int = 0  # example endings printed per reason


def run_filter(config: FilterConfig, console: Console | None = None) -> FilterResult:
    console = console or make_console(stderr=True)
    run_dir = RunDir(config.run_dir)
    _check_samples_file(run_dir)
    stages = build_filters(config)
    scorer = make_scorer(config) if config.reward is not None else None  # fails here, before any write
    run_dir.remove_stale_temporaries([run_dir.filtered, run_dir.filtered_dataset, run_dir.funnel])  # a killed run's
    with Store(run_dir.store) as store:
        patterns = _answer_patterns(store)
        scored_now = _score_missing(store, scorer, _groups(store, run_dir, patterns), console, config.reward_batch_size)
        kept_examples = max(EXAMPLES_KEPT, config.explain)
        funnel = [StageCount("input")] + [StageCount(stage.name, examples_kept=kept_examples) for stage in stages]
        store.clear_verdicts()
        rows = (
            row
            for problem, samples in _groups(store, run_dir, patterns)
            for row in _filter_problem(problem, samples, stages, funnel, store, scorer)
        )
        kept = write_jsonl_atomic(run_dir.filtered, rows)  # streamed: one problem in memory at a time
        write_dataset_atomic(run_dir.filtered, run_dir.filtered_dataset)
        write_json_atomic(run_dir.funnel, {"config": config.model_dump(), "stages": [c.as_dict() for c in funnel]})
        store.set_meta("filter_config", config.model_dump())
    return FilterResult(run_dir.path, funnel, kept, scored_now, config.explain)


def _filter_problem(
    problem: Problem,
    samples: list[Sample],
    stages: list[Filter],
    funnel: list[StageCount],
    store: Store,
    scorer: Scorer | None,
) -> list[dict[str, Any]]:
    """Run every stage on one problem; count the funnel, store the verdicts, return the kept rows."""
    cached = store.scores(scorer.identity, [s.key for s in samples]) if scorer else {}
    group = ProblemGroup(
        problem, samples, list(samples), {s.key: cached.get(s.key, (None, {}))[0] for s in samples}, label=problem.gold
    )
    funnel[0].samples_in += len(samples)
    funnel[0].samples_out += len(samples)
    funnel[0].problems_out += bool(samples)
    by_key: dict[str, dict[str, Verdict]] = {s.key: {} for s in samples}
    for stage in stages:  # per-problem facts first (the pseudo-label), then the chain in order
        stage.establish(group)
    for stage, count in zip(stages, funnel[1:], strict=True):
        count.samples_in += len(group.survivors)
        verdicts = stage.apply(group)
        store.add_verdicts(verdicts)
        samples_by_key = {s.key: s for s in group.survivors}
        for verdict in verdicts:
            by_key[verdict.sample_key][stage.name] = verdict
            if not verdict.keep:
                count.note_drop(verdict, samples_by_key[verdict.sample_key], group.label)
        kept = {v.sample_key for v in verdicts if v.keep}
        group.survivors = [s for s in group.survivors if s.key in kept]
        count.samples_out += len(group.survivors)
        count.problems_out += bool(group.survivors)
    return [_filtered_row(sample, group, by_key[sample.key]) for sample in group.survivors]


def _check_samples_file(run_dir: RunDir) -> None:
    """Fail before anything is written when the run directory or its samples.jsonl cannot be filtered."""
    if not run_dir.has_store():
        raise DataError(
            f"{run_dir.path}: not a run directory (no {run_dir.store.name}); make one with `cotfactory generate`"
        )
    path = run_dir.samples
    if not path.exists():
        raise DataError(f"{path}: missing; run `cotfactory generate` on this run directory to finish it")
    if next(_sample_lines(path), None) is None:
        raise DataError(f"{path}: no samples to filter")
    for _ in _sample_lines(path):  # every line is checked up front: a bad one fails here, not half-way
        pass


def _sample_lines(path: Path) -> Iterator[tuple[str, str]]:
    """(key, problem_id) of each line of samples.jsonl, streamed."""
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
                yield row["key"], row["problem_id"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise DataError(f"{path}:{number}: not a sample line ({exc})") from None


def _problem_keys(path: Path) -> Iterator[tuple[str, list[str]]]:
    """samples.jsonl problem by problem (it is written in plan order, problem-major): (problem id, its keys)."""
    current: str | None = None
    keys: dict[str, None] = {}
    for key, problem_id in _sample_lines(path):
        if problem_id != current:
            if current is not None:
                yield current, list(keys)
            current, keys = problem_id, {}
        keys[key] = None
    if current is not None:
        yield current, list(keys)


def _answer_patterns(store: Store) -> dict[str, str | None]:
    """Template name → its declared answer pattern, for the templates of this run that still load."""
    config = store.get_meta("config") or {}
    patterns: dict[str, str | None] = {}
    for name in config.get("templates", []):
        try:
            template = load_template(name, [Path(d) for d in config.get("prompts_dir", [])])
        except TemplateError:
            continue
        patterns[template.name] = template.spec.answer_pattern
    return patterns


def _groups(store: Store, run_dir: RunDir, patterns: dict[str, str | None]) -> Iterator[tuple[Problem, list[Sample]]]:
    """Each problem with its samples of the current plan, in plan order, answers re-extracted."""
    for problem_id, keys in _problem_keys(run_dir.samples):
        problem = store.problem(problem_id)
        if problem is None:
            raise DataError(f"store: problem '{problem_id}' of samples.jsonl is missing from the store")
        samples = [s for s in store.samples(keys) if s.request.problem_id == problem_id]
        for sample in samples:
            answers.fill_answer(sample, problem, patterns.get(sample.request.template))
        yield problem, samples


def _score_missing(
    store: Store,
    scorer: Scorer | None,
    groups: Iterator[tuple[Problem, list[Sample]]],
    console: Console,
    batch_size: int,
) -> int:
    """Score every sample the cache lacks, in batches; returns how many were scored now."""
    if scorer is None:
        return 0
    cached = set(store.scores(scorer.identity))
    batch: list[ScoreItem] = []
    done = 0

    def flush() -> None:
        nonlocal done
        results = scorer.score(batch)
        store.put_scores(
            scorer.identity,
            ((item.sample.key, score, details) for item, (score, details) in zip(batch, results, strict=True)),
        )
        done += len(batch)
        batch.clear()

    with Progress(console=console, transient=False) as progress:
        task = progress.add_task(f"score ({scorer.name})", total=None)
        for problem, samples in groups:
            for sample in samples:
                if sample.key not in cached and not sample.failed:
                    batch.append(ScoreItem(problem, sample))
                    if len(batch) >= batch_size:
                        flush()
                        progress.update(task, completed=done)
        if batch:
            flush()
        progress.update(task, completed=done, total=done)
    return done


def _filtered_row(sample: Sample, group: ProblemGroup, verdicts: dict[str, Verdict]) -> dict[str, Any]:
    row = sample_row(sample, group.problem)
    label = group.problem.gold if group.problem.gold is not None else group.label
    row.update(
        {
            "label": label,
            "pseudo_label": group.problem.gold is None and label is not None,
            "reward": group.scores.get(sample.key),
            "verdicts": {name: {"keep": v.keep, "reason": v.reason, "score": v.score} for name, v in verdicts.items()},
        }
    )
    return row


def print_funnel(result: FilterResult, console: Console) -> None:
    console.print(f"filter: {result.run_dir}", soft_wrap=True, highlight=False)  # whole, even when piped
    table = Table()
    for column in ("stage", "in", "out", "problems", "dropped"):
        table.add_column(column)
    for count in result.funnel:
        dropped = ", ".join(f"{reason} {n}" for reason, n in count.dropped.most_common())
        table.add_row(count.stage, str(count.samples_in), str(count.samples_out), str(count.problems_out), dropped)
    console.print(table)
    for count in result.funnel:
        for reason, shown in count.examples.items():
            if result.explain:
                console.print(f"[bold]{count.stage}: {reason}[/bold] — how the texts end:")
            for example in shown[: result.explain]:
                read = f"read {example.answer!r}" + (f", label {example.label!r}" if reason == "wrong_answer" else "")
                console.print(f"  {example.ending}", markup=False, highlight=False, soft_wrap=True)
                console.print(f"    → {read}", markup=False, highlight=False, style="dim")
    if result.scored_now:
        console.print(f"scored {result.scored_now} samples (cached for the next run)")
    console.print(f"kept: {RunDir(result.run_dir).filtered}", soft_wrap=True)
