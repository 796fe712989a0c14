"""Exports derived from the store: ``samples.jsonl`` and a Hugging Face ``datasets`` folder.

Both are written to a temporary name and renamed into place, so a killed run never leaves a
half-written export; both can be rebuilt from the store at any time.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from cotfactory.records import Problem, Sample
from cotfactory.run_dir import RunDir, write_jsonl_atomic


def sample_row(sample: Sample, problem: Problem | None) -> dict[str, Any]:
    """One flat line of samples.jsonl: the request's provenance, the problem, and the result."""
    request = sample.request
    return {
        "key": sample.key,
        "problem_id": request.problem_id,
        "question": problem.question if problem else None,
        "gold": problem.gold if problem else None,
        "answer_type": problem.answer_type if problem else None,
        "choices": problem.choices if problem else None,
        "template": request.template,
        "template_hash": request.template_hash,
        "teacher": request.teacher,
        "model": request.model,
        "mode": request.mode,
        "temperature": request.temperature,
        "top_p": request.top_p,
        "seed": request.seed,
        "sample_index": request.sample_index,
        "max_tokens": request.max_tokens,
        "text": sample.text,
        "rationale": sample.rationale,
        "answer": sample.answer,
        "finish_reason": sample.finish_reason,
        "prompt_tokens": sample.prompt_tokens,
        "completion_tokens": sample.completion_tokens,
        "latency_s": round(sample.latency_s, 4),
        "attempts": sample.attempts,
        "error": sample.error,
        "metadata": json.dumps(sample.metadata, sort_keys=True),
    }


def infer_features(jsonl: Path) -> Any:
    """The ``datasets`` schema of a whole JSONL file, or None if its columns mix types.

    Arrow's reader infers types block by block (10 MB): a column that is null in the first block and
    a string later (a sample's ``error`` when the first failure comes late in a big run) fails the
    export. One cheap pass over the file settles every column's type first.
    """
    import datasets

    merged: Any = None
    with jsonl.open("rb") as handle:
        for line in handle:
            merged = _merge_type(merged, _type_of(json.loads(line)))
            if merged is _CONFLICT:
                return None

    def feature(kind: Any) -> Any:
        if isinstance(kind, dict):
            return {name: feature(sub) for name, sub in kind.items()}
        if isinstance(kind, list):
            return datasets.List(feature(kind[0]))
        return datasets.Value({None: "null", bool: "bool", int: "int64", float: "float64", str: "string"}[kind])

    return datasets.Features(feature(merged)) if isinstance(merged, dict) else None


_CONFLICT = object()


def _write_arrow(jsonl: Path, target: Path, schema: Any, rows_per_batch: int = 1000) -> None:
    """JSONL rows → an Arrow stream file of ``schema``, by pyarrow's own conversion: the same table
    ``datasets``' generator builder makes, without its Python encoding of every value (the largest
    part of an export's CPU, bench/generate_api.py)."""
    import pyarrow as pa

    with pa.OSFile(str(target), "wb") as sink, pa.ipc.new_stream(sink, schema) as writer:
        batch: list[dict[str, Any]] = []
        with jsonl.open("rb") as handle:
            for line in handle:
                batch.append(json.loads(line))
                if len(batch) == rows_per_batch:
                    writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))
                    batch = []
        if batch:
            writer.write_batch(pa.RecordBatch.from_pylist(batch, schema=schema))


def _type_of(value: Any) -> Any:
    """None, bool, int, float, str, [element type] or {field: type}."""
    if isinstance(value, dict):
        return {name: _type_of(sub) for name, sub in value.items()}
    if isinstance(value, list):
        element: Any = None
        for item in value:
            element = _merge_type(element, _type_of(item))
        return [element]
    return None if value is None else type(value)


def _merge_type(a: Any, b: Any) -> Any:
    if a is None or a is b:
        return b
    if b is None:
        return a
    if a is _CONFLICT or b is _CONFLICT:
        return _CONFLICT
    if isinstance(a, dict) and isinstance(b, dict):
        fields = {name: _merge_type(a.get(name), b.get(name)) for name in {**a, **b}}
        return _CONFLICT if any(kind is _CONFLICT for kind in fields.values()) else fields
    if isinstance(a, list) and isinstance(b, list):
        element = _merge_type(a[0], b[0])
        return _CONFLICT if element is _CONFLICT else [element]
    if isinstance(a, (dict, list)) or isinstance(b, (dict, list)):
        return _CONFLICT
    if {a, b} == {int, float}:  # JSON writes 1.0 as 1: a number column is float once any value is
        return float
    return _CONFLICT


def write_dataset_atomic(jsonl: Path, folder: Path) -> None:
    """Save a JSONL file as a ``datasets`` folder (``load_from_disk``-able), replacing it atomically.

    Rows are typed from the whole file first, then streamed to Arrow in batches, so memory stays flat
    for large runs.
    """
    import datasets  # heavy; only exports need it

    datasets.disable_progress_bars()
    work = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        if jsonl.stat().st_size == 0:
            dataset = datasets.Dataset.from_dict({})
        else:
            features = infer_features(jsonl)
            if features is None:  # mixed column types: let datasets infer (and report) them
                dataset = datasets.Dataset.from_json(str(jsonl), cache_dir=str(work / "cache"))
            else:  # rows streamed to an Arrow file in batches: memory stays flat however big the run
                arrow = work / "rows.arrow"
                _write_arrow(jsonl, arrow, features.arrow_schema)
                dataset = datasets.Dataset.from_file(str(arrow), info=datasets.DatasetInfo(features=features))
        dataset.save_to_disk(str(work / "data"))
        del dataset
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(work / "data", folder)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def export_samples(run_dir: RunDir, samples: Iterable[Sample], problem_of: Callable[[str], Problem | None]) -> int:
    """Stream ``samples`` into samples.jsonl (``problem_of`` looks a problem up by id), then the datasets folder."""
    count = write_jsonl_atomic(run_dir.samples, (sample_row(s, problem_of(s.request.problem_id)) for s in samples))
    write_dataset_atomic(run_dir.samples, run_dir.samples_dataset)
    return count


def export_distributions(run_dir: RunDir, keys: Iterable[str], distributions_of: Callable) -> int:
    """Write the recorded distributions of ``keys`` (in that order) to distributions.parquet, atomically:
    one row per sample — key, k, token_ids, token_logprobs, top_ids, top_logprobs, tail — loadable with
    ``datasets.load_dataset("parquet", data_files=…)`` or pandas. Written in row groups of 1,000 samples,
    so memory stays flat. Returns the rows written (0: no file)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    half = pa.float16()
    schema = pa.schema(
        [
            ("key", pa.string()),
            ("k", pa.int32()),
            ("token_ids", pa.list_(pa.int32())),
            ("token_logprobs", pa.list_(half)),
            ("top_ids", pa.list_(pa.list_(pa.int32()))),
            ("top_logprobs", pa.list_(pa.list_(half))),
            ("tail", pa.list_(half)),
        ]
    )
    target = run_dir.distributions
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    os.close(fd)
    written = 0
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            batch: list[tuple[str, Any]] = []
            for key, found in distributions_of(keys):
                batch.append((key, found))
                if len(batch) == 1000:
                    writer.write_table(_distribution_table(batch, schema))
                    written, batch = written + len(batch), []
            if batch:
                writer.write_table(_distribution_table(batch, schema))
                written += len(batch)
        if written:
            os.replace(tmp, target)
        else:
            target.unlink(missing_ok=True)
    finally:
        Path(tmp).unlink(missing_ok=True)
    return written


def _distribution_table(batch: list[tuple[str, Any]], schema: Any) -> Any:
    import pyarrow as pa

    found = [d for _, d in batch]
    columns = {
        "key": [key for key, _ in batch],
        "k": [d.k for d in found],
        "token_ids": [d.token_ids for d in found],
        "token_logprobs": [d.token_logprobs for d in found],
        "top_ids": [list(d.top_ids) for d in found],
        "top_logprobs": [list(d.top_logprobs) for d in found],
        "tail": [d.tail for d in found],
    }
    return pa.table({name: pa.array(values, schema.field(name).type) for name, values in columns.items()})
