"""What every dataset loader shares: the place of a record, reading files, and checking fields.

JSON Lines and CSV are read line by line from bytes: nothing holds the whole file as one string,
and a bad UTF-8 byte is reported with its line and file offset. JSON arrays (SVAMP, StrategyQA)
are parsed whole, as their format requires.

This module imports nothing from ``cotfactory.problems``, so that ``problems`` can import it and
each loader module can import it without a cycle.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from cotfactory.errors import DataError
from cotfactory.records import Problem

_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class Where:
    """A place in an input file, printed as error messages name it: ``file``, ``file:3``, ``file[3]``."""

    path: str
    line: int | None = None  # 1-based, for line-oriented files
    element: int | None = None  # 0-based index, for JSON arrays

    def __str__(self) -> str:
        if self.line is not None:
            return f"{self.path}:{self.line}"
        if self.element is not None:
            return f"{self.path}[{self.element}]"
        return self.path

    def brief(self) -> str:
        """The place without the file name, for messages that point back to an earlier record."""
        if self.line is not None:
            return f"on line {self.line}"
        return f"at [{self.element}]"

    def error(self, message: str) -> DataError:
        return DataError(f"{self}: {message}")


@dataclass(frozen=True)
class LoadOptions:
    """What a loader needs beyond the path: the source label and the generic field mapping."""

    source: str
    question_field: str = "question"
    answer_field: str | None = "answer"
    id_field: str = "id"
    choices_field: str = "choices"
    answer_type: str | None = None


Entry = tuple[Where, Problem]
Loader = Callable[[Path, LoadOptions], Iterator[Entry]]
"""A loader: a generator of ``(Where, Problem)`` pairs in file order."""


# -- reading --------------------------------------------------------------------------------------


def _open_binary(path: Path) -> IO[bytes]:
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise DataError(f"{path}: is a directory, not a file") from None
    except OSError as err:
        raise DataError(f"{path}: cannot read ({err.strerror or err})") from None


def _not_utf8(where: Where, data: bytes, err: UnicodeDecodeError, offset: int) -> DataError:
    return where.error(f"not UTF-8 (byte 0x{data[err.start]:02x} at offset {offset + err.start})")


def iter_text_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(1-based line number, decoded line with its newline), decoding one line at a time."""
    offset = 0
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(_BOM):
                raw = raw[len(_BOM) :]
                offset += len(_BOM)
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise _not_utf8(Where(str(path), line=number), raw, err, offset) from None
            yield number, text
            offset += len(raw)


def iter_jsonl(path: Path) -> Iterator[tuple[Where, dict[str, Any]]]:
    """The JSON objects of a JSON Lines file; blank lines are skipped."""
    for number, text in iter_text_lines(path):
        if not text.strip():
            continue
        where = Where(str(path), line=number)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise where.error(f"not valid JSON ({err.msg})") from None
        if not isinstance(value, dict):
            raise where.error(f"expected a JSON object, got {describe(value)}")
        yield where, value


def iter_json_array(path: Path) -> Iterator[tuple[Where, dict[str, Any]]]:
    """The objects of a file holding one JSON array (parsed whole: the format needs it)."""
    with _open_binary(path) as handle:
        data = handle.read()
    skip = len(_BOM) if data.startswith(_BOM) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as err:
        raise _not_utf8(Where(str(path)), data[skip:], err, skip) from None
    if not text.strip():
        return
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " - is this JSON Lines? this format needs one JSON array" if err.msg == "Extra data" else ""
        raise Where(str(path), line=err.lineno).error(f"not valid JSON ({err.msg}){hint}") from None
    if not isinstance(value, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {describe(value)}")
    for index, element in enumerate(value):
        where = Where(str(path), element=index)
        if not isinstance(element, dict):
            raise where.error(f"expected a JSON object, got {describe(element)}")
        yield where, element


def split_from_name(path: Path) -> str:
    """``cqa_train.json`` → "train", ``test_sample.json`` → "test", else ""."""
    words = re.split(r"[^a-z]+", path.stem.lower())
    return next((word for word in words if word in ("train", "test", "valid", "dev")), "")


# -- fields ---------------------------------------------------------------------------------------


def is_number(value: Any) -> bool:
    """An int or a float, not a bool (``True`` is an int to Python, not a number to a dataset)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "number": ("a number", is_number),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "strings": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "id": ("a string or an integer", lambda v: isinstance(v, (str, int)) and not isinstance(v, bool)),
    "scalar": ("a string, number or boolean", lambda v: isinstance(v, (str, int, float))),
}


def describe(value: Any) -> str:
    """A JSON value's type as an error message names it: ``null``, ``str``, ``dict``, …."""
    return "null" if value is None else type(value).__name__


def _describe_strings(value: Any) -> str:
    """What is wrong with a would-be list of strings: its type, or its first non-string element."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                return f"a list with {describe(item)} at index {index}"
    return describe(value)


def field(record: Mapping[str, Any], name: str, kind: str, where: Where, *, required: bool = True) -> Any:
    """``record[name]`` checked against ``kind`` (a key of ``_KINDS``); an optional absent or null field is None."""
    value = record.get(name)
    if value is None and (not required or name not in record):
        if required:
            raise where.error(f"missing field {name!r}")
        return None
    description, check = _KINDS[kind]
    if not check(value):
        got = _describe_strings(value) if kind == "strings" else describe(value)
        raise where.error(f"field {name!r} must be {description}, got {got}")
    return value


def make_problem(where: Where, **fields: Any) -> Problem:
    """A ``Problem``, its first validation error turned into a one-line ``DataError`` at ``where``."""
    try:
        return Problem(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        name = ".".join(str(part) for part in first["loc"])
        raise where.error(f"field {name!r}: {message}" if name else message) from None


def entry(where: Where, options: LoadOptions, **fields: Any) -> Entry:
    """The ``(Where, Problem)`` pair a loader yields, labelled with the source of ``options``."""
    return where, make_problem(where, source=options.source, **fields)


def format_number(value: int | float) -> str:
    """51.0 → "51", 2.5 → "2.5", 7 → "7"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def number_text(text: str) -> str:
    """Thousands commas out: ``" 1,234 "`` → ``"1234"``."""
    return text.strip().replace(",", "")


def yes_no(value: bool) -> str:
    """A boolean answer as gold text: "yes" / "no"."""
    return "yes" if value else "no"
