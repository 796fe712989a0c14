"""Hard-problem rounds (Lion, Jiang et al. 2023): go back to the teacher where the student still fails.

Round r (1, 2, …) of a pipeline with ``rounds:``:

0. **pool teacher** (once, before round 1, reused by every round) — the pool's problems *without* gold
   are sampled by the teacher with the pipeline's generate settings (the fixed grid: adaptive sampling's
   until-correct and rationalization need gold) into ``RUN/rounds/pool_teacher/``; each one's majority
   answer (self-consistency; a tie broken in plan order as the consistency filter breaks it, and marked)
   is the teacher's answer (``pool_teacher/answers.jsonl``). A pool with gold everywhere sends nothing.
1. **probe** — the student of round r−1 (round 0: the pipeline's first student) answers a held-out
   *training-side* pool (never the test split). Round r's hard problems (``hard_problems.jsonl``, each
   with its ``trigger``; counts in ``hard_problems.json``) are, as Lion's referee decides:
   ``wrong`` — a problem with gold the student got wrong; ``disagree`` — a problem without gold where
   the student's answer (none counts as different) differs from the teacher's majority. A problem
   without gold whose teacher samples reached no answer at all is *not* hard — there is nothing to
   compare, and nothing a filter could check new samples against — and is counted as
   ``no_teacher_answer``;
2. **generate** — the teacher samples each hard problem ``samples`` times (round r's seeds,
   (r−1)·samples + 1 … r·samples; the pipeline's generate settings otherwise): the ``wrong`` ones into
   ``RUN/rounds/r/`` (a run directory of its own: store, resume, exports), the ``disagree`` ones, which
   have no gold, into ``RUN/rounds/r/disagree/`` (the fixed grid, as for the pool teacher);
3. **filter** — the pipeline's filter settings over ``rounds/r/``; over ``rounds/r/disagree/`` the same
   with self-consistency added (its threshold raised to more than half of the samples drawn, as for new
   problems): the round's own majority is each problem's pseudo-label, which the correct filter checks
   samples against (without it the correct filter would drop every gold-less sample as ``no_gold``).
   They are filtered apart so that the consistency filter never touches a problem with gold, where it
   would drop correct samples of a problem the teacher mostly gets wrong;
   With ``problem_template``, the teacher also writes a new problem like each hard one, solves it, and
   the new problems whose samples agree are kept with their majority answer as pseudo-gold (steps
   write, solve and agree: see ``cotfactory.new_problems``);
4. **train** — a fresh student (the first student's settings) on the union of the kept records of
   round 0 and rounds 1…r, gold-less hard problems and new problems included (``RUN/rounds/r/union.jsonl``);
5. **eval** — that student on the pipeline's held-out ``eval`` problems: accuracy per round.

Each step is a pipeline stage with a fingerprint, so a killed round resumes where it stopped. A
problem of the pool is probed again each round (it may be learnt by then); one failed again gets new
samples (the round's own seeds: the same seeds would send the same requests again, and a seeded
teacher would answer them the same, duplicating its records in the union). ``cotfactory run PIPELINE
--rounds N`` sets ``rounds.count``; no round's stages depend on it, so raising it runs only the new rounds.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

from cotfactory.answers import answers_match
from cotfactory.filters.consistency import majority
from cotfactory.filters.well_formed import malformation
from cotfactory.records import Problem
from cotfactory.run_dir import RunDir, read_jsonl, write_json_atomic, write_jsonl_atomic


def round_dir(out: str | Path, number: int) -> Path:
    return Path(out) / "rounds" / str(number)


def probe_path(out: str | Path, number: int) -> Path:
    """The round's probe of the previous student on the pool: predictions.jsonl (eval.json beside it)."""
    return round_dir(out, number) / "probe" / "predictions.jsonl"


def hard_problems_path(out: str | Path, number: int) -> Path:
    return round_dir(out, number) / "hard_problems.jsonl"


def union_path(out: str | Path, number: int) -> Path:
    return round_dir(out, number) / "union.jsonl"


def student_dir(out: str | Path, number: int) -> Path:
    return round_dir(out, number) / "student"


def hard_summary_path(out: str | Path, number: int) -> Path:
    """Round ``number``'s probe in counts: problems probed, hard by trigger, without a teacher answer."""
    return round_dir(out, number) / "hard_problems.json"


def wrong_input_path(out: str | Path, number: int) -> Path:
    """The ``wrong`` hard problems (with gold), the input of the round's run ``rounds/r/``."""
    return round_dir(out, number) / "hard_wrong.jsonl"


def disagree_input_path(out: str | Path, number: int) -> Path:
    """The ``disagree`` hard problems (without gold), the input of the run ``rounds/r/disagree/``."""
    return round_dir(out, number) / "hard_disagree.jsonl"


def disagree_dir(out: str | Path, number: int) -> Path:
    """The run directory of the round's gold-less hard problems."""
    return round_dir(out, number) / "disagree"


def pool_teacher_dir(out: str | Path) -> Path:
    """The run directory of the teacher's samples of the pool problems without gold (one for every round)."""
    return Path(out) / "rounds" / "pool_teacher"


def pool_teacher_input(out: str | Path) -> Path:
    """The pool problems without gold, as generic JSONL: the pool teacher run's input."""
    return Path(out) / "rounds" / "pool_teacher.jsonl"


def teacher_answers_path(out: str | Path) -> Path:
    return pool_teacher_dir(out) / "answers.jsonl"


def write_pool_without_gold(out: str | Path, problems: list[Problem]) -> int:
    """The pool problems without gold, for the pool teacher run; returns how many."""
    rows = []
    for problem in problems:
        if problem.gold is None:
            row: dict[str, Any] = {"id": problem.id, "question": problem.question}
            if problem.choices:
                row["choices"] = problem.choices
            rows.append(row)
    return write_jsonl_atomic(pool_teacher_input(out), rows)


def write_teacher_answers(out: str | Path, patterns: dict[str, str | None]) -> list[dict[str, Any]]:
    """Each gold-less pool problem's teacher answer: the majority of its well-formed samples in the pool
    teacher run (None when none reached an answer), with its votes; written to ``answers.jsonl``."""
    from cotfactory.new_problems import sample_votes

    rows: list[dict[str, Any]] = []
    asked = {row["id"] for row in read_jsonl(pool_teacher_input(out))} if pool_teacher_input(out).exists() else set()
    if asked and RunDir(pool_teacher_dir(out)).samples.exists():  # not an earlier pool's samples: none asked now
        for problem_id, (problem, samples) in sample_votes(pool_teacher_dir(out), patterns).items():
            if problem_id not in asked:
                continue
            voters = [s for s in samples if malformation(s) is None]
            answer, _, tie = majority(voters, same=lambda a, b, p=problem: answers_match(a, b, p))
            votes = sum(answers_match(s.answer, answer, problem) for s in voters) if answer is not None else 0
            rows.append(
                {
                    "problem_id": problem_id,
                    "answer_type": problem.answer_type,
                    "answer": answer,
                    "votes": votes,
                    "drawn": len(samples),
                    "tie": tie,
                }
            )
    write_jsonl_atomic(teacher_answers_path(out), rows)
    return rows


def _differs(prediction: dict[str, Any], teacher: dict[str, Any]) -> bool:
    """Whether the student's answer differs from the teacher's, under the problem's answer type."""
    problem = Problem(
        id=prediction["problem_id"],
        question=prediction["question"] or "?",
        choices=prediction["choices"],
        answer_type=teacher["answer_type"],
    )
    return not answers_match(prediction["prediction"], teacher["answer"], problem)


def write_hard_problems(out: str | Path, number: int) -> dict[str, Any]:
    """Round ``number``'s hard problems, from the probe of the previous student: with gold, the ones it got
    wrong (``trigger: wrong``); without gold, the ones where its answer differs from the teacher's majority
    (``trigger: disagree``). Writes ``hard_problems.jsonl`` (every one, why, and both answers), the
    generate inputs of each kind and ``hard_problems.json``; returns the latter's counts."""
    answers_file = teacher_answers_path(out)
    teacher = {row["problem_id"]: row for row in read_jsonl(answers_file)} if answers_file.exists() else {}
    rows: list[dict[str, Any]] = []
    probed = no_teacher_answer = 0
    for prediction in read_jsonl(probe_path(out, number)):
        probed += 1
        row = {
            "id": prediction["problem_id"],
            "question": prediction["question"],
            "answer": prediction["gold"],
            "choices": prediction["choices"],
        }
        if prediction["gold"] is not None:
            if prediction["correct"] is False:
                rows.append(row | {"trigger": "wrong", "student_answer": prediction["prediction"]})
            continue
        said = teacher.get(prediction["problem_id"])
        if said is None or said["answer"] is None:
            no_teacher_answer += 1
        elif _differs(prediction, said):
            rows.append(
                row
                | {
                    "trigger": "disagree",
                    "student_answer": prediction["prediction"],
                    "teacher_answer": said["answer"],
                    "teacher_votes": f"{said['votes']}/{said['drawn']}",
                }
            )
    inputs = {"wrong": wrong_input_path(out, number), "disagree": disagree_input_path(out, number)}
    for trigger, path in inputs.items():
        fields = ("id", "question", "answer", "choices") if trigger == "wrong" else ("id", "question", "choices")
        write_jsonl_atomic(path, ({k: r[k] for k in fields} for r in rows if r["trigger"] == trigger))
    write_jsonl_atomic(hard_problems_path(out, number), rows)
    counts = Counter(r["trigger"] for r in rows)
    summary = {
        "round": number,
        "probed": probed,
        "hard_problems": len(rows),
        "wrong": counts["wrong"],
        "disagree": counts["disagree"],
        "no_teacher_answer": no_teacher_answer,
    }
    write_json_atomic(hard_summary_path(out, number), summary)
    return summary


def probe_line(summary: dict[str, Any]) -> str:
    """What the probe stage prints: the hard problems of each trigger among those probed."""
    line = (
        f"round {summary['round']}: {summary['hard_problems']} hard of {summary['probed']} pool problems: "
        f"{summary['wrong']} wrong (gold), {summary['disagree']} disagree with the teacher's majority (no gold)"
    )
    if summary["no_teacher_answer"]:
        line += f"; {summary['no_teacher_answer']} without gold and without a teacher answer, left alone"
    return line


def write_union(out: str | Path, number: int) -> int:
    """The kept records of round 0 and of rounds 1…number (each round's hard problems with gold, those
    without, then its new problems where ``problem_template`` made some), one JSONL file to train on;
    returns the count."""
    from cotfactory.new_problems import records_path

    sources = [RunDir(out).filtered]
    for r in range(1, number + 1):
        for run, asked in (
            (round_dir(out, r), wrong_input_path(out, r)),
            (disagree_dir(out, r), disagree_input_path(out, r)),
        ):
            if has_rows(asked):  # not what an earlier probe's hard problems left
                sources.append(RunDir(run).filtered)
        sources.append(records_path(out, r))
    rows: list[dict[str, Any]] = []
    for source in sources:
        if source.exists():  # no new records without a template
            rows += [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    write_jsonl_atomic(union_path(out, number), rows)
    return len(rows)


def first_student_record(out: str | Path) -> Path:
    """Where round 1 notes which student it probed: round 0's, the pipeline's first."""
    return Path(out) / "rounds" / "first_student.json"


def round_accuracies(out: str | Path) -> list[dict[str, Any]]:
    """Per round (0: the pipeline's first student), the held-out accuracy record of its student, where
    evaluated, with what the round did: its hard problems (``wrong`` / ``disagree``), the new problems
    kept, and the records its student trained on (round 0: the run's filtered samples)."""
    from cotfactory.new_problems import summary_path
    from cotfactory.run_dir import StudentDir

    found = []
    rounds = Path(out) / "rounds"
    numbers = sorted(int(p.name) for p in rounds.iterdir() if p.name.isdigit()) if rounds.is_dir() else []
    first = first_student_record(out)
    for number in [0, *numbers] if first.exists() else numbers:
        folder = json.loads(first.read_text())["student"] if number == 0 else student_dir(out, number)
        evaluation = StudentDir(folder).evaluation
        if evaluation.exists():
            record = json.loads(evaluation.read_text())
            record["round"] = number
            record |= _hard_counts(out, number)
            new = summary_path(out, number)
            if new.exists():
                record["new_problems"] = json.loads(new.read_text())["kept"]
            trained_on = RunDir(out).filtered if number == 0 else union_path(out, number)
            record["records"] = _count_lines(trained_on) if trained_on.exists() else None
            found.append(record)
    return found


def _hard_counts(out: str | Path, number: int) -> dict[str, int]:
    """The round's hard problems in all and by trigger (0 for round 0), from ``hard_problems.json`` or,
    for a round probed before it was written, from ``hard_problems.jsonl`` (every one there ``wrong``)."""
    summary = hard_summary_path(out, number)
    if summary.exists():
        counts = json.loads(summary.read_text())
        return {key: counts[key] for key in ("hard_problems", "wrong", "disagree")}
    hard = hard_problems_path(out, number)
    triggers = Counter(row.get("trigger", "wrong") for row in read_jsonl(hard)) if hard.exists() else Counter()
    return {"hard_problems": sum(triggers.values()), "wrong": triggers["wrong"], "disagree": triggers["disagree"]}


def has_rows(path: Path) -> bool:
    """Whether a JSONL input (hard problems, new questions) holds any problem."""
    return path.exists() and path.stat().st_size > 0


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())
