"""CommonsenseQA as released with Distilling Step-by-Step (JSON Lines despite the .json name)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cotfactory.loaders.common import Entry, LoadOptions, entry, field, iter_jsonl, split_from_name


def load_cqa(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """One multiple-choice question a line; the answer must be one of its choices.

    ``metadata.index`` is the 0-based position in the file: the PaLM rationale files are aligned by it.
    """
    split = split_from_name(path)
    for position, (where, record) in enumerate(iter_jsonl(path)):
        choices = field(record, "choices", "strings", where)
        answer = field(record, "answer", "string", where)
        if choices and answer not in choices:
            raise where.error(f"answer {answer!r} is not one of the choices {choices}")
        problem_id = str(field(record, "id", "id", where))
        question = field(record, "question", "string", where)
        explanation = field(record, "abstractive_explanation", "string", where, required=False) or ""
        metadata = {"index": position, "split": split, "abstractive_explanation": explanation}
        yield entry(
            where,
            options,
            id=problem_id,
            question=question,
            gold=answer,
            answer_type="choice",
            choices=choices,
            metadata=metadata,
        )
