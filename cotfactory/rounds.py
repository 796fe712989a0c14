"""Hard-problem rounds (Lion, Jiang et al. 2023): go back to the teacher where the student still fails.

Round r (1, 2, …) of a pipeline with ``rounds:``:

1. **probe** — the student of round r−1 (round 0: the pipeline's first student) answers a held-out
   *training-side* pool (never the test split); the problems it gets wrong are round r's hard problems;
2. **generate** — the teacher samples each hard problem ``samples`` times (round r's seeds,
   (r−1)·samples + 1 … r·samples; the pipeline's generate settings otherwise), into ``RUN/rounds/r/``
   (a run directory of its own: store, resume, exports);
3. **filter** — the pipeline's filter settings over that run;
   With ``problem_template``, the teacher also writes a new problem like each hard one, solves it, and
   the new problems whose samples agree are kept with their majority answer as pseudo-gold (steps
   write, solve and agree: see ``cotfactory.new_problems``);
4. **train** — a fresh student (the first student's settings) on the union of the kept records of
   round 0 and rounds 1…r, new problems included (``RUN/rounds/r/union.jsonl``);
5. **eval** — that student on the pipeline's held-out ``eval`` problems: accuracy per round.

Each step is a pipeline stage with a fingerprint, so a killed round resumes where it stopped. A
problem of the pool is probed again each round (it may be learnt by then); one failed again gets new
samples (the round's own seeds: the same seeds would send the same requests again, and a seeded
teacher would answer them the same, duplicating its records in the union).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cotfactory.run_dir import RunDir, write_jsonl_atomic


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


def write_hard_problems(out: str | Path, number: int) -> int:
    """The pool problems the previous student got wrong, as generic JSONL for ``generate``; returns how many."""
    rows = []
    for line in probe_path(out, number).read_text().splitlines():
        prediction = json.loads(line)
        if prediction["correct"] is False and prediction["gold"] is not None:
            rows.append(
                {
                    "id": prediction["problem_id"],
                    "question": prediction["question"],
                    "answer": prediction["gold"],
                    "choices": prediction["choices"],
                }
            )
    write_jsonl_atomic(hard_problems_path(out, number), rows)
    return len(rows)


def write_union(out: str | Path, number: int) -> int:
    """The kept records of round 0 and of rounds 1…number (each round's hard problems, then its new
    problems where ``problem_template`` made some), one JSONL file to train on; returns the count."""
    from cotfactory.new_problems import records_path

    sources = [RunDir(out).filtered]
    for r in range(1, number + 1):
        sources += [RunDir(round_dir(out, r)).filtered, records_path(out, r)]
    rows: list[dict[str, Any]] = []
    for source in sources:
        if source.exists():  # a round with no hard problem has no run, one without problem_template no new records
            rows += [json.loads(line) for line in source.read_text().splitlines() if line.strip()]
    write_jsonl_atomic(union_path(out, number), rows)
    return len(rows)


def first_student_record(out: str | Path) -> Path:
    """Where round 1 notes which student it probed: round 0's, the pipeline's first."""
    return Path(out) / "rounds" / "first_student.json"


def round_accuracies(out: str | Path) -> list[dict[str, Any]]:
    """Per round (0: the pipeline's first student), the held-out accuracy record of its student, where evaluated."""
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
            hard = hard_problems_path(out, number)
            record["round"] = number
            record["hard_problems"] = sum(1 for _ in hard.open()) if hard.exists() else 0
            new = round_dir(out, number) / "new_problems.json"  # cotfactory.new_problems.summary_path
            if new.exists():
                record["new_problems"] = json.loads(new.read_text())["kept"]
            found.append(record)
    return found
