"""Recorded completions as a teacher, so imported rationales flow through the same store,
filters and trainers as fresh ones.

Two recordings are understood:

* Distilling Step-by-Step's PaLM files: JSON arrays of completion strings, ``{split}_CoT_{i}.json``,
  where element j of shard i belongs to example ``i*1000 + j`` of the split (the ``cqa`` loader
  keeps that position as ``metadata.index`` and the split as ``metadata.split``; e-SNLI's shards hold
  5,500, which concatenating the shards in order respects). Give the folder, one array file, or a glob.
  PaLM goes on to invent a next ``Q:`` / ``Premise:`` turn; it is cut off.
* An OpenAI Batch API output JSONL (``{custom_id, response: {status_code, body}, error}``), where
  ``custom_id`` is cotfactory's request key, or a problem id (the n-th line or choice of a problem
  answers its sample_index n).
"""

from __future__ import annotations

import glob
import json
import re
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field

from cotfactory.answers import cut_invented_turn
from cotfactory.errors import ConfigError, DataError
from cotfactory.records import Request, Sample
from cotfactory.teachers.base import Teacher, TeacherOptions

_SHARD = re.compile(r"_(\d+)\.json$")
# PaLM goes on to invent the next few-shot turn: "\n\nQ:" (CommonsenseQA) or "\n\nPremise:" (e-SNLI)


class ReplayOptions(TeacherOptions):
    """Recorded completions: the DSS PaLM files, or an OpenAI Batch API output file."""

    kind: Literal["replay"] = "replay"
    needs: ClassVar[dict[str, str]] = {"replay": "the recorded completions"}
    model: str | None = Field(None, description="Label recorded as the model (default 'replay').")
    replay: str | None = Field(None, description="Recorded completions (DSS PaLM files or Batch API JSONL).")


class ReplayTeacher(Teacher[ReplayOptions]):
    name = "replay"
    Options = ReplayOptions

    def __init__(self, options: ReplayOptions, retry_tokens: int = 0):
        super().__init__(options, retry_tokens)
        self.source = str(options.replay)
        self._by_key: dict[str, str] = {}
        self._by_problem: dict[str, list[str]] = defaultdict(list)
        self._dss: dict[str, list[str]] = {}  # split ("" for a single file) → completions by position
        self.requests_sent = 0
        if self.source.endswith(".jsonl"):
            self._load_batch_output(Path(self.source))
        else:
            self._dss_paths = self._find_dss_files()

    @property
    def model_label(self) -> str:
        return self.options.model or "replay"

    # DSS PaLM arrays --------------------------------------------------------------------------
    def _find_dss_files(self) -> dict[str, list[Path]]:
        path = Path(self.source)
        if path.is_dir():
            files = [Path(p) for p in glob.glob(str(path / "*_CoT_*.json"))]
        elif any(ch in self.source for ch in "*?["):
            files = [Path(p) for p in glob.glob(self.source)]
        elif path.is_file():
            return {"": [path]}
        else:
            raise ConfigError(f"replay: {self.source} not found (a PaLM folder, array file, glob, or .jsonl)")
        if not files:
            raise ConfigError(f"replay: no '*_CoT_*.json' files at {self.source}")
        by_split: dict[str, list[Path]] = defaultdict(list)
        for file in files:
            by_split[file.name.split("_CoT_")[0]].append(file)
        return {split: sorted(group, key=_shard_number) for split, group in by_split.items()}

    def _dss_completions(self, split: str) -> list[str]:
        if split not in self._dss:
            paths = self._dss_paths.get(split) or self._dss_paths.get("")
            if paths is None:
                raise DataError(f"replay: no PaLM files for split '{split}' at {self.source}")
            completions: list[str] = []
            for path in paths:
                completions.extend(_read_json_array(path))
            self._dss[split] = completions
        return self._dss[split]

    # Batch API output -------------------------------------------------------------------------
    def _load_batch_output(self, path: Path) -> None:
        try:
            handle = path.open(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"replay: cannot read {path}: {exc.strerror}") from None
        with handle:
            for number, line in enumerate(handle, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                    custom_id = str(record["custom_id"])
                    body = (record.get("response") or {}).get("body") or {}
                    texts = [_text_of(choice) for choice in body.get("choices", [])]
                except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as exc:
                    raise DataError(f"{path}:{number}: not a Batch API output line ({exc})") from None
                if len(texts) == 1:
                    self._by_key[custom_id] = texts[0]
                self._by_problem[custom_id].extend(texts)

    # teaching ---------------------------------------------------------------------------------
    def _recorded(self, request: Request, metadata: dict[str, Any]) -> str | None:
        if self.source.endswith(".jsonl"):
            if request.key in self._by_key:
                return self._by_key[request.key]
            texts = self._by_problem.get(request.problem_id, [])
            return texts[request.sample_index] if request.sample_index < len(texts) else None
        index = metadata.get("index")
        if index is None:
            return None
        completions = self._dss_completions(str(metadata.get("split", "")))
        if request.sample_index != 0 or not 0 <= int(index) < len(completions):
            return None
        return cut_invented_turn(completions[int(index)]).strip()

    async def generate(self, requests: Iterator[Request]) -> AsyncIterator[list[Sample]]:
        for request in requests:
            started = time.monotonic()
            problem = self.problem_of(request.problem_id)
            metadata = problem.metadata if problem else {}
            text = self._recorded(request, metadata)
            self.requests_sent += 1
            if text is None:
                yield [
                    Sample(
                        request=request,
                        finish_reason="error",
                        attempts=1,
                        error=f"replay: no recorded completion for problem '{request.problem_id}' "
                        f"sample {request.sample_index}",
                    )
                ]
                continue
            yield [
                Sample(
                    request=request,
                    text=text,
                    attempts=1,
                    latency_s=time.monotonic() - started,
                    completion_tokens=len(text.split()),
                )
            ]


def _shard_number(path: Path) -> int:
    match = _SHARD.search(path.name)
    return int(match.group(1)) if match else 0


def _read_json_array(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: not a JSON array of completions ({exc})") from None
    if not isinstance(data, list) or not all(isinstance(item, str) for item in data):
        raise DataError(f"{path}: expected a JSON array of strings")
    return data


def _text_of(choice: dict[str, Any]) -> str:
    message = choice.get("message")
    return (message or {}).get("content") or choice.get("text") or ""
