"""The run's SQLite store: the only source of truth of a run.

WAL journal, one transaction per completed teacher call, ``INSERT OR IGNORE`` on the request key:
a run killed at any moment keeps every committed sample and never holds one twice. Everything else
in a run directory (exports, summaries) is derived from this file and can be rebuilt.
"""

from __future__ import annotations

import itertools
import json
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from cotfactory.distributions import TokenDistributions
from cotfactory.records import Problem, Sample, Verdict
from cotfactory.run_dir import RunDir

SCHEMA_VERSION = 1
_CHUNK = 500  # keys per ``IN (...)`` lookup: well under SQLite's parameter limit

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS problems (
    id TEXT PRIMARY KEY,
    body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS samples (
    key TEXT PRIMARY KEY,
    problem_id TEXT NOT NULL,
    failed INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    body TEXT NOT NULL,
    created REAL NOT NULL DEFAULT ((julianday('now') - 2440587.5) * 86400.0)
);
CREATE INDEX IF NOT EXISTS samples_by_problem ON samples (problem_id);
CREATE TABLE IF NOT EXISTS distributions (
    sample_key TEXT PRIMARY KEY,
    k INTEGER NOT NULL,
    tokens INTEGER NOT NULL,
    body BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS token_strings (id INTEGER PRIMARY KEY, text TEXT NOT NULL UNIQUE);
CREATE TABLE IF NOT EXISTS scores (
    sample_key TEXT NOT NULL,
    scorer TEXT NOT NULL,
    score REAL,
    details TEXT NOT NULL,
    PRIMARY KEY (sample_key, scorer)
);
CREATE TABLE IF NOT EXISTS verdicts (
    sample_key TEXT NOT NULL,
    filter TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (sample_key, filter)
);
"""


class Store:
    """A run directory's ``store.sqlite``. Written from one thread; read from anywhere."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: durable across process kills
        self._db.execute("PRAGMA busy_timeout=10000")
        self._db.executescript(_SCHEMA)
        self.set_meta("schema_version", SCHEMA_VERSION)

    @classmethod
    def in_run(cls, run_dir: str | Path) -> Store:
        """The store of a run directory."""
        return cls(RunDir(run_dir).store)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # meta -------------------------------------------------------------------------------------
    def set_meta(self, key: str, value: Any) -> None:
        self._db.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value)))

    def get_meta(self, key: str, default: Any = None) -> Any:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # problems ---------------------------------------------------------------------------------
    def put_problems(self, problems: Iterable[Problem]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO problems VALUES (?, ?)",
                ((p.id, p.model_dump_json()) for p in problems),
            )

    def problems(self) -> dict[str, Problem]:
        rows = self._db.execute("SELECT body FROM problems")
        return {p.id: p for p in (Problem.model_validate_json(body) for (body,) in rows)}

    def problem(self, problem_id: str) -> Problem | None:
        row = self._db.execute("SELECT body FROM problems WHERE id = ?", (problem_id,)).fetchone()
        return Problem.model_validate_json(row[0]) if row else None

    # samples ----------------------------------------------------------------------------------
    def add_samples(self, samples: Iterable[Sample], replace: bool = False) -> int:
        """Commit the samples of one completed call, with their distributions, in one transaction;
        returns how many were new. ``replace``: a successful sample replaces a stored one of the same key
        (sent again for a larger --logprobs K: its text and its distributions must come from one reply);
        a failed one never replaces anything."""
        columns = "(key, problem_id, failed, prompt_tokens, completion_tokens, body) VALUES (?, ?, ?, ?, ?, ?)"
        added = 0
        with self._transaction():
            for sample in samples:
                verb = "INSERT OR REPLACE" if replace and not sample.failed else "INSERT OR IGNORE"
                row = (
                    sample.key,
                    sample.request.problem_id,
                    int(sample.failed),
                    sample.prompt_tokens,
                    sample.completion_tokens,
                    sample.model_dump_json(),
                )
                stored = self._db.execute(f"{verb} INTO samples {columns}", row).rowcount
                added += stored
                if stored and sample.distributions is not None and not sample.failed:
                    found = self._run_wide(sample.distributions)
                    self._db.execute(
                        "INSERT OR REPLACE INTO distributions VALUES (?, ?, ?, ?)",
                        (sample.key, found.k, len(found), found.to_bytes()),
                    )
                elif stored and replace:  # a reply without distributions: an older one belongs to other text
                    self._db.execute("DELETE FROM distributions WHERE sample_key = ?", (sample.key,))
        return added

    def _run_wide(self, found: TokenDistributions) -> TokenDistributions:
        """Distributions over a reply's own token strings, with ids of the run's string vocabulary
        (each new string gets the next id); inside the caller's transaction, so a string's id is kept
        exactly when a sample that uses it is."""
        if found.strings is None:
            return found
        self._db.executemany("INSERT OR IGNORE INTO token_strings (text) VALUES (?)", ((s,) for s in found.strings))
        ids: dict[str, int] = {}
        for start in range(0, len(found.strings), _CHUNK):
            chunk = found.strings[start : start + _CHUNK]
            rows = self._db.execute(
                f"SELECT text, id - 1 FROM token_strings WHERE text IN ({','.join('?' * len(chunk))})", chunk
            )
            ids.update(rows)
        return found.with_ids(np.array([ids[s] for s in found.strings], dtype=np.int64))

    def token_string_count(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM token_strings").fetchone()[0]

    def token_strings(self) -> list[str]:
        """The run's string vocabulary (an API teacher recorded with no tokenizer): the text of each id."""
        return [text for (text,) in self._db.execute("SELECT text FROM token_strings ORDER BY id")]

    def conflicting_key(self, other: str | Path) -> str | None:
        """A sample key the store at ``other`` holds with another text (or outcome) than this one, if any."""
        self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            row = self._db.execute(
                "SELECT m.key FROM samples m JOIN other.samples o ON o.key = m.key WHERE m.failed != o.failed"
                " OR json_extract(m.body, '$.text') IS NOT json_extract(o.body, '$.text') LIMIT 1"
            ).fetchone()
        finally:
            self._db.execute("DETACH DATABASE other")
        return row[0] if row else None

    def add_from(self, other: str | Path) -> int:
        """Copy in the problems, samples and distributions of the store at ``other`` that this one lacks,
        in one transaction; returns the samples added."""
        self._db.execute("ATTACH DATABASE ? AS other", (str(other),))
        try:
            with self._transaction():
                self._db.execute("INSERT OR IGNORE INTO problems SELECT * FROM other.problems")
                added = self._db.execute(
                    "INSERT OR IGNORE INTO samples (key, problem_id, failed, prompt_tokens, completion_tokens, body,"
                    " created) SELECT key, problem_id, failed, prompt_tokens, completion_tokens, body, created"
                    " FROM other.samples ORDER BY rowid"
                ).rowcount
                self._db.execute("INSERT OR IGNORE INTO distributions SELECT * FROM other.distributions")
        finally:
            self._db.execute("DETACH DATABASE other")
        return added

    def done_among(self, keys: list[str], logprobs_k: int = 0) -> set[str]:
        """Those of ``keys`` (at most a few hundred) that need no sending: stored, and — when
        ``logprobs_k`` > 0 — either failed for good or stored with distributions of at least K per token
        (a success without them is sent again and replaced). Asked a chunk at a time, so a run never
        holds the keys of every stored sample."""
        rows = self._db.execute(
            "SELECT s.key FROM samples s LEFT JOIN distributions d ON d.sample_key = s.key"
            f" WHERE s.key IN ({','.join('?' * len(keys))}) AND (? = 0 OR s.failed = 1 OR d.k >= ?)",
            (*keys, logprobs_k, logprobs_k),
        )
        return {key for (key,) in rows}

    def distributions(self, keys: Iterable[str] | None = None) -> Iterator[tuple[str, TokenDistributions]]:
        """(sample key, distributions): all in insertion order, or those of ``keys`` that have them."""
        if keys is None:
            for key, k, tokens, body in self._db.execute("SELECT * FROM distributions ORDER BY rowid"):
                yield key, TokenDistributions.from_bytes(body, tokens, k)
            return
        for key, k, tokens, body in self._by_keys("distributions", "sample_key", keys):
            yield key, TokenDistributions.from_bytes(body, tokens, k)

    def distribution_bytes(self) -> tuple[int, int]:
        """(bytes of distribution blobs, tokens they cover) over the whole store."""
        row = self._db.execute("SELECT TOTAL(LENGTH(body)), TOTAL(tokens) FROM distributions").fetchone()
        return int(row[0]), int(row[1])

    def forget_failed(self) -> int:
        """Delete the permanently failed samples, so their requests are sent again."""
        with self._transaction():
            return self._db.execute("DELETE FROM samples WHERE failed = 1").rowcount

    def samples(self, keys: Iterable[str] | None = None) -> Iterator[Sample]:
        """All samples in insertion order, or those of ``keys`` in the order given."""
        if keys is None:
            for (body,) in self._db.execute("SELECT body FROM samples ORDER BY rowid"):
                yield Sample.model_validate_json(body)
            return
        for row in self._by_keys("samples", "key", keys, columns="key, body"):
            yield Sample.model_validate_json(row[1])

    def _by_keys(self, table: str, key_column: str, keys: Iterable[str], columns: str = "*") -> Iterator[tuple]:
        """The rows of ``table`` whose ``key_column`` is one of ``keys``, in the order of ``keys``; the key
        must be the first column selected."""
        iterator = iter(keys)
        while chunk := list(itertools.islice(iterator, _CHUNK)):
            rows = self._db.execute(
                f"SELECT {columns} FROM {table} WHERE {key_column} IN ({','.join('?' * len(chunk))})", chunk
            ).fetchall()
            found = {row[0]: row for row in rows}
            yield from (found[key] for key in chunk if key in found)

    def samples_version(self) -> list[float]:
        """Changes whenever a sample is added or deleted, even when the count stays the same (a failed
        sample deleted by --retry-failed and sent again): [count, last rowid, sum of creation times]."""
        row = self._db.execute("SELECT COUNT(*), COALESCE(MAX(rowid), 0), TOTAL(created) FROM samples").fetchone()
        return [int(row[0]), int(row[1]), float(row[2])]

    def count(self, failed: bool | None = None) -> int:
        if failed is None:
            return self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        return self._db.execute("SELECT COUNT(*) FROM samples WHERE failed = ?", (int(failed),)).fetchone()[0]

    def token_totals(self) -> tuple[int, int]:
        """(prompt tokens, completion tokens) over every stored sample."""
        row = self._db.execute("SELECT TOTAL(prompt_tokens), TOTAL(completion_tokens) FROM samples").fetchone()
        return int(row[0]), int(row[1])

    # scores (a cache keyed by sample and scorer configuration) ----------------------------------
    def put_scores(self, scorer: str, scores: Iterable[tuple[str, float | None, dict[str, Any]]]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO scores VALUES (?, ?, ?, ?)",
                ((key, scorer, score, json.dumps(details)) for key, score, details in scores),
            )

    def scores(self, scorer: str, keys: list[str] | None = None) -> dict[str, tuple[float | None, dict[str, Any]]]:
        """Cached scores of ``scorer``: all of them, or those of ``keys``."""
        if keys is None:
            rows = self._db.execute("SELECT sample_key, score, details FROM scores WHERE scorer = ?", (scorer,))
            return {key: (score, json.loads(details)) for key, score, details in rows}
        found: dict[str, tuple[float | None, dict[str, Any]]] = {}
        for start in range(0, len(keys), 500):
            chunk = keys[start : start + 500]
            rows = self._db.execute(
                f"SELECT sample_key, score, details FROM scores WHERE scorer = ? AND sample_key IN "
                f"({','.join('?' * len(chunk))})",
                (scorer, *chunk),
            )
            found.update({key: (score, json.loads(details)) for key, score, details in rows})
        return found

    # verdicts (the latest filter run's decisions, kept and dropped) --------------------------------
    def clear_verdicts(self) -> None:
        self._db.execute("DELETE FROM verdicts")

    def add_verdicts(self, verdicts: Iterable[Verdict]) -> None:
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO verdicts VALUES (?, ?, ?)",
                ((v.sample_key, v.filter, v.model_dump_json()) for v in verdicts),
            )

    def verdicts(self) -> list[Verdict]:
        return [Verdict.model_validate_json(body) for (body,) in self._db.execute("SELECT body FROM verdicts")]

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


class _Transaction:
    def __init__(self, db: sqlite3.Connection):
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")
