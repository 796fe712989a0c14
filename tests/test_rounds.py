"""Hard-problem rounds (Lion) through `cotfactory run`: each round probes the last student on a
training-side pool, samples the teacher on the problems it failed, retrains on the union and
evaluates; a rerun skips every finished stage, and the pool may not be the eval split."""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, invoke_ok, write_jsonl

ROOT = Path(__file__).resolve().parent.parent

PIPELINE = """\
name: rounds
out: {out}
generate:
  input: {train}
  answer_type: number
  teacher: openai
  model: arith-teacher
  base_url: [{base_url}]
  api_key_env: ''
  templates: [zero-shot-cot]
  temperatures: [0.7]
  seeds: [1]
  use_n: never
  concurrency: 4
filter:
  correct: true
students:
  - name: ftc
    method: finetune-cot
    student: scratch:llama-tiny
    max_steps: 2
    batch_size: 4
    lr: 0.003
eval:
  input: {heldout}
  answer_type: number
  batch_size: 8
  max_new_tokens: 8
rounds:
  count: 2
  pool: {pool}
  answer_type: number
  samples: 2
"""


def _sums(path: Path, count: int, seed: int, start: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"id": f"s{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)})
    return write_jsonl(path, rows)


@pytest.fixture(scope="module")
def teacher() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    from arith_teacher import ArithTeacher

    with ArithTeacher() as server:
        yield server


def test_two_rounds_probe_sample_retrain_and_evaluate(teacher: Any, tmp_path: Path) -> None:
    train = _sums(tmp_path / "train.jsonl", 12, seed=1, start=0)
    pool = _sums(tmp_path / "pool.jsonl", 10, seed=2, start=100)
    heldout = _sums(tmp_path / "heldout.jsonl", 6, seed=3, start=200)
    out = tmp_path / "run"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE.format(out=out, train=train, pool=pool, heldout=heldout, base_url=teacher.base_url))
    invoke_ok("run", str(pipeline))

    round0 = [json.loads(line) for line in (out / "filtered.jsonl").read_text().splitlines()]
    total = len(round0)
    for number in (1, 2):
        here = out / "rounds" / str(number)
        probe = [json.loads(line) for line in (here / "probe" / "predictions.jsonl").read_text().splitlines()]
        assert len(probe) == 10 and {p["problem_id"] for p in probe} <= {f"s{i}" for i in range(100, 110)}
        failed = {p["problem_id"] for p in probe if not p["correct"]}  # a 2-step random student fails them all
        hard = [json.loads(line) for line in (here / "hard_problems.jsonl").read_text().splitlines()]
        assert {h["id"] for h in hard} == failed and failed
        samples = [json.loads(line) for line in (here / "samples.jsonl").read_text().splitlines()]
        seeds = {2 * number - 1, 2 * number}  # each round its own: a problem failed again gets new samples
        assert len(samples) == 2 * len(failed) and {s["seed"] for s in samples} == seeds
        kept = [json.loads(line) for line in (here / "filtered.jsonl").read_text().splitlines()]
        total += len(kept)
        union = (here / "union.jsonl").read_text().splitlines()
        assert len(union) == total  # round 0 and every round so far
        evaluation = json.loads((here / "student" / "eval.json").read_text())
        assert evaluation["total"] == 6

    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    assert report["rounds"][1]["hard_problems"] == len(
        json.loads("[" + ",".join((out / "rounds" / "1" / "hard_problems.jsonl").read_text().splitlines()) + "]")
    )
    assert all(r["evaluation"]["total"] == 6 for r in report["rounds"])
    assert (
        "rounds.png" in report["plots"].values()
        and "Hard-problem rounds" in (out / "report" / "report.html").read_text()
    )

    rerun = invoke_ok("run", str(pipeline))
    assert rerun.count("unchanged, skipped") == 5 + 2 * 5  # generate … report, and two rounds of five


def test_the_pool_may_not_be_the_eval_split(tmp_path: Path) -> None:
    heldout = _sums(tmp_path / "heldout.jsonl", 3, seed=3, start=200)
    pipeline = tmp_path / "pipeline.yaml"
    text = PIPELINE.format(out=tmp_path / "run", train=heldout, pool=heldout, heldout=heldout, base_url="http://x")
    pipeline.write_text(text)
    code, output = invoke("run", str(pipeline))
    assert code == 2 and "never the test split" in output
