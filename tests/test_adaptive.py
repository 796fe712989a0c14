"""Adaptive sampling (--until-correct / --until-agree): each problem gets requests in waves until it is
settled or at --max-samples; the final set is a pure function of the stored samples, so a run stopped
midway resumes to exactly the uninterrupted run's samples, and a finished run sends nothing."""

from __future__ import annotations

import json
import random
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from helpers import arith_generate_args, invoke, invoke_ok, write_jsonl

from cotfactory.answers import answers_match
from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
GRID = ["--temperatures", "0.7", "--seeds", "1,2,3,4,5,6", "--use-n", "never", "--concurrency", "8"]


@pytest.fixture(scope="module")
def teacher() -> Any:
    """The scripted arithmetic teacher with problem-dependent difficulty (some problems mostly wrong)."""
    sys.path.insert(0, str(ROOT / "bench"))
    from arith_teacher import ArithTeacher

    with ArithTeacher("--varied") as server:
        yield server


def _sums(path: Path, count: int) -> Path:
    rng = random.Random(5)
    rows = []
    for i in range(count):
        a, b, c, d = rng.randint(10, 99), rng.randint(10, 99), rng.randint(1, 9), rng.randint(1, 9)
        rows.append({"id": f"s{i}", "question": f"What is {a} + {b} - {c} + {d}?", "answer": str(a + b - c + d)})
    return write_jsonl(path, rows)


def _args(base_url: str, data: Path, out: Path, *extra: str) -> list[str]:
    return arith_generate_args(base_url, data, out, *GRID, *extra)


def _samples(run: Path) -> dict[str, list[Any]]:
    """A run's samples by problem, in the order they were stored."""
    by_problem: dict[str, list[Any]] = defaultdict(list)
    with Store.in_run(run) as store:
        problems = store.problems()
        for sample in store.samples():
            by_problem[sample.request.problem_id].append((sample, problems[sample.request.problem_id]))
    return by_problem


def _correct(sample: Any, problem: Any) -> bool:
    return answers_match(sample.answer, problem.gold, problem)


def test_until_correct_stops_each_problem_when_settled_and_resumes_to_the_same_set(
    teacher: Any, tmp_path: Path
) -> None:
    data = _sums(tmp_path / "sums.jsonl", 40)
    grid_run, adaptive, stopped = tmp_path / "grid", tmp_path / "adaptive", tmp_path / "stopped"
    invoke_ok(*_args(teacher.base_url, data, grid_run))
    output = invoke_ok(*_args(teacher.base_url, data, adaptive, "--until-correct", "2"))
    grid, chosen = _samples(grid_run), _samples(adaptive)

    # each problem: the first samples of its sequence, stopped at the second correct one or at 6
    settled_by_grid = {p for p, rows in grid.items() if sum(_correct(*row) for row in rows) >= 2}
    assert 0 < len(settled_by_grid) < 40  # the varied teacher leaves some problems unsolved
    for problem_id, rows in chosen.items():
        seeds = [s.request.seed for s, _ in rows]
        assert sorted(seeds) == list(range(1, len(seeds) + 1))  # a prefix of the sequence, in waves
        correct = sum(_correct(*row) for row in rows)
        if problem_id in settled_by_grid:
            assert correct == 2 and _correct(*max(rows, key=lambda r: r[0].request.seed))  # stopped on the 2nd
        else:
            assert len(rows) == 6 and correct < 2
    assert set(chosen) == set(grid)  # every problem was tried
    spent = sum(len(rows) for rows in chosen.values())
    assert spent < 0.8 * sum(len(rows) for rows in grid.values())  # the point: fewer teacher calls
    assert f"samples planned              │ {spent}" in output
    invoke_ok("report", str(adaptive))
    budget = json.loads((adaptive / "report" / "report.json").read_text())["budget"]
    assert budget["rule"] == "until-correct 2, at most 6 a problem"
    assert (budget["samples"], budget["grid_samples"]) == (spent, 240)
    assert budget["tokens"] < budget["grid_tokens"]

    # stopped at a token budget mid-wave, then finished: the same final samples
    code, _ = invoke(*_args(teacher.base_url, data, stopped, "--until-correct", "2", "--max-total-tokens", "2500"))
    assert code == 3
    before = sum(len(rows) for rows in _samples(stopped).values())
    assert 0 < before < spent
    invoke_ok(*_args(teacher.base_url, data, stopped, "--until-correct", "2"))
    final = _samples(stopped)
    assert {p: sorted(s.key for s, _ in rows) for p, rows in final.items()} == {
        p: sorted(s.key for s, _ in rows) for p, rows in chosen.items()
    }
    rerun = invoke_ok(*_args(teacher.base_url, data, stopped, "--until-correct", "2"))
    assert "requests sent                │ 0" in rerun


def test_until_agree_with_more_samples_than_the_grid(teacher: Any, tmp_path: Path) -> None:
    """--max-samples past the grid's 6 repeats it with further sample indices; a problem stops once 3
    samples agree on an answer (right or wrong), or at 8."""
    data = _sums(tmp_path / "sums.jsonl", 20)
    out = tmp_path / "agree"
    invoke_ok(*_args(teacher.base_url, data, out, "--until-agree", "3", "--max-samples", "8"))
    for rows in _samples(out).values():
        answers = [s.answer for s, _ in rows]
        top = max(answers.count(a) for a in set(answers))
        assert 3 <= len(rows) <= 8
        assert top == 3 or (len(rows) == 8 and top < 3)
        assert max(answers[:-1].count(a) for a in set(answers)) < 3  # not settled one sample earlier
        assert {s.request.sample_index for s, _ in rows} == ({0} if len(rows) <= 6 else {0, 1})


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--until-agree", "2", "--until-correct", "2"], "choose one stopping rule"),
        (["--max-samples", "4"], "give until_agree or until_correct too"),
        (["--until-correct", "3", "--max-samples", "2"], "max_samples 2 is below K = 3"),
    ],
)
def test_adaptive_settings_are_checked(tmp_path: Path, extra: list[str], message: str) -> None:
    data = _sums(tmp_path / "sums.jsonl", 2)
    code, output = invoke(*_args("http://127.0.0.1:9/v1", data, tmp_path / "out", *extra))
    assert code == 2 and message in output and not (tmp_path / "out").exists()


def test_until_correct_needs_gold_answers(tmp_path: Path) -> None:
    data = write_jsonl(tmp_path / "nogold.jsonl", [{"id": "a", "question": "What is 1 + 2?"}])
    code, output = invoke(*_args("http://127.0.0.1:9/v1", data, tmp_path / "out", "--until-correct", "1"))
    assert code == 2 and "until-correct" in output and "'a'" in output and not (tmp_path / "out").exists()


def test_rationalize_failures_asks_once_for_each_problem_every_sample_missed(teacher: Any, tmp_path: Path) -> None:
    """--rationalize-failures: one 'rationalized' request (the gold answer given) for exactly the problems
    whose samples all missed gold, after them; a rerun sends nothing; consistency neither counts nor judges
    them, and filter --no-rationalized drops them."""
    data = _sums(tmp_path / "sums.jsonl", 40)
    out = tmp_path / "rescued"
    args = _args(teacher.base_url, data, out, "--rationalize-failures", "rationalize")
    args[args.index("1,2,3,4,5,6")] = "1,2"
    invoke_ok(*args)
    missed = rescued = 0
    for rows in _samples(out).values():
        sampled = [(s, p) for s, p in rows if s.request.mode == "sample"]
        extra = [s for s, _ in rows if s.request.mode == "rationalized"]
        assert len(sampled) == 2
        if any(_correct(*row) for row in sampled):
            assert extra == []
        else:
            missed += 1
            [sample] = extra
            assert sample.request.template == "rationalize" and sample.request.seed == 1
            rescued += _correct(sample, sampled[0][1])
    assert 0 < missed < 40 and rescued > 0
    rerun = invoke_ok(*args)
    assert "requests sent                │ 0" in rerun

    invoke_ok("filter", str(out), "--consistency", "0.5")
    kept = [json.loads(line) for line in (out / "filtered.jsonl").read_text().splitlines()]
    assert sum(row["mode"] == "rationalized" for row in kept) == missed  # exempt from the vote
    invoke_ok("filter", str(out), "--consistency", "0.5", "--no-rationalized")
    kept = [json.loads(line) for line in (out / "filtered.jsonl").read_text().splitlines()]
    assert not any(row["mode"] == "rationalized" for row in kept)
    stages = {stage["stage"]: stage for stage in json.loads((out / "funnel.json").read_text())["stages"]}
    assert stages["rationalized"]["dropped"] == {"rationalized": missed}

    invoke_ok("report", str(out))
    budget = json.loads((out / "report" / "report.json").read_text())["budget"]
    assert budget["rule"] is None and budget["samples"] == budget["grid_samples"] == 80
    assert (budget["rationalized"], budget["rescued"]) == (missed, rescued)
    assert "rescued" in (out / "report" / "report.html").read_text()
