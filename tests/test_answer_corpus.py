"""Answer extraction on real teacher outputs no one here wrote (tests/data/answer_corpus/, see its
SOURCES files): per answer type, the share of cases read as a careful human reads them — the answer
the text states, or None where it states none or several. The bar is 99 % for number, choice and
yes/no; every remaining miss is listed below with why it is left."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from cotfactory.answers import answers_match, extract
from cotfactory.records import Problem

CORPUS = Path(__file__).resolve().parent / "data" / "answer_corpus"
BAR = {"number": 0.99, "choice": 0.99, "yes_no": 0.99}
MIN_CASES = 400

#: the cases still read differently from their label, each with the reason it is left so
KNOWN_MISSES: dict[str, str] = {
    "cqa-smollm2-bold-d2871dc28c82471e5d7f71f79e49c257": (
        "'Options d) **house** are incorrect and will be eliminated' rejects the option it names; with no "
        "statement, the fallback reads the one choice the last sentence names. Only 'not X' is understood as "
        "a rejection (the other forms are open-ended); left."
    ),
}


def _cases() -> list[dict[str, Any]]:
    return [json.loads(line) for path in sorted(CORPUS.glob("*.jsonl")) for line in path.read_text().splitlines()]


def _problem(case: dict[str, Any]) -> Problem:
    return Problem(
        id=case["id"], question=case["question"] or "?", answer_type=case["answer_type"], choices=case["choices"]
    )


def _read_right(case: dict[str, Any]) -> bool:
    problem = _problem(case)
    finished = {"stop": True, "length": False}.get(case["finish_reason"])  # None: the release does not say
    _, answer = extract(case["text"], problem, finished=finished)
    if case["expected"] is None or answer is None:
        return answer is None and case["expected"] is None
    return answers_match(answer, case["expected"], problem)


def test_the_corpus_is_real_and_large_enough() -> None:
    cases = _cases()
    kinds = Counter(case["answer_type"] for case in cases)
    assert len(cases) >= MIN_CASES and all(kinds[kind] >= 50 for kind in BAR), kinds
    assert len({case["id"] for case in cases}) == len(cases)
    assert all(case["source"] and case["text"] is not None for case in cases)
    real = [case for case in cases if not case["source"].startswith("constructed")]
    assert len(real) >= MIN_CASES * 3 // 4  # most of it is released or locally sampled model output


def test_extraction_reads_the_corpus_as_a_person_does(capsys: pytest.CaptureFixture[str]) -> None:
    cases = _cases()
    misses = {case["id"]: case for case in cases if not _read_right(case)}
    with capsys.disabled():
        print()
        for kind in ("number", "choice", "yes_no", "text"):
            of_kind = [case for case in cases if case["answer_type"] == kind]
            if of_kind:
                right = sum(case["id"] not in misses for case in of_kind)
                print(f"answer corpus, {kind}: {right}/{len(of_kind)} = {right / len(of_kind):.3f}")
    assert set(misses) == set(KNOWN_MISSES), sorted(set(misses) ^ set(KNOWN_MISSES))
    for kind, bar in BAR.items():
        of_kind = [case for case in cases if case["answer_type"] == kind]
        right = sum(case["id"] not in misses for case in of_kind)
        assert right / len(of_kind) >= bar, kind
