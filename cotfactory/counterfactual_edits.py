"""Counterfactual choice and yes/no problems written by a teacher (DISCO, Chen et al. 2023, adapted to
reasoning), and ``cotfactory augment``'s configuration.

For a problem with a gold label, ``--counterfactual N`` intended labels are drawn, seeded per problem: the
other choices in a seeded order (cycled when N is larger), or the flipped yes/no. The teacher is asked, with
the ``counterfactual-edit`` template, to rewrite the question as little as it can so that the intended label
becomes correct; the new question is read from its reply with the template's ``answer_pattern``. An edit is
kept only when it is verified: the teacher answers the new question ``votes`` times through the plain
generate path (the ``--template`` templates, e.g. zero-shot-cot), a strict majority of the answers agree, and
that majority is the intended label (so it also differs from the original gold). Every other edit is dropped
and its reason counted; RUN_DIR/checked.jsonl lists every edit with its votes and verdict.

Both rounds of teacher calls are ordinary ``generate`` runs, RUN_DIR/edit over RUN_DIR/edit_problems.jsonl
and RUN_DIR/verify over RUN_DIR/candidates.jsonl: stored, resumable, and a rerun with the same settings sends
nothing. A kept problem carries its origin: metadata ``origin`` (the problem's id), ``edit`` ("choice" or
"yes_no"), ``intended`` (its gold), ``original`` (the origin's gold) and ``votes`` (answer → samples).

Arithmetic problems need no teacher: ``run_augment`` hands them to :mod:`cotfactory.counterfactual`.
"""

from __future__ import annotations

import math
import random
import re
import sqlite3
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SerializeAsAny, field_validator, model_validator

from cotfactory.config.fields import argument, flag
from cotfactory.config.generate import GenerateConfig
from cotfactory.errors import ConfigError, DataError
from cotfactory.records import Problem
from cotfactory.teachers import teacher_options
from cotfactory.teachers.base import TeacherOptions

if TYPE_CHECKING:
    from rich.console import Console

    from cotfactory.generate import GenerateResult
    from cotfactory.prompts import Template

TEACHER_EDITS = ("choice", "yes_no")  # the answer types whose edits a teacher writes
FLIP = {"yes": "no", "no": "yes"}


class AugmentConfig(BaseModel):
    """Everything ``cotfactory augment`` needs; the teacher's flags and section load exactly as generate's."""

    model_config = ConfigDict(extra="forbid")

    input: str = Field(
        description="Problems file (SVAMP with its Equation, GSM8K with its annotations; cqa, esnli, strategyqa "
        "or a generic jsonl/csv of choice or yes/no problems).",
        json_schema_extra=argument(),
    )
    out: str = Field(description="JSONL of the new problems, for `generate --format jsonl`.")
    format: str = Field("svamp", description="Loader of the input.")
    answer_type: Literal["number", "choice", "yes_no", "text"] | None = Field(
        None, description="Generic jsonl/csv: answer type of every problem (default text)."
    )
    counterfactual: int = Field(1, ge=1, description="Counterfactual problems per problem.")
    limit: int | None = Field(None, ge=1, description="Use only the first N problems.")
    seed: int = Field(0, description="Seed of the new numbers and intended labels, and of the teacher's sampling.")
    run_dir: str | None = Field(
        None,
        description="Choice and yes/no problems: folder of the teacher's runs (edit/, verify/), stored and resumable.",
    )
    edit_template: str = Field(
        "counterfactual-edit", description="Template that asks for the edit (uses metadata.intended)."
    )
    templates: list[str] = Field(
        ["zero-shot-cot"],
        min_length=1,
        description="Templates the teacher answers the new questions with (the verification).",
        json_schema_extra=flag("template"),
    )
    votes: int = Field(5, ge=1, description="Verification samples per new question; a strict majority decides.")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="Sampling temperature of every teacher call.")
    max_tokens: int = Field(256, gt=0, description="Completion token limit of each teacher call.")
    prompts_dir: list[str] = Field([], description="Extra folders searched for templates before the bundled ones.")
    teacher: SerializeAsAny[TeacherOptions] = Field(
        default_factory=lambda: teacher_options({"kind": "hf"}),
        description="Teacher adapter and its options (choice and yes/no problems).",
    )

    @model_validator(mode="before")
    @classmethod
    def _teacher_section(cls, data: Any) -> Any:
        """The teacher's flat flags (--model, --replay, …) fold under ``teacher`` as generate's do (its own rule)."""
        return GenerateConfig._teacher_section.__func__(cls, data)  # type: ignore[attr-defined]

    @field_validator("teacher", mode="before")
    @classmethod
    def _adapter_options(cls, value: Any) -> Any:
        """A ``teacher:`` section is checked by the chosen adapter's options, as in generate."""
        return GenerateConfig._adapter_options(value)

    def generate_config(
        self, input: Path, answer_type: str, templates: list[str], samples: int, out: Path
    ) -> GenerateConfig:
        """The ``generate`` settings of one round of teacher calls."""
        return GenerateConfig(
            input=str(input),
            format="jsonl",
            answer_type=answer_type,
            templates=templates,
            prompts_dir=self.prompts_dir,
            temperatures=[self.temperature],
            seeds=[self.seed],
            samples_per_setting=samples,
            max_tokens=self.max_tokens,
            teacher=self.teacher,
            out=str(out),
        )


# --------------------------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class Slot:
    """One counterfactual to be made: which edit request writes it, and the label it is meant to have."""

    id: str  # the new problem's id: ORIGIN-cfJ
    origin: Problem
    edit_id: str  # the edit problem whose sample ``sample_index`` writes it
    sample_index: int
    intended: str


@dataclass
class EditPlan:
    edit_problems: list[Problem] = field(default_factory=list)  # one per (origin, intended label)
    slots: list[Slot] = field(default_factory=list)
    samples: int = 1  # edit samples per edit problem: the most slots any one label has
    skipped: Counter[str] = field(default_factory=Counter)  # reason → problems no edit is asked for


def plan_edits(problems: list[Problem], per_problem: int, seed: int = 0) -> EditPlan:
    """The edits to ask for: ``per_problem`` intended labels per problem, seeded per problem."""
    plan = EditPlan()
    for problem in problems:
        labels, reason = _other_labels(problem)
        if not labels:
            plan.skipped[reason] += 1
            continue
        random.Random(f"{seed}:{problem.id}").shuffle(labels)
        kind = problem.answer_type
        for index, label in enumerate(labels[:per_problem]):
            metadata = {"origin": problem.id, "edit": kind, "intended": label, "original": problem.gold}
            plan.edit_problems.append(
                Problem(id=f"{problem.id}-edit{index}", question=problem.question, answer_type="text",
                        choices=problem.choices, source=problem.source, metadata=metadata)
            )  # fmt: skip
        for j in range(per_problem):
            index = j % len(labels)
            slot = Slot(f"{problem.id}-cf{j}", problem, f"{problem.id}-edit{index}", j // len(labels), labels[index])
            plan.slots.append(slot)
        plan.samples = max(plan.samples, math.ceil(per_problem / len(labels)))
    return plan


def _other_labels(problem: Problem) -> tuple[list[str], str]:
    """The labels an edit may aim for, or why there is none."""
    if problem.answer_type not in TEACHER_EDITS:
        return [], f"answer type '{problem.answer_type}': no label for a teacher's edit to change"
    if problem.gold is None:
        return [], "no gold answer to change"
    if problem.answer_type == "yes_no":
        flipped = FLIP.get(problem.gold.strip().lower())
        return ([flipped], "") if flipped else ([], f"gold {problem.gold!r} is not yes or no")
    others = [choice for choice in problem.choices or [] if choice.strip().lower() != problem.gold.strip().lower()]
    return others, "no other choice to aim for"


# --------------------------------------------------------------------------------------------- the teacher's rounds


@dataclass
class EditResult:
    problems: list[Problem] = field(default_factory=list)  # the verified counterfactuals
    dropped: Counter[str] = field(default_factory=Counter)  # reason → edits made but not kept
    skipped: Counter[str] = field(default_factory=Counter)  # reason → problems no edit was asked for
    edit: GenerateResult | None = None  # the two generate runs (None when nothing was asked)
    verify: GenerateResult | None = None
    answer_type: str | None = None


@dataclass(frozen=True)
class _Candidate:
    slot: Slot
    question: str


def make_edits(problems: list[Problem], config: AugmentConfig, console: Console | None = None) -> EditResult:
    """Teacher-written counterfactuals of choice and yes/no problems, kept only when verified."""
    from cotfactory.prompts import load_template

    if config.run_dir is None:
        raise ConfigError("augment: choice and yes/no problems are edited by a teacher: give --run-dir")
    types = {p.answer_type for p in problems if p.answer_type in TEACHER_EDITS}
    if len(types) > 1:
        raise DataError(f"{config.input}: mixes answer types {sorted(types)}; augment one type at a time")
    template = _edit_template(load_template(config.edit_template, [Path(d) for d in config.prompts_dir]))
    run_dir = Path(config.run_dir)
    plan = plan_edits(problems, config.counterfactual, config.seed)
    result = EditResult(skipped=plan.skipped, answer_type=next(iter(types), None))
    if not plan.slots:
        return result
    edits, result.edit = _edit_round(plan, config, template, run_dir, console)
    candidates, checked = _read_edits(plan, edits, template.spec.answer_pattern or "", result.dropped)
    votes: dict[str, list[str | None]] = {}
    if candidates:
        votes, result.verify = _verify_round(candidates, config, result.answer_type or "text", run_dir, console)
    for candidate in candidates:
        answers = votes.get(candidate.slot.id, [])
        reason = verdict(answers, candidate.slot)
        checked[candidate.slot.id].update(votes=_tally(answers), kept=reason is None, reason=reason or "kept")
        if reason is None:
            result.problems.append(_kept_problem(candidate, answers))
        else:
            result.dropped[reason] += 1
    _write_rows(run_dir / "checked.jsonl", checked.values())
    return result


def _edit_template(template: Template) -> Template:
    if "metadata" not in template.variables_used:
        raise ConfigError(f"edit_template '{template.name}': does not use {{{{ metadata.intended }}}}")
    if not template.spec.answer_pattern:
        raise ConfigError(f"edit_template '{template.name}': has no answer_pattern to read the new question with")
    return template


def _edit_round(
    plan: EditPlan, config: AugmentConfig, template: Template, run_dir: Path, console: Console | None
) -> tuple[dict[tuple[str, int], dict[str, Any]], GenerateResult]:
    """The teacher's edits: (edit problem id, sample index) → its samples.jsonl row."""
    rows = ({"id": p.id, "question": p.question, "choices": p.choices, "metadata": p.metadata}
            for p in plan.edit_problems)  # fmt: skip
    source = _write_rows(run_dir / "edit_problems.jsonl", rows)
    generated = _generate(
        config.generate_config(source, "text", [str(template.path)], plan.samples, run_dir / "edit"), console
    )
    samples = _samples(run_dir / "edit")
    return {(row["problem_id"], row["sample_index"]): row for row in samples}, generated


def _read_edits(
    plan: EditPlan, edits: dict[tuple[str, int], dict[str, Any]], pattern: str, dropped: Counter[str]
) -> tuple[list[_Candidate], dict[str, dict[str, Any]]]:
    """The new questions that can go to verification; the others dropped with their reason."""
    candidates: list[_Candidate] = []
    checked: dict[str, dict[str, Any]] = {}
    seen: dict[str, set[str]] = defaultdict(set)
    for slot in plan.slots:
        question, reason = read_edit(edits.get((slot.edit_id, slot.sample_index)), slot.origin, pattern)
        if question is not None and _plain(question) in seen[slot.origin.id]:
            question, reason = None, "the edit repeats an earlier edit of the problem"
        checked[slot.id] = {"id": slot.id, "origin": slot.origin.id, "intended": slot.intended,
                            "original": slot.origin.gold, "question": question, "votes": {}, "kept": False,
                            "reason": reason or ""}  # fmt: skip
        if question is None:
            dropped[reason or ""] += 1
            continue
        seen[slot.origin.id].add(_plain(question))
        candidates.append(_Candidate(slot, question))
    return candidates, checked


def read_edit(row: dict[str, Any] | None, origin: Problem, pattern: str) -> tuple[str | None, str | None]:
    """(the new question, None), or (None, why the reply gives none)."""
    if row is None or row.get("error"):
        return None, "the teacher failed to write the edit"
    found = [match.group(1).strip() for match in re.finditer(pattern, row.get("text") or "", re.S)]
    if not found or not found[-1]:
        return None, "the edit cannot be read (no new question in the reply)"
    if _plain(found[-1]) == _plain(origin.question):
        return None, "the edit leaves the question unchanged"
    return found[-1], None


def _verify_round(
    candidates: list[_Candidate], config: AugmentConfig, answer_type: str, run_dir: Path, console: Console | None
) -> tuple[dict[str, list[str | None]], GenerateResult]:
    """The teacher's answers to each new question: new problem id → its samples' answers (None: failed)."""
    rows = ({"id": c.slot.id, "question": c.question, "choices": c.slot.origin.choices,
             "metadata": _origin_metadata(c.slot)} for c in candidates)  # fmt: skip
    source = _write_rows(run_dir / "candidates.jsonl", rows)
    generated = _generate(
        config.generate_config(source, answer_type, config.templates, config.votes, run_dir / "verify"), console
    )
    votes: dict[str, list[str | None]] = defaultdict(list)
    for row in _samples(run_dir / "verify"):
        votes[row["problem_id"]].append(None if row["error"] else row["answer"])
    return votes, generated


def verdict(answers: list[str | None], slot: Slot) -> str | None:
    """Why the teacher's answers to a new question do not verify it (None: verified). ``answers`` are
    normalized by answer type (a choice's text, yes/no); None is a sample without one."""
    from cotfactory.answers import answers_match

    given = [answer for answer in answers if answer is not None]
    if not given:
        return "no verification sample gives an answer"
    top, count = Counter(given).most_common(1)[0]
    if 2 * count <= len(answers):
        return "the teacher's answers disagree (no strict majority)"
    if answers_match(top, slot.origin.gold, slot.origin):
        return "the teacher still gives the original answer"
    if not answers_match(top, slot.intended, slot.origin):
        return "the teacher gives another label than the intended one"
    return None


def _kept_problem(candidate: _Candidate, answers: list[str | None]) -> Problem:
    slot = candidate.slot
    metadata = {**_origin_metadata(slot), "votes": _tally(answers)}
    return Problem(id=slot.id, question=candidate.question, gold=slot.intended, answer_type=slot.origin.answer_type,
                   choices=slot.origin.choices, source=slot.origin.source, metadata=metadata)  # fmt: skip


def _origin_metadata(slot: Slot) -> dict[str, Any]:
    return {"origin": slot.origin.id, "edit": slot.origin.answer_type, "intended": slot.intended,
            "original": slot.origin.gold}  # fmt: skip


def _tally(answers: list[str | None]) -> dict[str, int]:
    """answer → samples, most first ("" for samples without an answer)."""
    return dict(Counter("" if answer is None else answer for answer in answers).most_common())


def _plain(text: str) -> str:
    return " ".join(text.split()).casefold()


def _generate(config: GenerateConfig, console: Console | None) -> GenerateResult:
    """One round of teacher calls: a plain generate run (SQLite's errors name its store)."""
    from cotfactory.generate import run_generate

    try:
        return run_generate(config, console)
    except sqlite3.Error as exc:
        raise DataError(f"{Path(config.out) / 'store.sqlite'}: {exc}") from exc


def _samples(run: Path) -> list[dict[str, Any]]:
    """A generate run's samples in plan order (its export holds exactly the run's plan)."""
    from cotfactory.run_dir import RunDir, read_jsonl

    return list(read_jsonl(RunDir(run).samples))


def _write_rows(path: Path, rows: Any) -> Path:
    from cotfactory.run_dir import write_jsonl_atomic

    write_jsonl_atomic(path, rows)
    return path


# --------------------------------------------------------------------------------------------- augment


@dataclass
class AugmentResult:
    problems: list[Problem]  # the new problems, written to ``out``
    read: int  # problems of the input
    dropped: Counter[str]  # arithmetic: reason → problems none was kept for; teacher: reason → edits
    teacher: EditResult | None = None  # set when the teacher edited


def run_augment(config: AugmentConfig, console: Console | None = None) -> AugmentResult:
    """Read the input, make its counterfactuals (recomputed for arithmetic, teacher-written and verified for
    choice and yes/no problems), and write them to ``out`` as generic JSONL."""
    from cotfactory.counterfactual import make_counterfactuals, problem_rows
    from cotfactory.problems import load_problems

    problems = load_problems(config.format, config.input, limit=config.limit, answer_type=config.answer_type)
    if any(p.answer_type in TEACHER_EDITS for p in problems):
        edits = make_edits(problems, config, console)
        result = AugmentResult(edits.problems, len(problems), edits.dropped, edits)
    else:
        made = make_counterfactuals(problems, config.counterfactual, config.seed)
        result = AugmentResult(made.problems, len(problems), made.dropped)
    _write_rows(Path(config.out), problem_rows(result.problems))
    return result


def print_augment(result: AugmentResult, config: AugmentConfig, console: Console) -> None:
    origins = len({p.metadata["origin"] for p in result.problems})
    made = f"augment: {len(result.problems)} counterfactual problems from {origins} of {result.read}"
    edits = result.teacher
    if edits is None:
        console.print(f"{made}: {config.out}", soft_wrap=True)
        for reason, count in result.dropped.most_common():
            console.print(f"  none kept for {count}: {reason}", soft_wrap=True, highlight=False)
        return
    asked = sum(result.dropped.values()) + len(result.problems)
    console.print(f"{made} ({len(result.problems)} of {asked} teacher edits verified): {config.out}", soft_wrap=True)
    for name, run in (("edit", edits.edit), ("verify", edits.verify)):
        if run is not None:
            console.print(
                f"  {name}: {run.requests_sent} requests sent, {run.stored} samples stored, "
                f"{run.failed_count} failed: {run.run_dir}",
                soft_wrap=True,
                highlight=False,
            )
    for reason, count in result.dropped.most_common():
        console.print(f"  dropped {count}: {reason}", soft_wrap=True, highlight=False)
    for reason, count in edits.skipped.most_common():
        console.print(f"  not edited, {count} problems: {reason}", soft_wrap=True, highlight=False)
    if result.problems:
        console.print(
            f"  generate them with --format jsonl --answer-type {edits.answer_type}; every edit's votes and "
            f"verdict: {Path(config.run_dir or '') / 'checked.jsonl'}",
            soft_wrap=True,
            highlight=False,
        )
