"""StrategyQA: one JSON array of yes/no questions with their facts and decomposition."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cotfactory.loaders.common import Entry, LoadOptions, entry, field, iter_json_array, yes_no


def load_strategyqa(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """The boolean answer becomes "yes"/"no" (None in the answerless test set)."""
    for where, record in iter_json_array(path):
        answer = field(record, "answer", "boolean", where, required=False)
        gold = None if answer is None else yes_no(answer)
        problem_id = str(field(record, "qid", "id", where))
        question = field(record, "question", "string", where)
        lists = {
            name: field(record, name, "strings", where, required=False) or [] for name in ("facts", "decomposition")
        }
        yield entry(where, options, id=problem_id, question=question, gold=gold, answer_type="yes_no", metadata=lists)
