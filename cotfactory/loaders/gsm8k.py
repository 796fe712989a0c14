"""GSM8K (main and socratic), JSON Lines: the gold answer follows the last ``#### ``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from cotfactory.loaders.common import Entry, LoadOptions, entry, field, iter_jsonl, number_text

_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def load_gsm8k(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """GSM8K JSONL: the gold follows the last ``#### ``; the worked solution goes to metadata."""
    for position, (where, record) in enumerate(iter_jsonl(path)):
        question = field(record, "question", "string", where)
        answer = field(record, "answer", "string", where)
        solution, marker, final = answer.rpartition("#### ")
        if not marker:
            raise where.error("field 'answer' has no '#### ' before the final answer")
        gold = number_text(final)
        if not _NUMBER.fullmatch(gold):
            raise where.error(f"the final answer after '#### ' is not a number: {final.strip()!r}")
        metadata: dict[str, Any] = {"solution": solution.strip()}
        subquestions = _socratic_steps(solution)
        if subquestions:
            metadata["subquestions"] = subquestions
        given_id = field(record, "id", "id", where, required=False)
        problem_id = f"gsm8k-{position}" if given_id is None else str(given_id)
        yield entry(
            where, options, id=problem_id, question=question, gold=gold, answer_type="number", metadata=metadata
        )


def _socratic_steps(solution: str) -> list[dict[str, str]]:
    """The socratic variant writes every step as ``sub-question ** sub-answer``; else []."""
    lines = [line for line in solution.strip().split("\n") if line.strip()]
    if not lines or not all(" ** " in line for line in lines):
        return []
    steps = [line.split(" ** ", 1) for line in lines]
    return [{"question": q.strip(), "answer": a.strip()} for q, a in steps]
