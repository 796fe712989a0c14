"""New problems like the hard ones (Lion's generation step): the teacher writes them, solves them, and
only those whose solutions agree are kept, with the agreed answer as their pseudo-gold.

A round r with ``rounds.problem_template`` adds three steps after sampling its hard problems, each a
pipeline stage, all teacher calls through ``generate`` (so a killed round resumes without re-sending):

1. **write** — one request per hard problem with the template (seed r, so a problem hard again in a
   later round gets a fresh question; the answer it shows is the gold, or for a problem without gold
   the teacher's majority, ``new/origins.jsonl``), into the run directory ``RUN/rounds/r/new/write/``; each reply's
   ``New question:`` line (and, for a choice problem, its ``Answer Choices:``) becomes a problem
   ``ORIGIN~genR`` in ``new/questions.jsonl``, marked ``metadata: {generated_from, round, write_key}``
   and without gold. Replies that fail, cannot be read, repeat their origin or an earlier new question
   are dropped, each with its reason, into ``new/unwritten.jsonl``.
2. **solve** — those questions sampled like the hard problems (the pipeline's templates and
   temperatures, seeds 1…samples) into ``new/solve/``.
3. **agree** — a question is kept when more than half of its samples (failed and answer-less ones
   count against it: ``need = drawn // 2 + 1``) reach the same answer, which becomes its pseudo-gold
   (``new/problems.jsonl``). The pipeline's filter runs over ``new/solve/`` with the majority as the
   label (its consistency threshold raised to need / drawn where lower), and the kept questions'
   surviving samples — those reaching the pseudo-gold — are the round's new training records
   (``new/records.jsonl``, each marked ``generated: {from, round}``). ``rounds/r/new_problems.json``
   counts what was asked, kept and dropped (by reason) and the teacher tokens of both runs.
"""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Any

from cotfactory.answers import answers_match, fill_answer
from cotfactory.filters.consistency import majority
from cotfactory.filters.well_formed import malformation
from cotfactory.records import Problem
from cotfactory.rounds import hard_problems_path, round_dir
from cotfactory.run_dir import RunDir, read_jsonl, write_json_atomic, write_jsonl_atomic
from cotfactory.store import Store

_QUESTION = re.compile(r"^[\s*_#>\"']*new\s+question\s*[*_]*\s*:[*_\s]*(.*)$", re.I | re.M)
_CHOICES = re.compile(r"^[\s*_]*(?:answer\s+)?choices\s*[*_]*\s*:", re.I | re.M)
_CHOICE = re.compile(r"\(([a-z])\)\s*(.+?)\s*(?=\([a-z]\)|$)", re.I | re.S)
_STOP = re.compile(r"^\s*$|^\W*(?:answer|solution)\b", re.I)  # a blank line or an answer ends the question


def new_dir(out: str | Path, number: int) -> Path:
    return round_dir(out, number) / "new"


def write_run(out: str | Path, number: int) -> Path:
    """The run directory of the teacher's new questions."""
    return new_dir(out, number) / "write"


def solve_run(out: str | Path, number: int) -> Path:
    """The run directory of the teacher's samples of the new questions."""
    return new_dir(out, number) / "solve"


def origins_path(out: str | Path, number: int) -> Path:
    """The hard problems as the write run's input (see ``write_origins``)."""
    return new_dir(out, number) / "origins.jsonl"


def write_origins(out: str | Path, number: int) -> int:
    """The round's hard problems as the write template sees them, which shows each one's answer: its
    gold, or for a ``disagree`` one (no gold) the teacher's majority answer; returns how many."""
    rows = [
        {
            "id": row["id"],
            "question": row["question"],
            "answer": row["answer"] if row["answer"] is not None else row.get("teacher_answer"),
            "choices": row["choices"],
        }
        for row in read_jsonl(hard_problems_path(out, number))
    ]
    return write_jsonl_atomic(origins_path(out, number), rows)


def questions_path(out: str | Path, number: int) -> Path:
    return new_dir(out, number) / "questions.jsonl"


def unwritten_path(out: str | Path, number: int) -> Path:
    return new_dir(out, number) / "unwritten.jsonl"


def kept_problems_path(out: str | Path, number: int) -> Path:
    return new_dir(out, number) / "problems.jsonl"


def records_path(out: str | Path, number: int) -> Path:
    return new_dir(out, number) / "records.jsonl"


def summary_path(out: str | Path, number: int) -> Path:
    return round_dir(out, number) / "new_problems.json"


def new_problem_id(origin: str, number: int) -> str:
    """The id of round ``number``'s new problem like ``origin``: the same on every rerun."""
    return f"{origin}~gen{number}"


def agreement_needed(drawn: int) -> int:
    """Samples that must reach one answer for a new question to be kept: more than half of those drawn."""
    return drawn // 2 + 1


def read_new_question(text: str, with_choices: bool) -> tuple[str, list[str] | None] | None:
    """The question (and, ``with_choices``, its lettered choices) of a reply in the template's form
    ``New question: …`` / ``Answer Choices: (a) … (b) …``; None when the reply is not in that form."""
    found = _QUESTION.search(text)
    if found is None:
        return None
    lines = [found.group(1)]
    for line in text[found.end() :].splitlines()[1:]:
        if _STOP.match(line) or _CHOICES.match(line):
            break
        lines.append(line)
    question = " ".join(" ".join(lines).split()).strip("*_\"' ")
    if not question:
        return None
    if not with_choices:
        return question, None
    listed = _CHOICES.search(text, found.end())
    if listed is None:
        return None
    block = re.split(r"\n\s*\n", text[listed.end() :].strip())[0]  # the choices end at a blank line
    choices = [" ".join(m.group(2).split()).rstrip(".,;") for m in _CHOICE.finditer(block)]
    choices = [c for c in choices if c]
    return (question, choices) if len(choices) >= 2 and len(set(choices)) == len(choices) else None


def _same(a: str, b: str) -> bool:
    return " ".join(a.lower().split()) == " ".join(b.lower().split())


def write_questions(out: str | Path, number: int) -> dict[str, int]:
    """Round ``number``'s new questions from the write run's replies (``questions.jsonl``, and the
    dropped ones with their reason in ``unwritten.jsonl``); returns the count of each outcome."""
    hard = {row["id"]: row for row in read_jsonl(hard_problems_path(out, number))}
    questions: list[dict[str, Any]] = []
    unwritten: list[dict[str, Any]] = []
    seen: list[str] = []
    replied: set[str] = set()
    for row in read_jsonl(RunDir(write_run(out, number)).samples):
        origin = hard.get(row["problem_id"])
        if origin is None or origin["id"] in replied:
            continue
        replied.add(origin["id"])
        reason, parsed = "failed", None
        if row["error"] is None:
            parsed = read_new_question(row["text"], bool(origin.get("choices")))
            reason = "unparseable" if parsed is None else ""
        if parsed is not None and _same(parsed[0], origin["question"]):
            reason = "copied"
        elif parsed is not None and any(_same(parsed[0], q) for q in seen):
            reason = "duplicate"
        if reason:
            unwritten.append({"from": origin["id"], "reason": reason, "write_key": row["key"], "text": row["text"]})
            continue
        assert parsed is not None
        seen.append(parsed[0])
        question: dict[str, Any] = {"id": new_problem_id(origin["id"], number), "question": parsed[0]}
        if parsed[1] is not None:
            question["choices"] = parsed[1]
        question["metadata"] = {"generated_from": origin["id"], "round": number, "write_key": row["key"]}
        questions.append(question)
    write_jsonl_atomic(unwritten_path(out, number), unwritten)
    write_jsonl_atomic(questions_path(out, number), questions)
    return {"asked": len(replied), "written": len(questions)} | dict(Counter(u["reason"] for u in unwritten))


def _tokens(run: Path) -> int:
    samples = RunDir(run).samples
    if not samples.exists():
        return 0
    return sum(row["prompt_tokens"] + row["completion_tokens"] for row in read_jsonl(samples))


def sample_votes(run: Path, patterns: dict[str, str | None]) -> dict[str, tuple[Problem, list[Any]]]:
    """Each problem of a run (the solve run, the pool teacher run) with its samples in plan order, answers
    read as the filter reads them."""
    keys: dict[str, list[str]] = {}
    for row in read_jsonl(RunDir(run).samples):
        keys.setdefault(row["problem_id"], []).append(row["key"])
    found = {}
    with Store.in_run(run) as store:
        for problem_id, its_keys in keys.items():
            problem = store.problem(problem_id)
            assert problem is not None  # generate stores every problem before it sends
            samples = list(store.samples(its_keys))
            for sample in samples:
                fill_answer(sample, problem, patterns.get(sample.request.template))
            found[problem_id] = (problem, samples)
    return found


def agree(out: str | Path, number: int, drawn: int, patterns: dict[str, str | None]) -> dict[str, Any]:
    """Keep the new questions whose samples agree (``need`` of ``drawn``), with the majority as pseudo-gold;
    write ``problems.jsonl``, ``records.jsonl`` (from the filtered solve run) and ``new_problems.json``."""
    need = agreement_needed(drawn)
    questions = list(read_jsonl(questions_path(out, number)))
    solved = sample_votes(solve_run(out, number), patterns) if questions else {}
    kept: dict[str, dict[str, Any]] = {}
    outcomes: list[dict[str, Any]] = [
        {"id": None, "from": u["from"], "outcome": u["reason"]} for u in read_jsonl(unwritten_path(out, number))
    ]
    for question in questions:
        problem, samples = solved.get(question["id"], (None, []))
        voters = [s for s in samples if malformation(s) is None]
        answer, votes = None, 0
        if problem is not None and voters:
            answer, _, _ = majority(voters, same=lambda a, b, p=problem: answers_match(a, b, p))
            votes = sum(answers_match(s.answer, answer, problem) for s in voters)
        outcome = "kept" if votes >= need else "disagree"
        origin = question["metadata"]["generated_from"]
        outcomes.append({"id": question["id"], "from": origin, "outcome": outcome, "answer": answer, "votes": votes})
        if outcome == "kept":
            metadata = question["metadata"] | {"pseudo_gold": True, "votes": f"{votes}/{drawn}"}
            kept[question["id"]] = question | {"answer": answer, "metadata": metadata}
    write_jsonl_atomic(kept_problems_path(out, number), kept.values())
    records = []
    filtered = RunDir(solve_run(out, number)).filtered
    if kept and filtered.exists():
        for row in read_jsonl(filtered):
            chosen = kept.get(row["problem_id"])
            problem = solved[row["problem_id"]][0] if chosen else None
            if chosen and problem is not None and answers_match(row["answer"], chosen["answer"], problem):
                records.append(row | {"generated": {"from": chosen["metadata"]["generated_from"], "round": number}})
    write_jsonl_atomic(records_path(out, number), records)
    dropped = Counter(o["outcome"] for o in outcomes if o["outcome"] != "kept")
    summary = {
        "round": number,
        "asked": len(outcomes),
        "written": len(questions),
        "samples_per_question": drawn,
        "agreement_needed": need,
        "kept": len(kept),
        "records": len(records),
        "dropped": dict(sorted(dropped.items())),
        "teacher_tokens": {"write": _tokens(write_run(out, number)), "solve": _tokens(solve_run(out, number))},
        "problems": outcomes,
    }
    write_json_atomic(summary_path(out, number), summary)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """What the agree stage prints: asked, written, kept, dropped by reason, records."""
    dropped = ", ".join(f"{n} {reason}" for reason, n in summary["dropped"].items()) or "none"
    return (
        f"round {summary['round']}: new problems: {summary['asked']} asked, {summary['written']} written, "
        f"{summary['kept']} kept (≥ {summary['agreement_needed']} of {summary['samples_per_question']} samples "
        f"agree: pseudo-gold), dropped: {dropped}; {summary['records']} training records"
    )
