"""`cotfactory merge`: four shards of one plan merge into the unsharded run, key for key and text for
text, exports in plan order; merging again adds nothing; shards of another plan or with another text
for one key are refused with one line (exit 2), naming the difference or both shards."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import arith_generate_args, invoke, invoke_ok, write_jsonl

from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--temperatures", "0.2,0.9", "--seeds", "1,2", "--use-n", "never", "--concurrency", "8"]


def _teacher(*args: str) -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    from arith_teacher import ArithTeacher

    return ArithTeacher(*args)


@pytest.fixture(scope="module")
def teacher() -> Any:
    with _teacher() as server:
        yield server


def _data(tmp_path: Path) -> Path:
    rows = [
        {"id": f"s{i}", "question": f"What is {10 + i} + {20 + 3 * i} - 7?", "answer": str(23 + 4 * i)}
        for i in range(22)
    ]
    return write_jsonl(tmp_path / "sums.jsonl", rows)


def _args(base_url: str, data: Path, out: Path, *extra: str) -> list[str]:
    return arith_generate_args(base_url, data, out, *GRID, *extra)


def _texts(run: Path) -> dict[str, str]:
    with Store.in_run(run) as store:
        return {s.key: s.text for s in store.samples()}


def test_four_shards_merge_into_the_unsharded_run(teacher: Any, tmp_path: Path) -> None:
    data = _data(tmp_path)
    whole = tmp_path / "whole"
    invoke_ok(*_args(teacher.base_url, data, whole))
    shards = [tmp_path / f"shard{i}" for i in range(4)]
    for i, shard in enumerate(shards):
        invoke_ok(*_args(teacher.base_url, data, shard, "--shard", f"{i}/4"))
    merged = tmp_path / "merged"
    output = invoke_ok("merge", str(merged), *map(str, shards))
    assert "4 shards" in output and "88 samples added, 88 in all" in output
    assert _texts(merged) == _texts(whole)

    def exported(run: Path) -> list[tuple[str, str, str]]:  # plan order; latency is the one field that differs
        rows = [json.loads(line) for line in (run / "samples.jsonl").read_text().splitlines()]
        return [(row["key"], row["text"], row["answer"]) for row in rows]

    assert exported(merged) == exported(whole)
    assert json.loads((merged / "config.json").read_text())["shard"] is None

    again = invoke_ok("merge", str(merged), *map(str, shards))
    assert "0 samples added, 88 in all" in again
    invoke_ok("filter", str(merged), "--correct")  # a run directory like any other
    assert (merged / "filtered.jsonl").exists()


def test_shards_of_another_plan_or_with_other_texts_are_refused(teacher: Any, tmp_path: Path) -> None:
    data = _data(tmp_path)
    a, b, hot = tmp_path / "a", tmp_path / "b", tmp_path / "hot"
    invoke_ok(*_args(teacher.base_url, data, a, "--shard", "0/2"))
    invoke_ok(*_args(teacher.base_url, data, hot, "--shard", "1/2", "--max-tokens", "32"))
    code, output = invoke("merge", str(tmp_path / "m1"), str(a), str(hot))
    assert code == 2 and "'max_tokens' differs" in output and str(a) in output
    with _teacher("--seed", "7") as other:  # the same requests answered otherwise
        invoke_ok(*_args(other.base_url, data, b, "--shard", "0/2"))
    code, output = invoke("merge", str(tmp_path / "m2"), str(a), str(b))
    assert code == 2 and "has another text in" in output and str(a) in output and str(b) in output
    assert not (tmp_path / "m2").exists()  # refused before anything is written
    limited = [tmp_path / f"limited{i}" for i in range(2)]
    for i, shard in enumerate(limited):  # --limit counts within each shard: the union is no one selection
        invoke_ok(*_args(teacher.base_url, data, shard, "--shard", f"{i}/2", "--limit", "3"))
    code, output = invoke("merge", str(tmp_path / "m4"), *map(str, limited))
    assert code == 2 and "--limit 3 and --shard" in output and not (tmp_path / "m4").exists()
    code, output = invoke("merge", str(a), str(a))
    assert code == 2 and "is one of the shards" in output
    code, output = invoke("merge", str(tmp_path / "m3"), str(tmp_path / "nothing"))
    assert code == 2 and "not a run directory" in output
