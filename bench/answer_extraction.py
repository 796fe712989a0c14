"""Number answers: cotfactory's reader against Hugging Face's math-verify (what open-r1 uses), on the
number cases of the hand-checked answer corpus (tests/data/answer_corpus/).

A case is read right when the reader gives the number the text states, or nothing where the text
states none (a reply cut mid-expression, a hedge between two values). math-verify's `parse` is asked
for the text's answer with its default extraction (LaTeX and plain expressions, last match wins);
`verify` compares it with the label, so its own equivalence rules (fractions, 3/4 = 0.75) count.

    python bench/answer_extraction.py            # prints accuracies and every disagreement
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "data" / "answer_corpus"


def number_cases() -> list[dict[str, Any]]:
    rows = [json.loads(line) for path in sorted(CORPUS.glob("*.jsonl")) for line in path.read_text().splitlines()]
    return [row for row in rows if row["answer_type"] == "number"]


def with_cotfactory(case: dict[str, Any]) -> tuple[str | None, bool]:
    from cotfactory.answers import answers_match, extract
    from cotfactory.records import Problem

    problem = Problem(id=case["id"], question=case["question"] or "?", answer_type="number")
    finished = {"stop": True, "length": False}.get(case["finish_reason"])  # None: the release does not say
    answer = extract(case["text"], problem, finished=finished)[1]
    if case["expected"] is None or answer is None:
        return answer, answer is None and case["expected"] is None
    return answer, answers_match(answer, case["expected"], problem)


def with_math_verify(case: dict[str, Any]) -> tuple[str | None, bool]:
    from math_verify import parse, verify

    parsed = parse(case["text"])
    answer = str(parsed[-1]) if parsed else None
    if case["expected"] is None or not parsed:
        return answer, not parsed and case["expected"] is None
    return answer, bool(verify(parse(case["expected"]), parsed))


def main() -> int:
    try:
        import math_verify  # noqa: F401
    except ImportError:
        print("math-verify is not installed (pip install math-verify)", file=sys.stderr)
        return 2
    cases = number_cases()
    results = {}
    for name, reader in (("cotfactory", with_cotfactory), ("math-verify", with_math_verify)):
        started = time.perf_counter()
        results[name] = [reader(case) for case in cases]
        seconds = time.perf_counter() - started
        right = sum(ok for _, ok in results[name])
        print(
            f"{name:12s} {right}/{len(cases)} = {right / len(cases):.3f} right "
            f"({1000 * seconds / len(cases):.2f} ms per text)"
        )
    right_only = {name: 0 for name in results}
    for index, case in enumerate(cases):
        (a, a_ok), (b, b_ok) = results["cotfactory"][index], results["math-verify"][index]
        if a_ok != b_ok:
            right_only["cotfactory" if a_ok else "math-verify"] += 1
            ending = " ".join(case["text"].split())[-90:]
            shown = [repr(x)[:24] for x in (a, b)]
            expected = case["expected"]
            print(f"  {case['id']}: expected {expected!r}; cotfactory {shown[0]}, math-verify {shown[1]} — …{ending}")
    ratio = (right_only["cotfactory"] + 1) / (right_only["math-verify"] + 1)
    print(
        f"right only with cotfactory: {right_only['cotfactory']}, only with math-verify: "
        f"{right_only['math-verify']} (ratio {ratio:.1f}x, +1 smoothed)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
