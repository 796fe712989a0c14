"""The generic formats, ``jsonl`` and ``csv``: any file, its fields named by the ``LoadOptions`` mapping."""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cotfactory.loaders.common import (
    Entry,
    LoadOptions,
    Where,
    field,
    format_number,
    is_number,
    iter_jsonl,
    iter_text_lines,
    make_problem,
    number_text,
    yes_no,
)
from cotfactory.records import Problem


def load_jsonl(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """Any JSON Lines file; fields named by the mapping, choices as a JSON list of strings."""
    for position, (where, record) in enumerate(iter_jsonl(path)):
        yield where, _generic_problem(record, where, position, path, options)


def load_csv(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """A CSV file with a header row; choices as one ``|``-separated cell; empty cells count as absent."""
    lines = _LineCounter(iter_text_lines(path))
    reader = csv.reader(lines)
    try:
        header = next(reader, None)
        if header is None:
            return
        _check_csv_header(header, Where(str(path), line=1), options)
        position = 0
        start = lines.count + 1
        for row in reader:
            where = Where(str(path), line=start)
            start = lines.count + 1
            if not row:
                continue
            if len(row) != len(header):
                raise where.error(f"row has {len(row)} fields, the header has {len(header)}")
            cells = zip(header, row, strict=True)
            record: dict[str, Any] = {name: value for name, value in cells if value.strip()}
            if options.choices_field in record:
                record[options.choices_field] = [c.strip() for c in record[options.choices_field].split("|")]
            yield where, _generic_problem(record, where, position, path, options)
            position += 1
    except csv.Error as err:
        raise Where(str(path), line=lines.count).error(f"not valid CSV ({err})") from None


def _generic_problem(
    record: Mapping[str, Any], where: Where, position: int, path: Path, options: LoadOptions
) -> Problem:
    """One problem of a generic file, through the field mapping of ``options``."""
    answer_type = options.answer_type or "text"
    given_id = field(record, options.id_field, "id", where, required=False)
    gold = None
    if options.answer_field is not None:
        value = field(record, options.answer_field, "scalar", where, required=False)
        gold = None if value is None else _gold_text(value, answer_type, options.answer_field, where)
    choices = field(record, options.choices_field, "strings", where, required=answer_type == "choice")
    metadata = record.get("metadata")  # e.g. a counterfactual problem's origin (cotfactory augment)
    if metadata is not None and not isinstance(metadata, dict):
        raise where.error(f"field 'metadata' must be an object, got {type(metadata).__name__}")
    return make_problem(
        where,
        id=f"{path.stem}-{position}" if given_id is None else str(given_id),
        question=field(record, options.question_field, "string", where),
        gold=gold,
        answer_type=answer_type,
        choices=choices,
        source=options.source,
        metadata=metadata or {},
    )


def _gold_text(value: Any, answer_type: str, name: str, where: Where) -> str:
    """A generic answer value as gold text: numbers formatted, booleans as yes/no."""
    if isinstance(value, bool):
        return yes_no(value)
    if is_number(value):
        return format_number(value)
    text = str(value).strip()
    if answer_type == "number":
        return number_text(text)
    if answer_type == "yes_no":
        word = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}.get(text.lower())
        if word is None:
            raise where.error(f"field {name!r} must be yes/no for answer_type 'yes_no', got {text!r}")
        return word
    return text


class _LineCounter:
    """Feeds decoded lines to ``csv.reader`` and remembers how many it has handed out."""

    def __init__(self, lines: Iterator[tuple[int, str]]):
        self._lines = lines
        self.count = 0

    def __iter__(self) -> _LineCounter:
        return self

    def __next__(self) -> str:
        self.count, text = next(self._lines)
        return text


def _check_csv_header(header: list[str], where: Where, options: LoadOptions) -> None:
    """The columns the mapping needs must be in the header (checked once, before the first row)."""
    needed = [options.question_field]
    if options.answer_type == "choice":
        needed.append(options.choices_field)
    for name in needed:
        if name not in header:
            raise where.error(f"missing column {name!r} (columns: {', '.join(header)})")
