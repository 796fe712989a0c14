"""Helpers shared by the tests and the benchmarks: the CLI in-process, JSONL files, records with defaults.

Tests import it as ``from helpers import invoke, read_jsonl, ...`` (conftest.py puts tests/ on sys.path, as
for fake_openai_server and tiny_models); bench scripts put tests/ on sys.path themselves. cotfactory's CLI
is imported on first use, so importing this module stays cheap.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cotfactory.records import Request, Sample

if TYPE_CHECKING:
    from click.testing import Result

# --------------------------------------------------------------------------------------------- the CLI


def run_cli(*args: str | os.PathLike[str]) -> Result:
    """``cotfactory ARGS`` in this process (typer's CliRunner): click's Result (exit_code, output, stdout,
    stderr, exception)."""
    from typer.testing import CliRunner

    from cotfactory.cli import app

    return CliRunner().invoke(app, [str(arg) for arg in args])


def invoke(*args: str | os.PathLike[str]) -> tuple[int, str]:
    """``cotfactory ARGS`` in this process: (exit code, output)."""
    result = run_cli(*args)
    return result.exit_code, result.output


def invoke_ok(*args: str | os.PathLike[str]) -> str:
    """``cotfactory ARGS`` in this process, which must exit 0: its output."""
    code, output = invoke(*args)
    assert code == 0, output
    return output


def cli_or_exit(*args: str | os.PathLike[str]) -> str:
    """For benchmarks: ``cotfactory ARGS`` in this process; its stdout, or exit with its output on failure."""
    result = run_cli(*args)
    if result.exit_code != 0:
        command = " ".join(str(arg) for arg in args)
        sys.exit(f"cotfactory {command} failed ({result.exit_code}):\n{result.output}\n{result.exception!r}")
    return result.stdout


# --------------------------------------------------------------------------------------------- JSONL files


def read_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """The rows of a JSONL file; blank lines are skipped."""
    text = Path(path).read_text(encoding="utf-8")
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def write_jsonl(path: Path, rows: Iterable[Any]) -> Path:
    """Write ``rows`` one JSON value a line (creating the folder); returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def write_sums(path: Path, count: int, suffixes: dict[int, str] | None = None) -> Path:
    """``count`` number problems ``q<i>``: "What is i plus i+1?" (answer 2i+1), ``suffixes[i]`` appended to
    question i; returns ``path``."""
    suffixes = suffixes or {}
    rows = (
        {"id": f"q{i}", "question": f"What is {i} plus {i + 1}?" + suffixes.get(i, ""), "answer": str(2 * i + 1)}
        for i in range(count)
    )
    return write_jsonl(path, rows)


def fake_teacher_args(base_url: str, data: Path, out: Path, key_env: str, *extra: str) -> list[str]:
    """``generate`` of number problems with the zero-shot-cot template against the fake server's model."""
    return [
        "generate",
        "--input",
        str(data),
        "--answer-type",
        "number",
        "--teacher",
        "openai",
        "--model",
        "fake-teacher",
        "--base-url",
        base_url,
        "--api-key-env",
        key_env,
        "--template",
        "zero-shot-cot",
        "--out",
        str(out),
        *extra,
    ]


# --------------------------------------------------------------------------------------------- records

#: make_request's defaults; the key of ``make_request()`` is pinned in test_records.py.
REQUEST_DEFAULTS: dict[str, Any] = {
    "problem_id": "p1",
    "template": "zero-shot-cot",
    "template_hash": "abc",
    "teacher": "openai",
    "model": "m",
    "temperature": 0.7,
    "seed": 1,
    "max_tokens": 64,
}


def make_request(**overrides: Any) -> Request:
    """A valid Request: :data:`REQUEST_DEFAULTS` with ``overrides``."""
    return Request(**{**REQUEST_DEFAULTS, **overrides})


def make_sample(answer: str | None = None, text: str = "", *, request: Request | None = None, **fields: Any) -> Sample:
    """A Sample with this answer and text (its rationale too, unless given). ``fields`` are Sample fields
    or, without ``request``, Request fields for :func:`make_request`."""
    request_fields = {name: fields.pop(name) for name in list(fields) if name in Request.model_fields}
    if request is None:
        request = make_request(**request_fields)
    elif request_fields:
        raise TypeError(f"request fields {sorted(request_fields)} given with a request")
    fields.setdefault("rationale", text)
    return Sample(request=request, text=text, answer=answer, **fields)


def stored_samples(run_dir: Path) -> int:
    """Samples in a run's store so far (0 before it exists, or while it is being created): for tests
    that kill a run once it has made some progress."""
    from cotfactory.store import Store

    if not (run_dir / "store.sqlite").exists():
        return 0
    try:
        with Store.in_run(run_dir) as store:
            return store.count()
    except Exception:  # the file is being created
        return 0


def arith_generate_args(base_url: str, data: Path, out: Path, *extra: str) -> list[str]:
    """``generate`` of number problems with zero-shot-cot against bench/arith_teacher.py's model."""
    return [
        "generate", "--input", str(data), "--format", "jsonl", "--answer-type", "number", "--teacher", "openai",
        "--model", "arith-teacher", "--base-url", base_url, "--api-key-env", "", "--template", "zero-shot-cot",
        "--max-tokens", "64", "--out", str(out), *extra,
    ]  # fmt: skip


def former_hf_samples(teacher: Any, requests: list[Request]) -> list[Sample]:
    """The hf teacher's former decoding, kept as the reference its shared-prefix loop must match:
    HF ``model.generate`` greedy over a logits processor that samples each row from its own stream
    (``RowSampling``; only the chosen token left finite), all requests in one left-padded batch."""
    import torch

    from cotfactory.decoders.per_row_sampling import RowSampling

    sampling = RowSampling(
        [r.temperature for r in requests], [r.top_p for r in requests], [r.sample_seed for r in requests]
    )

    def per_row(input_ids: Any, scores: Any) -> Any:
        chosen = sampling.choose(scores)
        return torch.full_like(scores, float("-inf")).scatter_(1, chosen.unsqueeze(1), 0.0)

    encoded = [teacher._encode(r.prompt) for r in requests]
    stop = list(requests[0].prompt.stop)
    padded = teacher.tokenizer.pad({"input_ids": encoded}, return_tensors="pt")
    with torch.inference_mode():
        out = teacher.model.generate(
            **padded,
            max_new_tokens=requests[0].max_tokens,
            do_sample=False,
            temperature=None,
            top_p=None,
            top_k=None,
            logits_processor=[per_row],
            stop_strings=stop or None,
            tokenizer=teacher.tokenizer if stop else None,
            pad_token_id=teacher.tokenizer.pad_token_id,
            eos_token_id=teacher._eos_ids(),
        )
    width = padded["input_ids"].shape[1]
    return [
        teacher._to_sample(request, len(ids), out[row, width:].tolist(), stop, 0.0)
        for row, (request, ids) in enumerate(zip(requests, encoded, strict=True))
    ]
