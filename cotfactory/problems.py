"""Dataset loaders: files → ``list[Problem]``, or a ``ProblemFile`` read again on each pass.

A format is a loader in ``LOADERS``: a generator of ``(Where, Problem)`` pairs in file order. The
built-in ones live one dataset family a module in ``cotfactory.loaders`` and are registered here by
lazy ``"module:attr"`` path, so a run imports only the loader it reads with. User code adds one with
``LOADERS.register(name, loader)`` or the ``@register_loader(name)`` decorator.

``load_problems`` looks the format up, checks ids are unique, then applies ``shard`` and ``limit``;
``open_problems`` does the same on every pass over the file, holding no problem longer than a pass needs it.
``Where`` is the place a record came from (``file:line`` for line-oriented files, ``file[index]`` for
JSON arrays) so that every bad input becomes a one-line ``DataError`` naming it.
"""

from __future__ import annotations

import array
import collections
import hashlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, get_args

from cotfactory.errors import ConfigError, DataError
from cotfactory.loaders.common import Entry, Loader, LoadOptions, Where
from cotfactory.records import AnswerType, Problem
from cotfactory.registry import Registry

__all__ = [
    "LOADERS",
    "Entry",
    "LoadOptions",
    "Loader",
    "ProblemFile",
    "Where",
    "available_formats",
    "load_problems",
    "open_problems",
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


def load_problems(format: str, path: str | Path, **options: Any) -> list[Problem]:
    """Read the problems of ``path`` with the loader ``format`` into a list (``open_problems`` says what
    the keyword options mean)."""
    return list(open_problems(format, path, **options))


def open_problems(
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
) -> ProblemFile:
    """The problems of ``path`` read with the loader ``format``, as a :class:`ProblemFile`: read again on
    every pass, never all held in memory. Bad arguments fail here; bad records on the first pass.

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
    return ProblemFile(path, lambda: loader(path, options), limit, shard)


class ProblemFile:
    """The selected problems of one input file, read from the file on each pass.

    A run over a million problems walks its plan several times (check, send, export); holding every
    ``Problem`` would make its memory grow with the dataset, reading the file again does not. Ids are
    checked unique with 8 bytes a problem (a hash each, sorted once the pass ends); ``len()`` is the
    count of the first whole pass, and a later pass that counts otherwise means the file changed.
    """

    def __init__(
        self, path: Path, entries: Callable[[], Iterator[Entry]], limit: int | None, shard: tuple[int, int] | None
    ):
        self.path = path
        self._entries = entries
        self._limit = limit
        self._shard = shard
        self._count: int | None = None

    def __len__(self) -> int:
        if self._count is None:
            collections.deque(self, maxlen=0)
        assert self._count is not None
        return self._count

    def __iter__(self) -> Iterator[Problem]:
        """Unique ids over the whole read, then the shard, then the limit (which stops the read)."""
        limit, shard = self._limit, self._shard
        id_hashes = array.array("Q")
        kept = 0
        for position, (_, problem) in enumerate(self._entries()):
            id_hashes.append(_id_hash(problem.id))
            if shard is not None and position % shard[1] != shard[0]:
                continue
            yield problem
            kept += 1
            if limit is not None and kept >= limit:
                break
        if not id_hashes:
            raise DataError(f"{self.path}: empty file (no problems)")
        self._check_unique(id_hashes)
        if self._count is None:
            self._count = kept
        elif kept != self._count:
            raise DataError(f"{self.path}: changed while it was being read ({self._count} problems, now {kept})")

    def _check_unique(self, id_hashes: array.array) -> None:
        import numpy as np

        ordered = np.sort(np.frombuffer(id_hashes, dtype=np.uint64))  # 8 bytes a problem, not a list of ints
        clashes = {int(h) for h in ordered[1:][ordered[1:] == ordered[:-1]]}
        if not clashes:
            return
        first_seen: dict[str, Where] = {}  # only the ids whose hash clashed: a second read finds the places
        for where, problem in self._entries():
            if _id_hash(problem.id) not in clashes:
                continue
            first = first_seen.setdefault(problem.id, where)
            if first is not where:
                raise where.error(f"duplicate id {problem.id!r} (first {first.brief()})")


def _id_hash(problem_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(problem_id.encode(), digest_size=8).digest(), "little")


def _check_selection(limit: int | None, shard: tuple[int, int] | None) -> None:
    if limit is not None and limit < 1:
        raise ConfigError(f"limit {limit}: must be at least 1")
    if shard is not None:
        index, count = shard
        if count < 1 or not 0 <= index < count:
            raise ConfigError(f"shard {index}/{count}: need N >= 1 and 0 <= I < N")
