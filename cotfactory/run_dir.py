"""The run directory and a student's folder as objects: every file name of a run lives here.

Stage code asks ``RunDir(path).filtered`` instead of spelling ``"filtered.jsonl"``, and writes through
the atomic writers below, so a killed command never leaves a half-written export under its real name.

    RUN_DIR/
      store.sqlite        every request, sample, score and verdict (the source of truth)
      config.json         the generate configuration
      samples.jsonl       dataset/     every sample, exported after generate
      distributions.parquet  teacher_tokenizer/   the teacher's top-K logprobs per token (--logprobs K)
                          (teacher_token_strings.json instead of the tokenizer when none was given)
      filtered.jsonl      filtered/    funnel.json      what the filter kept, and why
      pipeline.json       fingerprints of the pipeline stages that ran
      report/             report.html, report.json, plots
      students/NAME/      one StudentDir per student
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from cotfactory.errors import ConfigError, DataError


class Inside:
    """A file or folder of a run directory, declared by name: ``samples = Inside("samples.jsonl")``
    makes ``RunDir(p).samples`` the path ``p / "samples.jsonl"``."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, folder: _Folder | None, owner: type) -> Path:
        if folder is None:
            return Path(self.name)
        return folder.path / self.name


class _Folder:
    def __init__(self, path: str | Path):
        self.path = Path(path)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.path == self.path  # type: ignore[attr-defined]

    def __hash__(self) -> int:
        return hash(self.path)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.path)!r})"


class StudentDir(_Folder):
    """``train-student``'s output folder: the adapter or weights, and what it learned and scored."""

    info = Inside("student.json")
    metrics = Inside("metrics.jsonl")
    examples = Inside("examples.jsonl")  # what the student learned from, each with its teacher sample's key
    checkpoints = Inside("checkpoints")
    fingerprint = Inside(".fingerprint")  # the pipeline's fingerprint of the run the checkpoints belong to
    predictions = Inside("predictions.jsonl")
    evaluation = Inside("eval.json")

    @property
    def untrained(self) -> StudentDir:
        """The base model, scored untrained on the same problems: the student's "before"."""
        return StudentDir(self.path / "untrained")

    def is_student(self) -> bool:
        """A folder ``train-student`` finished (its student.json exists)."""
        return self.info.is_file()


class RunDir(_Folder):
    """A run directory made by ``generate`` and filled by the later stages."""

    store = Inside("store.sqlite")
    config = Inside("config.json")
    samples = Inside("samples.jsonl")
    samples_dataset = Inside("dataset")
    distributions = Inside("distributions.parquet")  # the teacher's top-K per token (generate --logprobs)
    teacher_tokenizer = Inside("teacher_tokenizer")  # the vocabulary of those token ids
    teacher_token_strings = Inside("teacher_token_strings.json")  # or, recorded with no tokenizer, their strings
    filtered = Inside("filtered.jsonl")
    filtered_dataset = Inside("filtered")
    funnel = Inside("funnel.json")
    pipeline_state = Inside("pipeline.json")
    report_dir = Inside("report")
    students_dir = Inside("students")

    @property
    def report_html(self) -> Path:
        return self.report_dir / "report.html"

    @property
    def report_json(self) -> Path:
        return self.report_dir / "report.json"

    def student(self, name: str) -> StudentDir:
        return StudentDir(self.students_dir / name)

    def students(self) -> list[StudentDir]:
        """Every student folder, by name."""
        if not self.students_dir.is_dir():
            return []
        return [StudentDir(p) for p in sorted(self.students_dir.iterdir()) if p.is_dir()]

    def has_store(self) -> bool:
        return self.store.is_file()

    def require_samples(self) -> None:
        """Refuse a folder that is not a finished generate run."""
        if not self.samples.exists():
            raise ConfigError(f"{self.path}: no samples.jsonl; not a finished run directory")

    def remove_stale_temporaries(self, files: Iterable[Path]) -> list[Path]:
        """What killed atomic writes of ``files`` (all in this folder) left behind."""
        return remove_stale_temporaries(self.path, [f.name for f in files])


def write_jsonl_atomic(path: Path, rows: Iterable[dict[str, Any]]) -> int:
    count = 0
    with _atomic_writer(path) as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count


def write_json_atomic(path: Path, value: Any) -> None:
    with _atomic_writer(path) as handle:
        json.dump(value, handle, indent=2, ensure_ascii=False)
        handle.write("\n")


def write_text_atomic(path: Path, text: str) -> None:
    with _atomic_writer(path) as handle:
        handle.write(text)


@contextlib.contextmanager
def _atomic_writer(path: Path) -> Iterator[IO[str]]:
    """A text handle on a temporary file renamed to ``path`` at the end; on any error the temporary
    file goes and ``path`` is untouched. A failed write (a full disk) names ``path``: the OS does not."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            yield handle
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of an export; a line that is not JSON (an edited or truncated file) is an error naming it."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                row = json.loads(line)
            except ValueError as exc:  # not JSON, or not UTF-8
                raise DataError(f"{path}:{number}: not valid JSON ({exc})") from None
            yield row


def remove_stale_temporaries(folder: Path, names: Iterable[str]) -> list[Path]:
    """Delete what killed atomic writes of ``names`` left in ``folder``, and return it.

    The exports are written under a temporary name (``tempfile``'s ``.NAME.XXXXXXXX``, a file or a
    folder) and renamed into place; a process killed in between leaves that behind. One command owns
    each export of a run directory, so at its start anything of that shape is a leftover.
    """
    removed = []
    for name in names:
        pattern = re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}")
        for path in folder.glob(f".{name}.*"):
            if not pattern.fullmatch(path.name):
                continue
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
            removed.append(path)
    return removed
