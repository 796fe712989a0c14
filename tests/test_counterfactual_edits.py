"""Teacher-written counterfactuals of choice and yes/no problems (DISCO, `cotfactory augment --teacher`).

The teacher is the replay adapter over a scripted Batch API file: each edit problem (ORIGIN-editI) gets the
edit text the test chose, each new question (ORIGIN-cfJ) its verification replies, so every way an edit can
fail is produced on purpose and its count asserted. Both rounds go through `generate`, so a rerun sends nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from helpers import invoke, invoke_ok, read_jsonl, write_jsonl

from cotfactory.counterfactual_edits import plan_edits
from cotfactory.problems import load_problems
from cotfactory.records import Problem, choice_letter

ROOT = Path(__file__).resolve().parent.parent
CQA = ROOT / "data" / "cqa" / "test_sample.json"
ESNLI = ROOT / "data" / "esnli" / "test_sample.json"


def write_replay(path: Path, replies: dict[str, list[str]]) -> Path:
    """A Batch API output file: problem id → its replies, the n-th answering sample n."""
    rows = [
        {"custom_id": pid, "response": {"status_code": 200, "body": {"choices": [{"message": {"content": text}}]}}}
        for pid, texts in replies.items()
        for text in texts
    ]
    return write_jsonl(path, rows)


def edit(question: str) -> str:
    return f"Changing one phrase:\n<question>{question}</question>"


def says(problem: Problem, label: str) -> str:
    """A verification reply choosing ``label``."""
    if problem.answer_type == "yes_no":
        return f"Thinking it over. The answer is {label}."
    return f"Thinking it over. So the answer is ({choice_letter(problem.choices.index(label))}) {label}."


def augment(source: Path, fmt: str, replay: Path, run: Path, out: Path, *extra: str) -> tuple[int, str]:
    return invoke(
        "augment", source, "--format", fmt, "--out", out, "--run-dir", run,
        "--teacher", "replay", "--replay", replay, "--model", "scripted", "--votes", "3", *extra,
    )  # fmt: skip


def scripted_cqa(tmp_path: Path, seed: int = 0) -> tuple[list[Problem], list[str], Path]:
    """Eight CommonsenseQA problems, one counterfactual each, scripted to fail in every way but the first."""
    problems = load_problems("cqa", CQA, limit=8)
    intended = [slot.intended for slot in plan_edits(problems, 1, seed).slots]
    replies: dict[str, list[str]] = {}
    for index, (problem, label) in enumerate(zip(problems, intended, strict=True)):
        third = next(c for c in problem.choices if c not in (label, problem.gold))
        new = f"{problem.question} (version {index})"
        replies[f"{problem.id}-edit0"] = {
            3: ["I would change the place to a lake."],  # no <question> … </question>
            4: [edit(problem.question)],  # the same question
            6: [],  # the teacher has nothing: the request fails
        }.get(index, [edit(new)])
        votes = {
            0: [label, label, label],  # verified
            1: [label, problem.gold, third],  # no majority
            2: [problem.gold, problem.gold, label],  # the original answer
            5: [third, third, label],  # a third label
            7: [],  # every verification request fails
        }.get(index, [])
        replies[f"{problem.id}-cf0"] = [says(problem, vote) for vote in votes]
    return problems, intended, write_replay(tmp_path / f"replay-{seed}.jsonl", replies)


def test_choice_edits_are_kept_only_when_the_teacher_verifies_them(tmp_path: Path) -> None:
    problems, intended, replay = scripted_cqa(tmp_path)
    out, run = tmp_path / "cf.jsonl", tmp_path / "teacher"
    code, output = augment(CQA, "cqa", replay, run, out, "--limit", "8")
    assert code == 0, output

    [row] = read_jsonl(out)  # only the verified edit
    first = problems[0]
    assert row == {
        "id": f"{first.id}-cf0",
        "question": f"{first.question} (version 0)",
        "answer": intended[0],
        "choices": first.choices,
        "metadata": {"origin": first.id, "edit": "choice", "intended": intended[0], "original": first.gold,
                     "votes": {intended[0]: 3}},
    }  # fmt: skip
    assert intended[0] != first.gold
    [loaded] = load_problems("jsonl", out, answer_type="choice")  # what `generate --format jsonl` reads
    assert loaded.gold == intended[0] and loaded.choices == first.choices

    checked = {r["origin"]: r for r in read_jsonl(run / "checked.jsonl")}
    reasons = [checked[p.id]["reason"] for p in problems]
    assert reasons == [
        "kept",
        "the teacher's answers disagree (no strict majority)",
        "the teacher still gives the original answer",
        "the edit cannot be read (no new question in the reply)",
        "the edit leaves the question unchanged",
        "the teacher gives another label than the intended one",
        "the teacher failed to write the edit",
        "no verification sample gives an answer",
    ]
    split = checked[problems[1].id]["votes"]
    assert len(split) == 3 and set(split.values()) == {1} and {intended[1], problems[1].gold} < set(split)
    assert "augment: 1 counterfactual problems from 1 of 8 (1 of 8 teacher edits verified)" in output
    assert "edit: 8 requests sent, 8 samples stored, 1 failed" in output
    assert "verify: 15 requests sent, 15 samples stored, 3 failed" in output  # 5 new questions x 3 votes
    for reason in reasons[1:]:
        assert f"dropped 1: {reason}" in output
    assert "--answer-type choice" in output

    # a rerun with the same settings: both runs are in the store, nothing is sent, the output is the same
    before = out.read_bytes()
    code, again = augment(CQA, "cqa", replay, run, out, "--limit", "8")
    assert code == 0, again
    assert "edit: 0 requests sent, 8 samples stored" in again and "verify: 0 requests sent, 15 samples stored" in again
    assert out.read_bytes() == before


def test_edits_are_deterministic_with_a_seed(tmp_path: Path) -> None:
    problems = load_problems("cqa", CQA)
    labels = [slot.intended for slot in plan_edits(problems, 2, seed=3).slots]
    assert labels == [slot.intended for slot in plan_edits(problems, 2, seed=3).slots]
    assert labels != [slot.intended for slot in plan_edits(problems, 2, seed=4).slots]
    for problem, pair in zip(problems, zip(labels[::2], labels[1::2], strict=True), strict=True):
        assert problem.gold not in pair and len(set(pair)) == 2 and set(pair) <= set(problem.choices)

    outputs = []
    for name in ("a", "b"):  # the same seed into fresh run directories: the same problems, byte for byte
        _, _, replay = scripted_cqa(tmp_path / name, seed=5)
        code, output = augment(CQA, "cqa", replay, tmp_path / name / "run", tmp_path / name / "cf.jsonl",
                               "--limit", "8", "--seed", "5")  # fmt: skip
        assert code == 0, output
        outputs.append((tmp_path / name / "cf.jsonl").read_bytes())
    assert outputs[0] == outputs[1] and outputs[0]


def test_yes_no_edits_flip_the_answer(tmp_path: Path) -> None:
    rows = [
        {"id": "y0", "question": "Is the Pacific the largest ocean?", "answer": "yes"},
        {"id": "y1", "question": "Can a penguin fly?", "answer": "no"},
        {"id": "y2", "question": "Is this one unknown?"},  # no gold: nothing to flip
    ]
    source = write_jsonl(tmp_path / "yes_no.jsonl", rows)
    problem = Problem(id="y", question="?", answer_type="yes_no")
    replay = write_replay(
        tmp_path / "replay.jsonl",
        {
            "y0-edit0": [edit("Is the Atlantic the largest ocean?"), edit("Is the  Atlantic the largest ocean?")],
            "y1-edit0": [edit("Can a pigeon fly?"), "New question: Can a parrot fly?\n\nA parrot is a bird."],
            "y0-cf0": [says(problem, "no")] * 3,
            "y1-cf0": [says(problem, "yes"), says(problem, "yes"), says(problem, "no")],
            "y1-cf1": [says(problem, "no"), says(problem, "no"), says(problem, "yes")],
        },
    )
    out = tmp_path / "cf.jsonl"
    code, output = augment(source, "jsonl", replay, tmp_path / "run", out, "--answer-type", "yes_no",
                           "--counterfactual", "2")  # fmt: skip
    assert code == 0, output
    kept = {row["id"]: row for row in read_jsonl(out)}
    assert list(kept) == ["y0-cf0", "y1-cf0"]
    assert kept["y0-cf0"]["answer"] == "no" and kept["y0-cf0"]["question"] == "Is the Atlantic the largest ocean?"
    assert kept["y1-cf0"]["answer"] == "yes" and kept["y1-cf0"]["metadata"]["votes"] == {"yes": 2, "no": 1}
    assert all(row["metadata"]["edit"] == "yes_no" and "choices" not in row for row in kept.values())
    assert "dropped 1: the edit repeats an earlier edit of the problem" in output  # y0's second edit
    assert "dropped 1: the teacher still gives the original answer" in output  # y1's second edit
    assert [r["question"] for r in read_jsonl(tmp_path / "run" / "checked.jsonl")][2:] == [
        "Can a pigeon fly?",
        "Can a parrot fly?",  # read from a reply without the tags, one that opens with "New question:"
    ]
    assert "not edited, 1 problems: no gold answer to change" in output
    assert "edit: 4 requests sent" in output  # two edits of each problem: samples 0 and 1 of one request grid


def test_esnli_pairs_are_edited_with_their_labels(tmp_path: Path) -> None:
    problems = load_problems("esnli", ESNLI, limit=2)
    slots = plan_edits(problems, 2, seed=0).slots
    replies: dict[str, list[str]] = {}
    for slot in slots:  # two labels to aim for: each edit problem is asked once
        replies[slot.edit_id] = [edit(slot.origin.question.replace("Hypothesis: ", f"Hypothesis: ({slot.id}) "))]
        replies[slot.id] = [says(slot.origin, slot.intended)] * 3
    replay = write_replay(tmp_path / "replay.jsonl", replies)
    out = tmp_path / "cf.jsonl"
    code, output = augment(ESNLI, "esnli", replay, tmp_path / "run", out, "--limit", "2", "--counterfactual", "2")
    assert code == 0, output
    rows = read_jsonl(out)
    assert [(r["id"], r["answer"]) for r in rows] == [(s.id, s.intended) for s in slots]
    for row, slot in zip(rows, slots, strict=True):
        assert row["answer"] != slot.origin.gold and row["choices"] == slot.origin.choices


def test_teacher_edits_need_a_run_directory_and_an_edit_template(tmp_path: Path) -> None:
    out = tmp_path / "cf.jsonl"
    code, output = invoke("augment", CQA, "--format", "cqa", "--out", out)
    assert code == 2 and "give --run-dir" in output and not out.exists()
    template = tmp_path / "plain.yaml"
    template.write_text("name: plain\nform: chat\nmessages:\n  - role: user\n    content: '{{ question }}'\n")
    code, output = invoke("augment", CQA, "--format", "cqa", "--out", out, "--run-dir", tmp_path / "run",
                          "--edit-template", template)  # fmt: skip
    assert code == 2 and "does not use {{ metadata.intended }}" in output
    code, output = invoke("augment", CQA, "--format", "cqa", "--out", out, "--teacher", "opnai")
    assert code == 2 and "did you mean 'openai'" in output
    # arithmetic problems still need no teacher and no run directory
    svamp = ROOT / "data" / "svamp" / "sample.json"
    output = invoke_ok("augment", svamp, "--format", "svamp", "--out", out)
    rows = read_jsonl(out)
    assert rows and all(row["metadata"]["edit"] == "numbers" for row in rows)
    assert "counterfactual problems from" in output and json.loads(out.read_text().splitlines()[0])["answer"]
