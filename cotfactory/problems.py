"""Dataset loaders: files → ``list[Problem]``.

Each format is a generator registered with ``@register_loader(name)``; it yields ``(Where, Problem)``
pairs in file order. ``load_problems`` looks the format up, checks ids are unique, then applies
``shard`` and ``limit``. ``Where`` is the place a record came from (``file:line`` for line-oriented
files, ``file[index]`` for JSON arrays) so that every bad input becomes a one-line ``DataError``
naming it.

JSON Lines and CSV are read line by line from bytes: nothing holds the whole file as one string,
and a bad UTF-8 byte is reported with its line and file offset. JSON arrays (SVAMP, StrategyQA)
are parsed whole, as their format requires.
"""

from __future__ import annotations

import csv
import difflib
import json
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, get_args

from pydantic import ValidationError

from cotfactory.errors import ConfigError, DataError
from cotfactory.records import AnswerType, Problem

_BOM = b"\xef\xbb\xbf"
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_CALCULATOR = re.compile(r"<<[^>]*>>")


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
LOADERS: dict[str, Loader] = {}


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Register a loader under ``name``: a generator of ``(Where, Problem)`` in file order."""

    def decorate(loader: Loader) -> Loader:
        if name in LOADERS:
            raise ValueError(f"loader {name!r} is already registered")
        LOADERS[name] = loader
        return loader

    return decorate


def available_formats() -> list[str]:
    return sorted(LOADERS)


def load_problems(
    format: str,
    path: str | Path,
    *,
    question_field: str = "question",
    answer_field: str | None = "answer",
    id_field: str = "id",
    choices_field: str = "choices",
    answer_type: str | None = None,
    limit: int | None = None,
    shard: tuple[int, int] | None = None,
) -> list[Problem]:
    """Read the problems of ``path`` with the loader ``format``.

    ``shard=(i, n)`` keeps the problems whose 0-based position p in the file has ``p % n == i``;
    ``limit`` then keeps the first N of those (reading stops there, so later lines are not checked).
    The field arguments and ``answer_type`` (default "text") apply to the generic ``jsonl`` and
    ``csv`` loaders only; in those a line without the answer field gets ``gold=None``, and
    ``answer_field=None`` ignores gold answers altogether.
    """
    loader = _find_loader(format)
    _check_selection(limit, shard)
    if answer_type is not None and answer_type not in get_args(AnswerType):
        raise ConfigError(f"answer_type {answer_type!r} is not one of: {', '.join(get_args(AnswerType))}")
    path = Path(path)
    options = LoadOptions(
        source=f"{format}:{path.name}",
        question_field=question_field,
        answer_field=answer_field,
        id_field=id_field,
        choices_field=choices_field,
        answer_type=answer_type,
    )
    return _select(loader(path, options), path, limit, shard)


def strip_calculator_annotations(text: str) -> str:
    """GSM8K's ``48/2 = <<48/2=24>>24`` → ``48/2 = 24``."""
    return _CALCULATOR.sub("", text)


# -- selection ------------------------------------------------------------------------------------


def _find_loader(format: str) -> Loader:
    try:
        return LOADERS[format]
    except KeyError:
        names = available_formats()
        close = difflib.get_close_matches(format, names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(f"unknown format {format!r}; choose one of: {', '.join(names)}{hint}") from None


def _check_selection(limit: int | None, shard: tuple[int, int] | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigError(f"limit {limit}: must be at least 1")
    if shard is not None:
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard {index}/{count}: need N >= 1 and 0 <= I < N")


def _select(entries: Iterator[Entry], path: Path, limit: int | None, shard: tuple[int, int] | None) -> list[Problem]:
    first_seen: dict[str, Where] = {}
    kept: list[Problem] = []
    for position, (where, problem) in enumerate(entries):
        first = first_seen.setdefault(problem.id, where)
        if first is not where:
            raise where.error(f"duplicate id {problem.id!r} (first {first.brief()})")
        if shard is not None and position % shard[1] != shard[0]:
            continue
        kept.append(problem)
        if limit is not None and len(kept) >= limit:
            break
    if not first_seen:
        raise DataError(f"{path}: empty file (no problems)")
    return kept


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


def _iter_text_lines(path: Path) -> Iterator[tuple[int, str]]:
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


def _iter_jsonl(path: Path) -> Iterator[tuple[Where, dict[str, Any]]]:
    """The JSON objects of a JSON Lines file; blank lines are skipped."""
    for number, text in _iter_text_lines(path):
        if not text.strip():
            continue
        where = Where(str(path), line=number)
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise where.error(f"not valid JSON ({err.msg})") from None
        if not isinstance(value, dict):
            raise where.error(f"expected a JSON object, got {_describe(value)}")
        yield where, value


def _iter_json_array(path: Path) -> Iterator[tuple[Where, dict[str, Any]]]:
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
        raise DataError(f"{path}: expected a JSON array of objects, got {_describe(value)}")
    for index, element in enumerate(value):
        where = Where(str(path), element=index)
        if not isinstance(element, dict):
            raise where.error(f"expected a JSON object, got {_describe(element)}")
        yield where, element


# -- fields ---------------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


_KINDS: dict[str, tuple[str, Callable[[Any], bool]]] = {
    "string": ("a string", lambda v: isinstance(v, str)),
    "number": ("a number", _is_number),
    "boolean": ("true or false", lambda v: isinstance(v, bool)),
    "strings": ("a list of strings", lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v)),
    "id": ("a string or an integer", lambda v: isinstance(v, (str, int)) and not isinstance(v, bool)),
    "scalar": ("a string, number or boolean", lambda v: isinstance(v, (str, int, float))),
}


def _describe(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _describe_strings(value: Any) -> str:
    """What is wrong with a would-be list of strings: its type, or its first non-string element."""
    if isinstance(value, list):
        for index, item in enumerate(value):
            if not isinstance(item, str):
                return f"a list with {_describe(item)} at index {index}"
    return _describe(value)


def _field(record: Mapping[str, Any], name: str, kind: str, where: Where, *, required: bool = True) -> Any:
    """``record[name]`` checked against ``kind``; an optional field that is absent or null is None."""
    value = record.get(name)
    if value is None and (not required or name not in record):
        if required:
            raise where.error(f"missing field {name!r}")
        return None
    description, check = _KINDS[kind]
    if not check(value):
        got = _describe_strings(value) if kind == "strings" else _describe(value)
        raise where.error(f"field {name!r} must be {description}, got {got}")
    return value


def _make_problem(where: Where, **fields: Any) -> Problem:
    try:
        return Problem(**fields)
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        field = ".".join(str(part) for part in first["loc"])
        raise where.error(f"field {field!r}: {message}" if field else message) from None


def _format_number(value: int | float) -> str:
    """51.0 → "51", 2.5 → "2.5", 7 → "7"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value)


def _number_text(text: str) -> str:
    """Thousands commas out: ``" 1,234 "`` → ``"1234"``."""
    return text.strip().replace(",", "")


def _gold_text(value: Any, answer_type: str, name: str, where: Where) -> str:
    """A generic answer value as gold text: numbers formatted, booleans as yes/no."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if _is_number(value):
        return _format_number(value)
    text = str(value).strip()
    if answer_type == "number":
        return _number_text(text)
    if answer_type == "yes_no":
        yes_no = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}.get(text.lower())
        if yes_no is None:
            raise where.error(f"field {name!r} must be yes/no for answer_type 'yes_no', got {text!r}")
        return yes_no
    return text


# -- dataset loaders ------------------------------------------------------------------------------


@register_loader("gsm8k")
def _load_gsm8k(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """GSM8K JSONL: the gold follows the last ``#### ``; the worked solution goes to metadata."""
    for position, (where, record) in enumerate(_iter_jsonl(path)):
        question = _field(record, "question", "string", where)
        answer = _field(record, "answer", "string", where)
        solution, marker, final = answer.rpartition("#### ")
        if not marker:
            raise where.error("field 'answer' has no '#### ' before the final answer")
        gold = _number_text(final)
        if not _NUMBER.fullmatch(gold):
            raise where.error(f"the final answer after '#### ' is not a number: {final.strip()!r}")
        metadata: dict[str, Any] = {"solution": solution.strip()}
        subquestions = _socratic_steps(solution)
        if subquestions:
            metadata["subquestions"] = subquestions
        given_id = _field(record, "id", "id", where, required=False)
        yield (
            where,
            _make_problem(
                where,
                id=f"gsm8k-{position}" if given_id is None else str(given_id),
                question=question,
                gold=gold,
                answer_type="number",
                source=options.source,
                metadata=metadata,
            ),
        )


def _socratic_steps(solution: str) -> list[dict[str, str]]:
    """The socratic variant writes every step as ``sub-question ** sub-answer``; else []."""
    lines = [line for line in solution.strip().split("\n") if line.strip()]
    if not lines or not all(" ** " in line for line in lines):
        return []
    steps = [line.split(" ** ", 1) for line in lines]
    return [{"question": q.strip(), "answer": a.strip()} for q, a in steps]


@register_loader("svamp")
def _load_svamp(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """SVAMP.json: the question is ``Body + " " + Question``; the float Answer becomes "51" or "2.5"."""
    for where, record in _iter_json_array(path):
        body = _field(record, "Body", "string", where)
        question = _field(record, "Question", "string", where)
        yield (
            where,
            _make_problem(
                where,
                id=str(_field(record, "ID", "id", where)),
                question=re.sub(r" {2,}", " ", f"{body.strip()} {question.strip()}"),
                gold=_format_number(_field(record, "Answer", "number", where)),
                answer_type="number",
                source=options.source,
                metadata={
                    "equation": _field(record, "Equation", "string", where, required=False),
                    "type": _field(record, "Type", "string", where, required=False),
                },
            ),
        )


@register_loader("cqa")
def _load_cqa(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """CommonsenseQA as released with Distilling Step-by-Step (JSON Lines despite the .json name).

    ``metadata.index`` is the 0-based position in the file: the PaLM rationale files are aligned by it.
    """
    split = _split_from_name(path)
    for position, (where, record) in enumerate(_iter_jsonl(path)):
        choices = _field(record, "choices", "strings", where)
        answer = _field(record, "answer", "string", where)
        if choices and answer not in choices:
            raise where.error(f"answer {answer!r} is not one of the choices {choices}")
        yield (
            where,
            _make_problem(
                where,
                id=str(_field(record, "id", "id", where)),
                question=_field(record, "question", "string", where),
                gold=answer,
                answer_type="choice",
                choices=choices,
                source=options.source,
                metadata={
                    "index": position,
                    "split": split,
                    "abstractive_explanation": _field(
                        record, "abstractive_explanation", "string", where, required=False
                    )
                    or "",
                },
            ),
        )


ESNLI_LABELS = ["entailment", "neutral", "contradiction"]


@register_loader("esnli")
def _load_esnli(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """e-SNLI as released with Distilling Step-by-Step (JSON Lines): premise, hypothesis, label 0/1/2.

    The question is "Premise: …\nHypothesis: …", as in the PaLM prompts; the answer is one of
    entailment / neutral / contradiction. ``metadata.index`` aligns the PaLM rationale files.
    """
    split = _split_from_name(path)
    for position, (where, record) in enumerate(_iter_jsonl(path)):
        label = _field(record, "label", "number", where)
        if label not in (0, 1, 2):
            raise where.error(f"field 'label': expected 0, 1 or 2, got {label!r}")
        premise = _field(record, "premise", "string", where)
        hypothesis = _field(record, "hypothesis", "string", where)
        yield (
            where,
            _make_problem(
                where,
                id=str(record.get("id") or f"{path.stem}-{position}"),
                question=f"Premise: {premise}\nHypothesis: {hypothesis}",
                gold=ESNLI_LABELS[int(label)],
                answer_type="choice",
                choices=ESNLI_LABELS,
                source=options.source,
                metadata={
                    "index": position,
                    "split": split,
                    "explanations": [
                        e for e in (record.get(f"explanation_{i}") for i in (1, 2, 3)) if isinstance(e, str) and e
                    ],
                },
            ),
        )


def _split_from_name(path: Path) -> str:
    """``cqa_train.json`` → "train", ``test_sample.json`` → "test", else ""."""
    words = re.split(r"[^a-z]+", path.stem.lower())
    return next((word for word in words if word in ("train", "test", "valid", "dev")), "")


@register_loader("strategyqa")
def _load_strategyqa(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """StrategyQA JSON array; the boolean answer becomes "yes"/"no" (None in the answerless test set)."""
    for where, record in _iter_json_array(path):
        answer = _field(record, "answer", "boolean", where, required=False)
        yield (
            where,
            _make_problem(
                where,
                id=str(_field(record, "qid", "id", where)),
                question=_field(record, "question", "string", where),
                gold=None if answer is None else ("yes" if answer else "no"),
                answer_type="yes_no",
                source=options.source,
                metadata={
                    "facts": _field(record, "facts", "strings", where, required=False) or [],
                    "decomposition": _field(record, "decomposition", "strings", where, required=False) or [],
                },
            ),
        )


# -- generic loaders ------------------------------------------------------------------------------


def _generic_problem(
    record: Mapping[str, Any], where: Where, position: int, path: Path, options: LoadOptions
) -> Problem:
    """One problem of a generic file, through the field mapping of ``options``."""
    answer_type = options.answer_type or "text"
    given_id = _field(record, options.id_field, "id", where, required=False)
    gold = None
    if options.answer_field is not None:
        value = _field(record, options.answer_field, "scalar", where, required=False)
        gold = None if value is None else _gold_text(value, answer_type, options.answer_field, where)
    choices = _field(record, options.choices_field, "strings", where, required=answer_type == "choice")
    return _make_problem(
        where,
        id=f"{path.stem}-{position}" if given_id is None else str(given_id),
        question=_field(record, options.question_field, "string", where),
        gold=gold,
        answer_type=answer_type,
        choices=choices,
        source=options.source,
    )


@register_loader("jsonl")
def _load_jsonl(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """Any JSON Lines file; fields named by the mapping, choices as a JSON list of strings."""
    for position, (where, record) in enumerate(_iter_jsonl(path)):
        yield where, _generic_problem(record, where, position, path, options)


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


@register_loader("csv")
def _load_csv(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """A CSV file with a header row; choices as one ``|``-separated cell; empty cells count as absent."""
    lines = _LineCounter(_iter_text_lines(path))
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


def _check_csv_header(header: list[str], where: Where, options: LoadOptions) -> None:
    needed = [options.question_field]
    if options.answer_type == "choice":
        needed.append(options.choices_field)
    for name in needed:
        if name not in header:
            raise where.error(f"missing column {name!r} (columns: {', '.join(header)})")
