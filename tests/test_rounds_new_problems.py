"""New problems in hard-problem rounds (``rounds.problem_template``, Lion's generation step): for every
problem the student failed the teacher writes a new one like it and samples it; the new problems whose
samples agree are kept with their majority answer as pseudo-gold, marked as generated, and trained on;
the rest are dropped and counted. Two rounds on the scripted arithmetic teacher that also writes
(bench/arith_writer.py: a fifth of its write replies are out of form); a rerun after a kill sends nothing."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
from helpers import invoke, invoke_ok, read_jsonl
from test_rounds import PIPELINE, sums_file

from cotfactory.new_problems import new_problem_id, read_new_question, summary_line

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = 2  # rounds.samples: a new question is kept when both of its samples agree


@pytest.fixture(scope="module")
def writer() -> Any:
    sys.path.insert(0, str(ROOT / "bench"))
    from arith_writer import ArithWriter

    with ArithWriter() as server:
        yield server


@pytest.fixture(scope="module")
def finished(writer: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """A two-round pipeline with problem_template, run once: (pipeline file, run directory, its output)."""
    tmp = tmp_path_factory.mktemp("new_problems")
    train = sums_file(tmp / "train.jsonl", 12, seed=1, start=0)
    pool = sums_file(tmp / "pool.jsonl", 10, seed=2, start=100, without_gold=3)  # hard by disagreeing with the teacher
    heldout = sums_file(tmp / "heldout.jsonl", 6, seed=3, start=200)
    out = tmp / "run"
    pipeline = tmp / "pipeline.yaml"
    text = PIPELINE.format(out=out, train=train, pool=pool, heldout=heldout, base_url=writer.base_url)
    pipeline.write_text(text + "  problem_template: new-problem\n")
    return pipeline, out, invoke_ok("run", str(pipeline))


def _round(out: Path, number: int) -> Path:
    return out / "rounds" / str(number)


def _answers(out: Path, number: int) -> dict[str, list[str | None]]:
    """Each new question's sample answers, from the solve run."""
    found: dict[str, list[str | None]] = {}
    for row in read_jsonl(_round(out, number) / "new" / "solve" / "samples.jsonl"):
        found.setdefault(row["problem_id"], []).append(row["answer"])
    return found


def test_every_hard_problem_is_asked_once_for_a_new_question(finished: tuple[Path, Path, str]) -> None:
    _, out, _ = finished
    disagreeing = 0
    for number in (1, 2):
        new = _round(out, number) / "new"
        hard = [row["id"] for row in read_jsonl(_round(out, number) / "hard_problems.jsonl")]
        writes = read_jsonl(new / "write" / "samples.jsonl")
        assert [w["problem_id"] for w in writes] == hard  # one request each, in order
        assert {w["template"] for w in writes} == {"new-problem"} and {w["seed"] for w in writes} == {number}
        questions = read_jsonl(new / "questions.jsonl")
        unwritten = read_jsonl(new / "unwritten.jsonl")
        by_key = {w["key"]: w for w in writes}
        for question in questions:
            origin = question["metadata"]["generated_from"]
            assert question["id"] == new_problem_id(origin, number) == f"{origin}~gen{number}"
            assert question["metadata"] == {
                "generated_from": origin,
                "round": number,
                "write_key": question["metadata"]["write_key"],
            }
            write = by_key[question["metadata"]["write_key"]]
            assert write["problem_id"] == origin and write["text"] == f"New question: {question['question']}"
            assert "answer" not in question  # no gold: the teacher's samples must agree on one
        for dropped in unwritten:
            assert dropped["reason"] == "unparseable" and "New question:" not in dropped["text"]
        origins = [q["metadata"]["generated_from"] for q in questions] + [u["from"] for u in unwritten]
        assert sorted(origins) == sorted(hard)  # each hard problem: one question or one reason
        shown = read_jsonl(new / "origins.jsonl")  # the answer the template shows: gold, else the teacher's
        rows = read_jsonl(_round(out, number) / "hard_problems.jsonl")
        assert [o["id"] for o in shown] == hard
        assert [o["answer"] for o in shown] == [r["answer"] or r["teacher_answer"] for r in rows]
        disagreeing += sum(r["trigger"] == "disagree" for r in rows)
    assert disagreeing  # gold-less hard problems get new problems like them too


def test_agreeing_questions_are_kept_with_their_answer_as_pseudo_gold(finished: tuple[Path, Path, str]) -> None:
    _, out, _ = finished
    kinds = {"kept": 0, "disagree": 0}
    for number in (1, 2):
        new = _round(out, number) / "new"
        answers = _answers(out, number)
        questions = read_jsonl(new / "questions.jsonl")
        assert {q["id"] for q in questions} == set(answers)
        assert all(len(a) == SAMPLES for a in answers.values())
        agreed = {pid: a[0] for pid, a in answers.items() if a[0] is not None and len(set(a)) == 1}
        kept = {row["id"]: row for row in read_jsonl(new / "problems.jsonl")}
        assert {pid: row["answer"] for pid, row in kept.items()} == agreed  # the agreed answer is the pseudo-gold
        for pid, row in kept.items():
            origin = pid.removesuffix(f"~gen{number}")
            assert row["metadata"]["generated_from"] == origin and row["metadata"]["round"] == number
            assert row["metadata"]["pseudo_gold"] is True and row["metadata"]["votes"] == f"{SAMPLES}/{SAMPLES}"
        solve = read_jsonl(new / "solve" / "samples.jsonl")
        records = read_jsonl(new / "records.jsonl")
        assert sorted(r["key"] for r in records) == sorted(s["key"] for s in solve if s["problem_id"] in kept)
        for record in records:
            pseudo = kept[record["problem_id"]]["answer"]
            assert record["answer"] == record["label"] == pseudo and record["pseudo_label"] is True
            assert record["generated"] == {
                "from": kept[record["problem_id"]]["metadata"]["generated_from"],
                "round": number,
            }
        union = {row["key"] for row in read_jsonl(_round(out, number) / "union.jsonl")}
        assert {r["key"] for r in records} <= union  # trained on by this round's student
        kinds["kept"] += len(kept)
        kinds["disagree"] += len(answers) - len(kept)
    assert kinds["kept"] and kinds["disagree"]  # both outcomes happen in this run
    round2_union = len(read_jsonl(_round(out, 2) / "union.jsonl"))
    parts = [out / "filtered.jsonl"] + [
        _round(out, n) / name for n in (1, 2) for name in ("filtered.jsonl", "new/records.jsonl")
    ]
    assert round2_union == sum(len(read_jsonl(p)) for p in parts)


def test_what_was_dropped_is_counted_beside_the_round_and_printed(finished: tuple[Path, Path, str]) -> None:
    _, out, output = finished
    unparseable = 0
    for number in (1, 2):
        new = _round(out, number) / "new"
        summary = json.loads((_round(out, number) / "new_problems.json").read_text())
        hard = read_jsonl(_round(out, number) / "hard_problems.jsonl")
        questions = read_jsonl(new / "questions.jsonl")
        kept = read_jsonl(new / "problems.jsonl")
        dropped = {
            "disagree": len(questions) - len(kept),
            "unparseable": len(read_jsonl(new / "unwritten.jsonl")),
        }
        assert summary["asked"] == len(hard) and summary["written"] == len(questions)
        assert summary["kept"] == len(kept) and summary["records"] == len(read_jsonl(new / "records.jsonl"))
        assert summary["dropped"] == {reason: n for reason, n in dropped.items() if n}
        assert summary["samples_per_question"] == SAMPLES and summary["agreement_needed"] == SAMPLES
        assert summary["kept"] + sum(summary["dropped"].values()) == summary["asked"]
        for run, name in ((new / "write", "write"), (new / "solve", "solve")):
            tokens = sum(r["prompt_tokens"] + r["completion_tokens"] for r in read_jsonl(run / "samples.jsonl"))
            assert summary["teacher_tokens"][name] == tokens > 0
        outcomes = {p["id"]: p["outcome"] for p in summary["problems"] if p["id"] is not None}
        kept_ids = {k["id"] for k in kept}
        assert outcomes == {q["id"]: "kept" if q["id"] in kept_ids else "disagree" for q in questions}
        assert summary_line(summary) in output  # the agree stage's printed summary
        unparseable += dropped["unparseable"]
    assert unparseable  # an out-of-form reply happens in this run, and is dropped
    report = json.loads((out / "report" / "report.json").read_text())
    assert [r["round"] for r in report["rounds"]] == [0, 1, 2]


def test_a_rerun_after_a_kill_sends_nothing_and_makes_the_same_problems(
    finished: tuple[Path, Path, str], writer: Any
) -> None:
    pipeline, out, _ = finished
    new = _round(out, 1) / "new"
    made = {name: (new / name).read_text() for name in ("questions.jsonl", "problems.jsonl", "records.jsonl")}
    summary = (_round(out, 1) / "new_problems.json").read_text()
    sent = writer.stats()["requests"]

    rerun = invoke_ok("run", str(pipeline))
    assert rerun.count("unchanged, skipped") == 5 + 1 + 2 * 8  # generate … report, the pool teacher; two rounds of 8

    # killed after the teacher answered round 1's writes and solves, before those stages were noted done
    state_path = out / "pipeline.json"
    state = json.loads(state_path.read_text())
    for stage in ("round1:write", "round1:solve", "round1:agree"):
        del state[stage]
    state_path.write_text(json.dumps(state))
    for name in ("questions.jsonl", "problems.jsonl", "records.jsonl", "solve/samples.jsonl"):
        (new / name).unlink()
    (_round(out, 1) / "new_problems.json").unlink()
    resumed = invoke_ok("run", str(pipeline))
    assert resumed.count("unchanged, skipped") == 5 + 1 + 2 * 8 - 3  # only the three stages ran again
    assert writer.stats()["requests"] == sent  # every write and solve came from the stores
    assert {name: (new / name).read_text() for name in made} == made  # the same ids, questions, pseudo-golds
    assert (_round(out, 1) / "new_problems.json").read_text() == summary


def test_read_new_question() -> None:
    assert read_new_question("New question: What is 30 + 40?", False) == ("What is 30 + 40?", None)
    assert read_new_question("Sure.\n**New question:** How many legs\nhave 3 cats?\n\nAnswer: 12", False) == (
        "How many legs have 3 cats?",
        None,
    )
    reply = "New question: Where do fish live?\nAnswer Choices: (a) sea (b) desert\n(c) sky\n\nThe answer is (a)."
    assert read_new_question(reply, True) == ("Where do fish live?", ["sea", "desert", "sky"])
    assert read_new_question("New question: Where do fish live?", True) is None  # a choice problem needs choices
    assert read_new_question("New question: Where?\nAnswer Choices: (a) sea", True) is None  # one is no choice
    assert read_new_question("What is 30 + 40? The answer is 70.", False) is None
    assert read_new_question("New question:", False) is None


@pytest.mark.parametrize(
    ("rounds", "message"),  # the rounds section's last lines
    [
        ("  samples: 1\n  problem_template: new-problem\n", "problem_template needs samples >= 2"),
        ("  samples: 2\n  problem_template: no-such-template\n", "unknown template 'no-such-template'"),
        ("  samples: 2\n  problem_templates: new-problem\n", "did you mean 'problem_template'?"),
    ],
)
def test_bad_problem_template_settings_fail_before_anything_runs(tmp_path: Path, rounds: str, message: str) -> None:
    data = sums_file(tmp_path / "train.jsonl", 3, seed=1, start=0)
    pool = sums_file(tmp_path / "pool.jsonl", 3, seed=2, start=100)
    heldout = sums_file(tmp_path / "heldout.jsonl", 3, seed=3, start=200)
    out = tmp_path / "run"
    text = PIPELINE.format(out=out, train=data, pool=pool, heldout=heldout, base_url="http://127.0.0.1:9")
    pipeline = tmp_path / "pipeline.yaml"
    pipeline.write_text(text.replace("  samples: 2\n", rounds))
    code, output = invoke("run", str(pipeline))
    assert code == 2 and message in output and not out.exists()
