"""Teaching records: what a student learns from, read from a run, a JSONL file, a datasets folder,
or straight from a dataset that carries its own rationales (GSM8K solutions, StrategyQA decompositions)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from cotfactory.errors import DataError
from cotfactory.records import lettered_choices
from cotfactory.run_dir import RunDir

_SUBQUESTION_LINE = re.compile(r"^\s*(?P<q>[^\n]*?\?)\s*\*\*\s*(?P<a>.+?)\s*$", re.M)


class TeachingRecord(BaseModel):
    """One question with one rationale and the answer it reaches."""

    model_config = ConfigDict(extra="forbid")

    problem_id: str
    question: str
    answer: str = Field(description="The answer the rationale reaches (gold after the correct filter).")
    gold: str | None = None
    rationale: str = ""
    answer_type: str = "text"
    choices: list[str] | None = None
    mode: str = Field("sample", description="sample, contrastive, or counterfactual (SCOTT).")
    subquestions: list[tuple[str, str | None]] | None = Field(
        None, description="Socratic (sub-question, sub-answer) pairs; sub-answers may be unknown."
    )
    sample_key: str | None = Field(None, description="The teacher sample's request key (lineage), when from a run.")


def parse_subquestions(text: str) -> list[tuple[str, str]]:
    """'How many eggs? ** 16 - 3 = 13 eggs.' lines → [(question, answer)]."""
    return [(m.group("q").strip(), m.group("a").strip()) for m in _SUBQUESTION_LINE.finditer(text)]


def format_question(question: str, choices: list[str] | None) -> str:
    """The question as every student sees it; choices on one line as '(a) x (b) y'."""
    if not choices:
        return question
    return f"{question}\nAnswer Choices: {lettered_choices(choices)}"


def records_from_rows(rows: list[dict[str, Any]], source: str) -> list[TeachingRecord]:
    """Rows of filtered.jsonl / samples.jsonl / any JSONL with question, rationale, answer fields."""
    records = []
    for number, row in enumerate(rows, start=1):
        if "question" not in row or ("answer" not in row and "label" not in row):
            raise DataError(f"{source}:{number}: a teaching row needs 'question' and 'answer' fields")
        answer = row.get("answer") if row.get("answer") is not None else row.get("label")
        if answer is None:
            raise DataError(f"{source}:{number}: field 'answer' is empty")
        text = row.get("text") or ""
        subquestions = parse_subquestions(text) or None
        records.append(
            TeachingRecord(
                problem_id=str(row.get("problem_id", row.get("id", number))),
                question=row["question"],
                answer=str(answer),
                gold=row.get("gold", row.get("label")),
                rationale=row.get("rationale") or "",
                answer_type=row.get("answer_type") or "text",
                choices=row.get("choices"),
                mode=row.get("mode") or "sample",
                subquestions=subquestions,
                sample_key=row.get("key"),
            )
        )
    return records


def records_from_problems(problems: list[Any]) -> list[TeachingRecord]:
    """Problems whose dataset carries rationales: GSM8K solutions (and Socratic sub-questions),
    StrategyQA decompositions and facts, CommonsenseQA's human explanations."""
    records = []
    for problem in problems:
        meta = problem.metadata
        subquestions = None
        if meta.get("subquestions"):
            subquestions = [(s["question"], s["answer"]) for s in meta["subquestions"]]
        elif meta.get("decomposition"):
            subquestions = [(q, None) for q in meta["decomposition"]]
        rationale = meta.get("solution") or " ".join(meta.get("facts") or []) or meta.get("abstractive_explanation", "")
        records.append(
            TeachingRecord(
                problem_id=problem.id,
                question=problem.question,
                answer=problem.gold or "",
                gold=problem.gold,
                rationale=rationale,
                answer_type=problem.answer_type,
                choices=problem.choices,
                subquestions=subquestions,
            )
        )
    return records


def load_records(path: str, format: str | None = None) -> list[TeachingRecord]:
    """A run directory (its filtered.jsonl), a JSONL file, a datasets folder, or a dataset file read
    with a problem loader (``format``)."""
    location = Path(path)
    if format is not None:
        from cotfactory.problems import load_problems

        return records_from_problems(load_problems(format, location))
    if location.is_dir() and RunDir(location).filtered.exists():
        location = RunDir(location).filtered
    elif location.is_dir() and (location / "dataset_info.json").exists():
        import datasets

        return records_from_rows(list(datasets.load_from_disk(str(location))), str(location))
    elif location.is_dir():
        raise DataError(f"{location}: no filtered.jsonl (run `cotfactory filter` first) and not a datasets folder")
    if not location.exists():
        raise DataError(f"{location}: not found")
    rows = []
    with location.open("rb") as handle:
        for number, raw in enumerate(handle, start=1):
            try:
                line = raw.decode("utf-8")
                if line.strip():
                    rows.append(json.loads(line))
            except UnicodeDecodeError as exc:
                raise DataError(
                    f"{location}:{number}: not UTF-8 (byte {raw[exc.start]:#x} at column {exc.start + 1})"
                ) from None
            except json.JSONDecodeError as exc:
                raise DataError(f"{location}:{number}: not valid JSON ({exc.msg})") from None
    if not rows:
        raise DataError(f"{location}: no teaching records")
    return records_from_rows(rows, str(location))
