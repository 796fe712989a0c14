"""Pull the final answer (and the rationale before it) out of a teacher's text.

A first, simple extractor: "The answer is X", GSM8K's "#### X", "So the answer is (c) …", else the
last number for number problems. The filters build on it.
"""

from __future__ import annotations

import re

from cotfactory.records import Problem

_ANSWER_IS = re.compile(r"(?:the\s+)?(?:final\s+)?answer\s*(?:is|:)\s*:?\s*(.+?)(?:\.\s*$|\.\s+|\n|$)", re.I)
_HASHES = re.compile(r"####\s*(.+?)\s*$", re.M)
_NUMBER = re.compile(r"-?\$?\d[\d,]*(?:\.\d+)?")
_CHOICE = re.compile(r"^\(?([a-e])\)(?:\s+(.*))?$|^\(?([a-e])\)?$", re.I)


def normalize_number(text: str) -> str | None:
    """'$1,234.50' → '1234.5'; '72%' → '72'; None when there is no number."""
    match = _NUMBER.search(text)
    if not match:
        return None
    raw = match.group(0).replace("$", "").replace(",", "")
    try:
        value = float(raw)
    except ValueError:
        return None
    return str(int(value)) if value.is_integer() else repr(value)


def extract(text: str, problem: Problem, pattern: str | None = None) -> tuple[str, str | None]:
    """(rationale, answer); the answer is None when none can be found."""
    stem, raw = _split(text, pattern)
    if raw is None:
        if problem.answer_type == "number":
            numbers = _NUMBER.findall(text)
            raw = numbers[-1] if numbers else None
        if raw is None:
            return text.strip(), None
    return stem.strip(), _normalize(raw, problem)


def _split(text: str, pattern: str | None) -> tuple[str, str | None]:
    if pattern:
        match = re.search(pattern, text, re.S)
        if match:
            return text[: match.start()], match.group(1)
        return text, None
    hashes = list(_HASHES.finditer(text))
    if hashes:
        return text[: hashes[-1].start()], hashes[-1].group(1)
    found = list(_ANSWER_IS.finditer(text))
    if found:
        last = found[-1]
        start = text.rfind("So ", 0, last.start() + 1)
        cut = start if start != -1 and last.start() - start <= 4 else last.start()
        return text[:cut], last.group(1)
    return text, None


def _normalize(raw: str, problem: Problem) -> str | None:
    raw = raw.strip().strip("*").strip()
    if problem.answer_type == "number":
        return normalize_number(raw)
    if problem.answer_type == "yes_no":
        word = raw.lower().split()[0].strip(".,!") if raw.split() else ""
        return {"yes": "yes", "true": "yes", "no": "no", "false": "no"}.get(word)
    if problem.answer_type == "choice":
        return _choice(raw, problem.choices or [])
    return raw.rstrip(".").strip() or None


def _choice(raw: str, choices: list[str]) -> str | None:
    lowered = raw.lower().rstrip(".").strip()
    match = _CHOICE.match(lowered)
    if match:
        letter = (match.group(1) or match.group(3)).lower()
        index = ord(letter) - ord("a")
        if index < len(choices):
            return choices[index]
    for choice in choices:
        if choice.lower() == lowered or lowered.endswith(choice.lower()):
            return choice
    return None
