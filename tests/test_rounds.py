"""Hard-problem rounds (Lion) through `cotfactory run`: each round probes the last student on a
training-side pool, samples the teacher on the problems it failed (with gold: answered wrong; without:
answered otherwise than the teacher's majority), retrains on the union and evaluates; `--rounds N` sets
the count; a rerun skips every finished stage, and the pool may not be the eval split."""

from __future__ import annotations

import json
import random
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, invoke_ok, read_jsonl, write_jsonl

from cotfactory import rounds
from cotfactory.answers import answers_match
from cotfactory.records import Problem

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


def sums_file(path: Path, count: int, seed: int, start: int, without_gold: int = 0) -> Path:
    """``count`` sums ``s<start>``…; the last ``without_gold`` of them have no answer."""
    rng = random.Random(seed)
    rows = []
    for i in range(start, start + count):
        a, b = rng.randint(10, 99), rng.randint(10, 99)
        rows.append({"id": f"s{i}", "question": f"What is {a} + {b}?", "answer": str(a + b)})
    for row in rows[count - without_gold :]:
        del row["answer"]
    return write_jsonl(path, rows)


def _number(problem_id: str) -> Problem:
    return Problem(id=problem_id, question="?", answer_type="number")


@pytest.fixture(scope="module")
def teacher() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    from arith_teacher import ArithTeacher

    with ArithTeacher() as server:
        yield server


def test_two_rounds_probe_sample_retrain_and_evaluate(teacher: Any, tmp_path: Path) -> None:
    train = sums_file(tmp_path / "train.jsonl", 12, seed=1, start=0)
    pool = sums_file(tmp_path / "pool.jsonl", 10, seed=2, start=100, without_gold=5)  # s105…s109: no gold
    heldout = sums_file(tmp_path / "heldout.jsonl", 6, seed=3, start=200)
    out = tmp_path / "run"
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(PIPELINE.format(out=out, train=train, pool=pool, heldout=heldout, base_url=teacher.base_url))
    first = invoke_ok("run", str(pipeline), "--rounds", "1")  # the file says 2: the flag wins
    assert (out / "rounds" / "1" / "student" / "eval.json").exists() and not (out / "rounds" / "2").exists()
    assert "round2:" not in first
    sent = teacher.stats()["requests"]
    second = invoke_ok("run", str(pipeline))  # the file's two rounds: round 1 is kept, round 2 runs
    for stage in ("rounds:pool_teacher", "round1:probe", "round1:generate", "round1:filter", "round1:train"):
        assert f"{stage}: unchanged, skipped" in second

    # the pool teacher: the gold-less pool problems once (the pipeline's grid: 1 sample each), for both rounds
    teacher_run = out / "rounds" / "pool_teacher"
    pooled = read_jsonl(teacher_run / "samples.jsonl")
    without_gold = {f"s{i}" for i in range(105, 110)}
    assert sorted(s["problem_id"] for s in pooled) == sorted(without_gold) and {s["seed"] for s in pooled} == {1}
    answers = {row["problem_id"]: row for row in read_jsonl(teacher_run / "answers.jsonl")}
    for sample in pooled:  # one sample: its answer is the majority
        said = answers[sample["problem_id"]]
        votes = int(sample["answer"] is not None)
        assert (said["answer"], said["votes"], said["drawn"]) == (sample["answer"], votes, 1)
    assert teacher.stats()["requests"] - sent == len(read_jsonl(out / "rounds" / "2" / "samples.jsonl")) + len(
        read_jsonl(out / "rounds" / "2" / "disagree" / "samples.jsonl")
    )  # round 2 sent its hard problems' samples only: the pool teacher's answers were reused

    round0 = read_jsonl(out / "filtered.jsonl")
    total = len(round0)
    triggers: Counter = Counter()
    for number in (1, 2):
        here = out / "rounds" / str(number)
        probe = read_jsonl(here / "probe" / "predictions.jsonl")
        assert len(probe) == 10 and {p["problem_id"] for p in probe} <= {f"s{i}" for i in range(100, 110)}
        expected = {}
        for p in probe:
            if p["gold"] is not None and not p["correct"]:  # a 2-step random student fails them all
                expected[p["problem_id"]] = "wrong"
            said = answers.get(p["problem_id"])
            if (
                p["gold"] is None
                and said["answer"] is not None
                and not answers_match(p["prediction"], said["answer"], _number(p["problem_id"]))
            ):
                expected[p["problem_id"]] = "disagree"
        hard = read_jsonl(here / "hard_problems.jsonl")
        assert {h["id"]: h["trigger"] for h in hard} == expected
        for h in hard:
            if h["trigger"] == "disagree":
                said = answers[h["id"]]
                assert h["answer"] is None and h["teacher_answer"] == said["answer"]
                assert h["teacher_votes"] == f"{said['votes']}/{said['drawn']}"
        counts = Counter(expected.values())
        triggers += counts
        summary = json.loads((here / "hard_problems.json").read_text())
        no_answer = sum(answers[i]["answer"] is None for i in without_gold)
        assert summary == {
            "round": number,
            "probed": 10,
            "hard_problems": len(hard),
            "wrong": counts["wrong"],
            "disagree": counts["disagree"],
            "no_teacher_answer": no_answer,
        }
        seeds = {2 * number - 1, 2 * number}  # each round its own: a problem failed again gets new samples
        samples = read_jsonl(here / "samples.jsonl")  # the problems with gold
        assert sorted(s["problem_id"] for s in samples) == sorted(2 * [i for i, t in expected.items() if t == "wrong"])
        assert {s["seed"] for s in samples} == seeds
        disagreed = read_jsonl(here / "disagree" / "samples.jsonl")  # those without: a run of their own
        assert sorted(s["problem_id"] for s in disagreed) == sorted(
            2 * [i for i, t in expected.items() if t == "disagree"]
        )
        assert {s["seed"] for s in disagreed} == seeds
        # without gold, the round's own majority is the pseudo-label: kept where both samples agree
        by_problem: dict[str, list[dict[str, Any]]] = {}
        for sample in disagreed:
            by_problem.setdefault(sample["problem_id"], []).append(sample)
        agreed = {
            s["key"]
            for group in by_problem.values()
            if group[0]["answer"] is not None and len({s["answer"] for s in group}) == 1
            for s in group
        }
        kept_disagree = read_jsonl(here / "disagree" / "filtered.jsonl")
        assert {r["key"] for r in kept_disagree} == agreed
        assert all(r["pseudo_label"] is True and r["label"] == r["answer"] for r in kept_disagree)
        funnel = json.loads((here / "disagree" / "funnel.json").read_text())
        assert not any("no_gold" in stage["dropped"] for stage in funnel["stages"])
        assert "consistency" in funnel["config"]["chain"] and funnel["config"]["consistency"] == 1.0
        kept = read_jsonl(here / "filtered.jsonl")
        assert all(r["pseudo_label"] is False for r in kept)
        total += len(kept) + len(kept_disagree)
        union = read_jsonl(here / "union.jsonl")
        assert len(union) == total and {r["key"] for r in kept_disagree} <= {r["key"] for r in union}
        evaluation = json.loads((here / "student" / "eval.json").read_text())
        assert evaluation["total"] == 6
    assert triggers["wrong"] and triggers["disagree"]  # both triggers happen in this run

    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]
    for row in report["rounds"]:
        here = out / "rounds" / str(row["round"])
        hard = read_jsonl(here / "hard_problems.jsonl") if row["round"] else []
        wrong = sum(h["trigger"] == "wrong" for h in hard)
        assert (row["hard_problems"], row["wrong"], row["disagree"]) == (len(hard), wrong, len(hard) - wrong)
        trained_on = here / "union.jsonl" if row["round"] else out / "filtered.jsonl"
        assert row["records"] == len(read_jsonl(trained_on)) and row["new_problems"] is None
        assert row["evaluation"]["total"] == 6 and len(row["evaluation"]["generated"]["interval"]) == 2
    html = (out / "report" / "report.html").read_text()
    assert "rounds.png" in report["plots"].values() and "Hard-problem rounds" in html
    assert "hard problems sampled (wrong / disagree)" in html and "records trained on" in html
    round1 = report["rounds"][1]
    low, high = round1["evaluation"]["generated"]["interval"]
    assert f"<td>{round1['hard_problems']} ({round1['wrong']} / {round1['disagree']})</td>" in html
    assert f'<td class="num">{round1["records"]}</td>' in html and f"[{low:.3f}, {high:.3f}]" in html

    rerun = invoke_ok("run", str(pipeline))
    assert rerun.count("unchanged, skipped") == 5 + 1 + 2 * 5  # generate … report, the pool teacher, two rounds


def test_hard_problems_wrong_with_gold_disagree_without(tmp_path: Path) -> None:
    """The referee's rule on a probe: with gold, a wrong answer; without, an answer other than the
    teacher's majority (none counts as other); no teacher answer, not hard."""
    out = tmp_path / "run"

    def prediction(pid: str, gold: str | None, said: str | None) -> dict[str, Any]:
        correct = gold is not None and said == gold
        return {"problem_id": pid, "question": f"q {pid}", "choices": None, "gold": gold, "prediction": said,
                "correct": correct}  # fmt: skip

    write_jsonl(
        rounds.probe_path(out, 1),
        [
            prediction("wrong", "5", "4"),
            prediction("right", "6", "6"),
            prediction("agree", None, "7.0"),  # the teacher's 7, as a number
            prediction("disagree", None, "9"),
            prediction("silent", None, None),  # no answer is no agreement
            prediction("no-majority", None, "1"),
            prediction("unsampled", None, "2"),
        ],
    )
    teacher = [("agree", "7", 2), ("disagree", "8", 3), ("silent", "3", 2), ("no-majority", None, 0)]
    write_jsonl(
        rounds.teacher_answers_path(out),
        [{"problem_id": pid, "answer_type": "number", "answer": a, "votes": v, "drawn": 3, "tie": False}
         for pid, a, v in teacher],
    )  # fmt: skip
    summary = rounds.write_hard_problems(out, 1)
    assert summary == {
        "round": 1, "probed": 7, "hard_problems": 3, "wrong": 1, "disagree": 2, "no_teacher_answer": 2,
    }  # fmt: skip
    hard = read_jsonl(rounds.hard_problems_path(out, 1))
    assert [(h["id"], h["trigger"], h["student_answer"]) for h in hard] == [
        ("wrong", "wrong", "4"),
        ("disagree", "disagree", "9"),
        ("silent", "disagree", None),
    ]
    assert hard[1]["teacher_answer"] == "8" and hard[1]["teacher_votes"] == "3/3" and hard[1]["answer"] is None
    assert read_jsonl(rounds.wrong_input_path(out, 1)) == [
        {"id": "wrong", "question": "q wrong", "answer": "5", "choices": None}
    ]
    assert [r["id"] for r in read_jsonl(rounds.disagree_input_path(out, 1))] == ["disagree", "silent"]
    assert all("answer" not in r for r in read_jsonl(rounds.disagree_input_path(out, 1)))
    assert json.loads(rounds.hard_summary_path(out, 1).read_text()) == summary
    assert rounds.probe_line(summary) == (
        "round 1: 3 hard of 7 pool problems: 1 wrong (gold), 2 disagree with the teacher's majority (no gold); "
        "2 without gold and without a teacher answer, left alone"
    )


@pytest.mark.parametrize(
    ("flag", "names"),
    [
        ("two", ["--rounds 'two'", "whole number"]),
        ("0", ["--rounds 0", "1 or more"]),
        ("-1", ["--rounds -1", "1 or more"]),
    ],
)
def test_a_bad_rounds_flag_is_one_line_exit_2(tmp_path: Path, flag: str, names: list[str]) -> None:
    pipeline = _pipeline_file(tmp_path)
    code, output = invoke("run", str(pipeline), "--rounds", flag)
    _one_line_error(code, output, names)
    assert not (tmp_path / "run").exists()


def test_rounds_flag_needs_a_rounds_section(tmp_path: Path) -> None:
    pipeline = _pipeline_file(tmp_path)
    pipeline.write_text(pipeline.read_text().split("rounds:\n")[0])
    code, output = invoke("run", str(pipeline), "--rounds", "2")
    _one_line_error(code, output, ["--rounds 2", str(pipeline), "no rounds: section"])
    assert not (tmp_path / "run").exists()


def test_contrastive_sampling_refuses_a_pool_without_gold(tmp_path: Path) -> None:
    """Contrastive decoding needs gold, so it cannot give the teacher's answer to a gold-less pool
    problem: refused when the stages are planned, before any runs."""
    from cotfactory.config.pipeline import load_pipeline
    from cotfactory.console import make_console
    from cotfactory.errors import ConfigError
    from cotfactory.pipeline import plan_stages

    config = load_pipeline(_pipeline_file(tmp_path, without_gold=1))
    contrastive = config.generate.model_copy(update={"contrastive": True})  # unchecked: its teacher is openai
    with pytest.raises(ConfigError, match=r"rounds\.pool .*: problems without gold .* contrastive"):
        plan_stages(config.model_copy(update={"generate": contrastive}), make_console(stderr=True))
    assert not (tmp_path / "run").exists()


def _pipeline_file(tmp_path: Path, without_gold: int = 0) -> Path:
    data = sums_file(tmp_path / "train.jsonl", 3, seed=1, start=0)
    pool = sums_file(tmp_path / "pool.jsonl", 3, seed=2, start=100, without_gold=without_gold)
    heldout = sums_file(tmp_path / "heldout.jsonl", 3, seed=3, start=200)
    text = PIPELINE.format(out=tmp_path / "run", train=data, pool=pool, heldout=heldout, base_url="http://127.0.0.1:9")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(text)
    return pipeline


def _one_line_error(code: int, output: str, names: list[str]) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: "), output
    assert all(name in lines[0] for name in names), output


def test_the_pool_may_not_be_the_eval_split(tmp_path: Path) -> None:
    heldout = sums_file(tmp_path / "heldout.jsonl", 3, seed=3, start=200)
    pipeline = tmp_path / "pipeline.yaml"
    text = PIPELINE.format(out=tmp_path / "run", train=heldout, pool=heldout, heldout=heldout, base_url="http://x")
    pipeline.write_text(text)
    code, output = invoke("run", str(pipeline))
    assert code == 2 and "never the test split" in output
