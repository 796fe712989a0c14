"""Dataset loaders: files → ``list[Problem]``.

A format is a loader in ``LOADERS``: a generator of ``(Where, Problem)`` pairs in file order. The
built-in ones live one dataset family a module in ``cotfactory.loaders`` and are registered here by
lazy ``"module:attr"`` path, so a run imports only the loader it reads with. User code adds one with
``LOADERS.register(name, loader)`` or the ``@register_loader(name)`` decorator.

``load_problems`` looks the format up, checks ids are unique, then applies ``shard`` and ``limit``.
``Where`` is the place a record came from (``file:line`` for line-oriented files, ``file[index]`` for
JSON arrays) so that every bad input becomes a one-line ``DataError`` naming it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import get_args

from cotfactory.errors import ConfigError, DataError
from cotfactory.loaders.common import Entry, Loader, LoadOptions, Where
from cotfactory.records import AnswerType, Problem
from cotfactory.registry import Registry

__all__ = [
    "LOADERS",
    "Entry",
    "LoadOptions",
    "Loader",
    "Where",
    "available_formats",
    "load_problems",
    "register_loader",
]

LOADERS: Registry[Loader] = Registry("format")
LOADERS.register("gsm8k", "cotfactory.loaders.gsm8k:load_gsm8k")
LOADERS.register("svamp", "cotfactory.loaders.svamp:load_svamp")
LOADERS.register("cqa", "cotfactory.loaders.cqa:load_cqa")
LOADERS.register("esnli", "cotfactory.loaders.esnli:load_esnli")
LOADERS.register("strategyqa", "cotfactory.loaders.strategyqa:load_strategyqa")
LOADERS.register("jsonl", "cotfactory.loaders.generic:load_jsonl")
LOADERS.register("csv", "cotfactory.loaders.generic:load_csv")


def register_loader(name: str) -> Callable[[Loader], Loader]:
    """Decorator: register a loader under ``name`` (``LOADERS.register(name)``); a name is taken once."""
    return LOADERS.register(name)


def available_formats() -> list[str]:
    """The registered format names, sorted."""
    return LOADERS.names()


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
    ``answer_field=None`` ignores gold answers altogether. An unknown ``format`` is a ConfigError
    that names the closest known one.
    """
    loader = LOADERS.get(format)
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


def _check_selection(limit: int | None, shard: tuple[int, int] | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigError(f"limit {limit}: must be at least 1")
    if shard is not None:
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard {index}/{count}: need N >= 1 and 0 <= I < N")


def _select(entries: Iterator[Entry], path: Path, limit: int | None, shard: tuple[int, int] | None) -> list[Problem]:
    """Unique ids over the whole read, then the shard, then the limit (which stops the read)."""
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
