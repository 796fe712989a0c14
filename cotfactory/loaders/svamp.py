"""SVAMP: one JSON array of math word problems split into ``Body`` and ``Question``."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from cotfactory.loaders.common import Entry, LoadOptions, entry, field, format_number, iter_json_array


def load_svamp(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """SVAMP.json: the question is ``Body + " " + Question``; the float Answer becomes "51" or "2.5"."""
    for where, record in iter_json_array(path):
        body = field(record, "Body", "string", where)
        question = field(record, "Question", "string", where)
        problem_id = str(field(record, "ID", "id", where))
        gold = format_number(field(record, "Answer", "number", where))
        metadata = {name.lower(): field(record, name, "string", where, required=False) for name in ("Equation", "Type")}
        text = re.sub(r" {2,}", " ", f"{body.strip()} {question.strip()}")
        yield entry(where, options, id=problem_id, question=text, gold=gold, answer_type="number", metadata=metadata)
