"""Pull the final answer, and the rationale before it, out of a teacher's text; compare answers.

One module for everyone who reads an answer: generation stores ``extract``'s result on each sample,
the filters and the student evaluator judge it with ``answers_match``. The rules are measured on a
hand-checked corpus of real teacher outputs (tests/data/answer_corpus/).

``extract(text, problem, pattern)`` first cuts off an invented next turn (from the first blank line
followed by a turn header such as ``Q:`` or ``Premise:``, as PaLM writes), then looks for the
final-answer statement; the first rule that finds one wins:

1. the template's own ``pattern``, a regex whose group 1 is the answer (first match, ``re.S``);
2. GSM8K's ``#### 72`` (the last one);
3. the last of the natural-language statements: "The answer is 72." / "So the answer is (c) wooded
   area." / "**Final answer:** 72" / ``\\boxed{72}`` / a line "A: 18" (GPT-3's GSM8K solutions).
   A statement may carry a short aside ("the answer (after rounding) is", "the answer to this
   question is") and may give its answer on the next line ("The answer is:\n\nYes"). A
   ``\\boxed{}`` inside an "answer is" sentence belongs to that sentence.

The rationale is the text before the statement ("So"/"Therefore" go with the statement). The
statement's answer is normalized by answer type, so equal answers are equal strings:

- numbers as short decimals ("51", "0.75"; expressions are evaluated safely; "1.8 billion", "twelve"
  read too); two values offered ("12 or 14") or an expression that goes on in words ("10+x") give None;
- choices as the choice text; a letter whose text names another choice, or a thing that is neither
  a choice nor a misspelling of the letter's, gives None (letter and text conflict);
- yes/no from claims: the first yes/no word of each statement ("the answer is indeed yes"), or, with
  no statement, a yes/no that opens a sentence, line or clause ("Sure!\nYes.", "No, a chipmunk
  could not …"). "Yes or no" (the instruction echoed) and statements under "if" are no claims;
  claims that disagree give None;
- free text SQuAD-normalized.

With no statement a cautious fallback applies: number → the last number of a finished reply (one cut
mid-sentence or mid-expression gives None); choice → a choice named unambiguously in the last
sentence; text → none. ``None`` means no answer: ambiguity is not guessed at, since an extraction
failure is a verdict of its own.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
import re
import string
from collections.abc import Callable
from functools import lru_cache
from typing import NamedTuple

from cotfactory.errors import ConfigError
from cotfactory.records import Problem, Sample, choice_index

__all__ = ["answers_match", "extract", "normalize_number", "normalize_text", "safe_eval"]

Number = int | float

# An invented next turn: after a blank line, a turn header of the few-shot format the model imitates
# ("Q:", "Question:", "Premise:", "Human:" …). The model's own answer ends before it.
INVENTED_TURN = re.compile(r"\n[ \t]*\n[ \t]*(?:Q|Premise)[ \t]*:")
MAX_EXPONENT = 100
MAX_MAGNITUDE = 1e100
MAX_EXPRESSION_CHARS = 200

# ------------------------------------------------------------------------------------- statements
# GSM8K's final-answer marker.
_HASHES = re.compile(r"####[ \t]*(?P<body>[^\n]*)")
# "The answer is 72", "So the final answer is: $72", "**Answer:** (c)", "Therefore, the correct answer is
# yes". A leading connective belongs to the statement, not the rationale. The body runs to the end of
# the line; _statement_body keeps its first sentence.
_ANSWER_IS = re.compile(
    r"(?:\b(?:so|thus|therefore|hence)\b,?[ \t]*)?"
    r"(?:\bthe[ \t]+)?(?:\b(?:final|correct|right)[ \t]+)?"
    r"(?:\bchoice[ \t]+(?:is|was|would[ \t]+be)\b"
    r"|\banswer\b[*_]*"
    # a short aside between "answer" and its verb: "(in short)", "to this question", ", simply put,"
    r"(?:[ \t]*\([^()\n]{1,80}\)|[ \t]+(?:to|for|of|given|here|in|on|with)\b[^.!?:\n()]{0,50}?|,[^,.!?\n]{1,40},)?"
    r"[*_]*[ \t]*(?:\bis\b|\bwas\b|\bwould[ \t]+be\b|\bwill[ \t]+be\b|\bshould[ \t]+be\b|:)"
    r"|\bto[ \t]+answer[ \t]+(?:your|the|this)[ \t]+question[ \t]*:"
    r"|^[ \t]*#{1,6}[ \t]*(?:final[ \t]+)?answer\b[ \t]*:?(?=[ \t]*\n))"
    r"[*_ \t:]*(?P<body>[^\n]*)",
    re.I | re.M,
)
# An answer named before its statement: "23 is the answer.", "we can choose (d) as the answer".
_IS_THE_ANSWER = re.compile(
    r"(?<![ \t])[ \t]+(?:is|as)[ \t]+the[ \t]+(?:final[ \t]+|correct[ \t]+|right[ \t]+)?answer\b"
    r"(?![ \t]+(?:is|to|of)\b)",
    re.I,
)
# Where the clause naming an answer before "is the answer" begins: "With 5 people, 7 is the answer."
_CLAUSE_START = re.compile(r".*(?:[\n.!?:;,=]|\b(?:so|then|thus|therefore|hence|and)\b)", re.I | re.S)
NEXT_LINE_WORDS = 8
A_LINE_WORDS = 3  # "A: 18", "A: -1.8 billion"; "A: Janet has 16 eggs per day." is a rationale
MAX_BODY_CHARS = 300  # a statement's answer is in its first sentence; long lines are not read further
NUMBER_WITHIN = 4  # a number answer is among a statement's first words ("approximately $18")
# The first non-empty line after a statement that ends its own line ("The answer is:\n\nYes").
_NEXT_LINE = re.compile(r"[ \t]*\n\s*(?P<body>[^\n]+)")
# GPT-3's GSM8K solutions end with a line "A: 18".
_A_LINE = re.compile(r"^[ \t]*A:[ \t]*(?P<body>[^\n]+)", re.M)
# LaTeX boxes; the content's braces are matched by hand in _boxed().
_BOXED = re.compile(r"\\(?:boxed|fbox)[ \t]*\{")
# The end of a sentence: . ! ? followed by white space or the end ("3.5" and "1,234.50" stay whole).
_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
# Math delimiters opening a box: "$\\boxed{72}$", "\\[\\boxed{72}\\]" (the box's statement starts at them).
_MATH_OPENER = re.compile(r"(?:\$|\\\[|\\\()[ \t]*$")
# A last line that is only markup ("**" left before "Final Answer:"), trimmed off the rationale.
_DANGLING_MARKUP = re.compile(r"(?:^|\n)[*_#\s]*$")

# ----------------------------------------------------------------------------------------- markup
# \frac{3}{4} (also \dfrac, \tfrac) → (3)/(4); innermost braces first, so nesting unwraps in a loop.
_LATEX_FRAC = re.compile(r"\\[dt]?frac\{([^{}]*)\}\{([^{}]*)\}")
_LATEX_WRAPPER = re.compile(r"\\(?:boxed|fbox|text|textbf|textrm|mathrm|mathbf)[ \t]*\{([^{}]*)\}")
_LATEX_SYMBOLS = {
    **{r"\$": "$", r"\%": "%", "{,}": ",", r"\times": "*", r"\cdot": "*", r"\div": "/"},
    **{r"\!": "", r"\,": "", r"\left": "", r"\right": ""},  # spacing and sizing only
}
# A number the parser reads as itself (a sign, no leading zeros): safe_eval's fast path.
_PLAIN_LITERAL = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?")
_INLINE_MATH = re.compile(r"\$([^$]*)\$")
_MATH_DELIMITERS = re.compile(r"\\[()\[\]]")
_UNICODE_MATH = str.maketrans({"−": "-", "–": "-", "×": "*", "·": "*", "÷": "/"})

# ---------------------------------------------------------------------------------------- numbers
# A number token; a minus counts as a sign only when it does not follow an operand ("16-3" → 16, 3).
_NUMBER = re.compile(r"(?<![\w.)])-?(?:(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)")
# A last equation whose result is an unknown: "180 / 36 = X\nX is the answer."
_UNRESOLVED = re.compile(r"=[ \t]*[a-z][ \t]*(?:[.,]|\n|$)[^=\d]*$", re.I)
# A reply's closing number, perhaps with a currency, a percent or a unit word or two: "= 26", "$1,200", "18 eggs".
_NUMBER_AT_END = re.compile(r"(?P<number>[$€£]?-?\d[\d,]*(?:\.\d+)?%?)(?:[ \t]+[a-z]+){0,2}[ \t]*$", re.I)
MAX_FINAL_DIGITS = 12
TAIL_CHARS = 80  # how much of a reply's end the finished-check reads
# A thousands separator: "1,234" → "1234", but "3, 4" stays a list.
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
# A percent sign after a number ("72%"), not the modulo of "7 % 3".
_PERCENT = re.compile(r"(?<=\d)\s*%(?!\s*[\d(])")
# Two numbers offered as alternatives: "12 or 14", "$12 or $14".
_NUMBER_HEDGE = re.compile(r"\d[\w%.]{0,15}+\s*,?\s+(?:or|and)\s+[$]?-?\.?\d", re.I)
_EQUALS = re.compile(r"\b(?:equals|is equal to|makes)\b", re.I)
# An unknown in an answer: "3x", "x + 2", a lone "X".
_VARIABLE = re.compile(r"\d[xyn]\b|\b[xyn]\s*[-+*/^]|[-+*/^]\s*[xyn]\b|^\s*[xyn]\s*$", re.I)
# An expression that stops at an operator: "10+" of "10+John's age".
_DANGLING_OPERATOR = re.compile(r"[+\-*/%]\s*$")
# A scale word after a number: "1.8 billion".
_SCALE = re.compile(r"\s*(thousand|million|billion|trillion)\b", re.I)
_SCALES = {"thousand": 1e3, "million": 1e6, "billion": 1e9, "trillion": 1e12}
_UNIT_WORDS = (
    "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen sixteen "
    "seventeen eighteen nineteen"
)
_UNITS = {word: value for value, word in enumerate(_UNIT_WORDS.split(" "))}
_TEN_WORDS = "twenty thirty forty fifty sixty seventy eighty ninety"
_TENS = {word: 10 * value for value, word in enumerate(_TEN_WORDS.split(" "), 2)}
# The first run of arithmetic characters holding a digit: "18 eggs" → "18 ", "( 84.0 / 2.0 )" whole.
_ARITH_SPAN = re.compile(r"[\d.+\-*/%()\s]*\d[\d.+\-*/%()\s]*")

# ---------------------------------------------------------------------------------- choices, yes/no
# A choice letter in parentheses anywhere in the statement: "(c) train station", "either (b) or (d)".
_LETTER_IN_PARENS = re.compile(r"\(([a-j])\)", re.I)
# A letter closed by a bracket inside a statement: "Options d) bathroom, c), and c)".
_LETTER_CLOSED = re.compile(r"(?<=\s)([a-j])\)", re.I)
# Where the words naming a choice stop: "(c) wooded area, since …", "(b) lake because …".
_CLAUSE_END = re.compile(r"[,;:(]|\s(?:because|since|as|which|so)\b|\s[-–—]\s", re.I)
_FILLER_WORDS = {"and", "or", "of", "to", "in", "on", "at", "for", "with", "by"}
TYPO_SIMILARITY = 0.75  # difflib ratio from which "tokio" and "tokyo" are one word misspelt
# A bare letter opening the statement: "c", "C)", "c.", "C: train station" (not "a train station").
_LEADING_LETTER = re.compile(r"^([a-j])(?:[).:](?:\s|$)|$)", re.I)
_YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}
# The words that may stand before a statement's yes/no: "is indeed yes", "is that no", "is a clear yes".
_YES_NO_LEAD_INS = {
    "indeed",
    "definitely",
    "certainly",
    "clearly",
    "simply",
    "that",
    "a",
    "clear",
    "resounding",
    "firm",
    "most",
    "likely",
    "probably",
    "very",
}
# Two yes/no words joined by or/and/-//: "yes or no" (the instruction echoed), "no - yes" (a hedge).
_YES_NO_PAIR = re.compile(r"\b(?:yes|no|true|false)\b[\s*\"'.,]*(?:or|and|/|-|–)[\s*\"']*(?:yes|no|true|false)\b", re.I)
# A later statement marked as correcting an earlier one: "Wait, I made a mistake… the answer is 14".
_CORRECTION = re.compile(
    r"\b(?:wait|actually|mistake|correction|corrected|instead|re-?check(?:ed|ing)?|oops|on reflection|"
    r"on second thought|reconsider(?:ing)?|not right|wrong|incorrect|recompute|recalculate|double-check)\b",
    re.I,
)
# The reply's own last word on the answer: GSM8K's "####", or a statement called final.
_FINAL_MARK = re.compile(r"^####|\bfinal\b", re.I)
# A text that says it has no answer: the fallback must not find one for it.
_NO_ANSWER = re.compile(
    r"\bno\s+(?:\w+\s+)?answer\b|\bcannot be (?:determined|answered)\b|\bnot enough information\b"
    r"|\bcan be any of\b|\banswer is (?:incorrect|wrong|unclear|unknown)\b",
    re.I,
)
# A line that lists one lettered option: "b) city", "(c) house".
_OPTION_LINE = re.compile(r"^[ \t*]*\(?([a-j]|[ivx]+|\d+)[).][ \t]", re.I | re.M)
# An answer to one step or part, not to the question.
_SUB_ANSWER = re.compile(r"\banswer\b[^.\n:]{0,25}\b(?:step|part|sub-?question)\b", re.I)
# A statement inside a condition is no claim: "If it rained, the answer would be yes."
_CONDITIONAL = re.compile(r"\b(?:if|whether|unless|suppose)\b", re.I)
_PARENTHETICAL = re.compile(r"\([^()]*\)")
_WORDY_PARENTHETICAL = re.compile(r"\([^()]*[a-z]{2}[^()]*\)", re.I)
# A yes/no word that opens a sentence, a line or a clause after a colon or dash, after at most a short
# lead-in ("So,", "Sure!", "In reality,"), and stands alone: "Yes.", "No, it …", "**Yes**" — not "No one".
_OPENING_CLAIM = re.compile(
    r"(?:^|[.!?:\-–][ \t]+|\n)[ \t>*#\-\d.)\"']{0,8}+(?:[a-z' ]{1,20}[,!][ \t]*)?[*_\"']{0,4}+"
    r"(yes|no|true|false)\b[*_\"']*(?=[ \t]*[,.!;:\-–—]|[ \t]*$)",
    re.I | re.M,
)
# Where a free-text answer phrase stops: a clause that describes it, or an aside.
_TEXT_CLAUSE = re.compile(r",?\s+(?:which|who|because|since|as it|that is)\b|\s[-–—]\s|;|\(")
_EITHER_OR = re.compile(r"\beither\b.+\bor\b", re.I)
_ARTICLES = re.compile(r"\b(?:a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


class _Statement(NamedTuple):
    start: int  # the rationale is the text before this
    end: int
    body: str  # the raw answer, to be normalized by answer type
    kind: str = "sentence"  # or "box": an empty box is a refusal


# ------------------------------------------------------------------------------------ public API
def fill_answer(sample: Sample, problem: Problem, pattern: str | None = None) -> None:
    """Set ``sample.rationale`` and ``sample.answer`` from its text.

    A contrastive or counterfactual rationale follows its answer ("The answer is X. Because …"), so
    its answer is the one it was written for, not something to extract.
    """
    if sample.failed:
        return
    target = sample.request.target_answer
    if target is not None:
        sample.rationale, sample.answer = sample.text.strip(), target
        return
    finished = {"stop": True, "length": False}.get(sample.finish_reason)
    sample.rationale, sample.answer = extract(sample.text, problem, pattern, finished)


def extract(
    text: str, problem: Problem, pattern: str | None = None, finished: bool | None = None
) -> tuple[str, str | None]:
    """(rationale, answer): the text before the final-answer statement and the normalized answer.

    ``finished``: whether the teacher ended the reply itself (True), was cut at its token limit
    (False), or is not known (None: the fallback then judges from the text's end). The answer is None
    when none can be found; see the module docstring for the order of the rules.
    """
    text = cut_invented_turn(text)
    statement = _pattern_statement(text, pattern) if pattern else None
    if statement is not None:
        answer = _normalize(statement.body, problem.answer_type, problem.choices)
    elif problem.answer_type == "yes_no":
        statements = _statements(text)
        statement = statements[-1] if statements else None
        answer = _read_yes_no(text, statements)
    else:
        statements = _statements(text)
        statement = statements[-1] if statements else None
        answer, refused = _read_claims(text, statements, problem)
        if answer is None and not refused and finished is not False and not _NO_ANSWER.search(text):
            answer = _FALLBACKS[problem.answer_type](text, problem.choices or [], finished)
    rationale = _trim_rationale(text[: statement.start]) if statement else text.strip()
    return rationale, answer


def _read_claims(text: str, statements: list[_Statement], problem: Problem) -> tuple[str | None, bool]:
    """(answer, refused) from the answer statements: the answer they agree on; the last one when it is
    marked as a correction ("Wait, … the correct answer is 14"); else, when they disagree, None and
    refused. A statement that held an answer of its type but gave none (a hedge, a letter/text
    conflict) also refuses: the fallback must not guess past it."""
    claims: list[tuple[_Statement, str]] = []
    refused = False  # the last statement held an answer of its type and gave none: a hedge, a conflict
    for statement in statements:
        if _SUB_ANSWER.search(text, statement.start, statement.start + 60) or _under_condition(text, statement):
            continue  # "the answer to the first part is 9", "if she sold 10, the answer would be 20"
        claim = _normalize(statement.body, problem.answer_type, problem.choices)
        if claim is not None:
            claims.append((statement, claim))
            refused = False
        elif _REFUSAL[problem.answer_type].search(_clean_markup(statement.body)):
            refused = True
        elif statement.kind == "box" and not statement.body.strip():
            refused = True  # an empty \\boxed{}: the model declined
    if not claims or refused:
        return None, refused or bool(_NO_ANSWER.search(text))
    last_statement, last = claims[-1]
    if all(answers_match(claim, last, problem) for _, claim in claims):
        return last, False
    if statements[-1] is last_statement and _FINAL_MARK.search(text[last_statement.start : last_statement.end]):
        return last, False  # "#### 18" or "Final answer: 18" closing the reply settles it
    differing = [s for s, claim in claims if not answers_match(claim, last, problem)]
    if _CORRECTION.search(text[differing[-1].start : last_statement.end]):
        return last, False  # "The answer is 6. Hmm, that's not right … Final answer: 7"
    return None, True


def cut_invented_turn(text: str) -> str:
    """The text before an invented next turn (PaLM's "\n\nQ: …", "\n\nPremise: …")."""
    return INVENTED_TURN.split(text, maxsplit=1)[0]


def states_answer(text: str, pattern: str | None = None) -> bool:
    """Whether the text has a final-answer statement (the pattern's, '####', 'The answer is …', a box),
    as opposed to an answer only a fallback would guess."""
    text = cut_invented_turn(text)
    return bool((_pattern_statement(text, pattern) if pattern else None) or _find_statement(text))


def answers_match(answer: str | None, gold: str | None, problem: Problem, tolerance: float = 1e-4) -> bool:
    """Whether an answer equals the gold under the problem's answer type; None never matches.

    Numbers compare numerically, both sides parsed by the same normalizer ("18.0" matches "18",
    "1,234" matches "1234"), within relative and absolute ``tolerance``; when either is whole only the
    absolute one applies, since a relative 1e-4 would let 120006 pass for 120000. The rule is
    symmetric, so the consistency filter can vote with it. Choices compare by their text, case-blind
    (a letter "c" stands for the third choice); yes/no and free text after normalization.
    """
    if answer is None or gold is None:
        return False
    return _MATCHERS[problem.answer_type](answer, gold, problem.choices or [], tolerance)


def normalize_number(text: str) -> str | None:
    """The number a text states, as short text: '$1,234.50' → '1234.5'; '72%' → '72'; '3/4' → '0.75'.

    A statement "3 + 4 = 7" gives what follows the last "="; an arithmetic expression is evaluated
    with ``safe_eval``; trailing units are ignored ("18 eggs" → "18"). None when there is no number.
    """
    value = _parse_number(text)
    return None if value is None else _format_number(value)


def normalize_text(text: str) -> str:
    """SQuAD-style: lower case, no punctuation, no articles (a, an, the), single spaces."""
    text = _clean_markup(text).lower().translate(_PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def safe_eval(expression: str) -> Number | None:
    """Evaluate plain arithmetic, or None when it is anything else.

    Allowed: int and float literals, + - * / // % **, unary minus and plus, parentheses. Refused:
    names, calls, attributes, anything longer than MAX_EXPRESSION_CHARS, exponents above
    MAX_EXPONENT and any value beyond MAX_MAGNITUDE (so ``9**9**9`` returns at once). No ``eval``.
    """
    if len(expression) > MAX_EXPRESSION_CHARS:
        return None
    expression = expression.strip()
    try:
        if _PLAIN_LITERAL.fullmatch(expression):  # the usual answer: what the parser would give, without it
            return _bounded(float(expression) if "." in expression else int(expression))
        return _evaluate(ast.parse(expression, mode="eval").body)
    except (SyntaxError, ValueError, TypeError, ZeroDivisionError, OverflowError, RecursionError):
        return None


# ----------------------------------------------------------------------------- finding statements
@lru_cache(maxsize=64)
def _compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        compiled = re.compile(pattern, re.S)
    except re.error as exc:
        raise ConfigError(f"answer_pattern {pattern!r} is not a valid regex: {exc}") from exc
    if compiled.groups < 1:
        raise ConfigError(f"answer_pattern {pattern!r} needs a group: group 1 is the answer")
    return compiled


def _pattern_statement(text: str, pattern: str) -> _Statement | None:
    match = _compile_pattern(pattern).search(text)
    if not match:
        return None
    return _Statement(match.start(), match.end(), match.group(1) or "")


def _find_statement(text: str) -> _Statement | None:
    """The final-answer statement: the last '####', else the last natural-language statement."""
    found = _statements(text)
    return found[-1] if found else None


def _statements(text: str) -> list[_Statement]:
    """Every final-answer statement in text order: the '####' lines if there are any, else the
    natural-language ones ("The answer is …", "A: …", boxes)."""
    hashes = [_Statement(m.start(), m.end(), m["body"]) for m in _HASHES.finditer(text)]
    sentences = [_sentence_statement(text, m) for m in _answer_is_matches(text)]
    sentences += [
        statement
        for m in _IS_THE_ANSWER.finditer(text)
        if (statement := _named_before(text, m)) and not any(s.start <= statement.start < s.end for s in sentences)
    ]
    lines = [  # "A: 18" — a short answer line; "A: The store made 36 / 3 = 12 sales …" is a rationale
        _Statement(m.start(), m.end(), m["body"])
        for m in _A_LINE.finditer(text)
        if len(m["body"].split()) <= A_LINE_WORDS
    ]
    boxes = [box for box in _boxed(text) if not any(s.start < box.start < s.end for s in sentences + lines)]
    return sorted(hashes + sentences + lines + boxes, key=lambda s: s.start)


def _named_before(text: str, match: re.Match[str]) -> _Statement | None:
    """The answer a "… is the answer" clause names: the words since the clause began (at most 60 chars)."""
    window_start = max(0, match.start() - 60)
    window = text[window_start : match.start()]
    opener = _CLAUSE_START.match(window)
    start = window_start + (opener.end() if opener else 0)
    body = text[start : match.start()].strip()
    return _Statement(start, match.end(), body) if body else None


def _answer_is_matches(text: str) -> list[re.Match[str]]:
    """Every "answer is" statement, also one inside another's line ("The answer should be X. So the
    answer is (a) Y." holds two)."""
    found, position = [], 0
    while match := _ANSWER_IS.search(text, position):
        found.append(match)
        position = match.start("body")
    return found


def _sentence_statement(text: str, match: re.Match[str]) -> _Statement:
    """An "answer is" statement; one whose line ends at "is:" takes its answer from the next line."""
    body, end = match["body"][:MAX_BODY_CHARS], match.end()
    if not body.strip(" \t*_:`#"):
        following = _NEXT_LINE.match(text, end)
        if following and len(following["body"].split()) <= NEXT_LINE_WORDS:  # an answer, not more reasoning
            body, end = following["body"], following.end()
    return _Statement(match.start(), end, _statement_body(body))


def _statement_body(body: str) -> str:
    """The first sentence of a statement, inside a repeated one ("Final Answer: The final answer is 72")."""
    # an inner statement in an aside ("yes (the answer is yes or no to …)") does not count
    while inner := _ANSWER_IS.search(_PARENTHETICAL.sub(lambda m: " " * len(m.group()), body)):
        if body[: inner.start()].strip(" *_:"):
            body = body[: inner.start()]  # "(c) The answer is (x)": the second statement is its own
            break
        body = body[inner.start("body") :]
    end = _SENTENCE_END.search(body)
    if end and end.group() == "?":
        return ""  # "so the answer is 6? No wait…": a question, not a claim
    return body[: end.start()] if end else body


def _boxed(text: str) -> list[_Statement]:
    """Every ``\\boxed{...}`` with its content, nested braces included."""
    found = []
    for match in _BOXED.finditer(text):
        depth, position = 1, match.end()
        while position < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[position], 0)
            position += 1
        if depth == 0:
            opener = _MATH_OPENER.search(text, 0, match.start())
            start = opener.start() if opener else match.start()
            found.append(_Statement(start, position, text[match.end() : position - 1], "box"))
    return found


def _trim_rationale(text: str) -> str:
    return _DANGLING_MARKUP.sub("", text).strip()


def _last_sentence(text: str) -> str:
    parts = [part for part in re.split(r"(?<=[.!?])\s+|\n+", text.strip()) if part.strip()]
    return parts[-1] if parts else ""


# ---------------------------------------------------------------------------------- normalizing
def _clean_markup(text: str) -> str:
    """Markdown and LaTeX dressing off: '**72**', '$\\boxed{\\frac{3}{4}}$', '\\$1{,}234' → bare text."""
    if "\\" in text or "{," in text:  # LaTeX (most replies have none, and skip these passes)
        for latex, plain in _LATEX_SYMBOLS.items():
            text = text.replace(latex, plain)
        previous = None
        while previous != text:
            previous = text
            text = _LATEX_FRAC.sub(r"(\1)/(\2)", text)
            text = _LATEX_WRAPPER.sub(r"\1", text)
    text = _INLINE_MATH.sub(r"\1", text)
    text = _MATH_DELIMITERS.sub("", text)
    text = text.replace("**", "").replace("__", "").replace("`", "")
    return text.strip().strip("\"'").strip()


def _normalize(raw: str, answer_type: str, choices: list[str] | None) -> str | None:
    return _NORMALIZERS[answer_type](raw, choices or [])


def _parse_number(text: str) -> Number | None:
    text = _WORDY_PARENTHETICAL.sub(" ", _clean_markup(text)).translate(_UNICODE_MATH).replace("$", "")
    text = _PERCENT.sub("", _EQUALS.sub("=", text)).rsplit("=", 1)[-1]
    if _VARIABLE.search(text):
        return None  # "2 + 3x", "X": an answer in unknowns is no number
    text = _THOUSANDS.sub("", text).replace("^", "**")
    if _NUMBER_HEDGE.search(text):
        return None  # "either 12 or 14" is not one answer
    span = _ARITH_SPAN.search(text)
    if not span:
        return _number_in_words(text)
    if _DANGLING_OPERATOR.search(span.group()) and text[span.end() :].strip():
        return None  # "10+John's age": the expression goes on in words
    value = safe_eval(span.group().strip())
    if value is None and (token := _NUMBER.search(span.group())):
        value = _number_value(token.group())
    scale = _SCALE.match(text, span.end())
    return value * _SCALES[scale.group(1).lower()] if value is not None and scale else value


def _number_in_words(text: str) -> int | None:
    """'twelve' → 12, 'twenty-five' → 25, 'one hundred and five' → 105; None unless the text opens
    with a number word (its first words only: 'The answer is twelve eggs')."""
    words = re.findall(r"[a-z]+", text.lower())
    total, current, seen = 0, 0, False
    for word in words:
        if word in _UNITS:
            current += _UNITS[word]
        elif word in _TENS:
            current += _TENS[word]
        elif word == "hundred" and seen:
            current *= 100
        elif word in _SCALES and seen:
            total, current = total + current * int(_SCALES[word]), 0
        elif word == "and" and seen:
            continue
        else:
            break
        seen = True
    return total + current if seen else None


def _number_value(token: str) -> Number | None:
    """A number token's value ('1,234' → 1234); None beyond MAX_MAGNITUDE."""
    token = token.replace(",", "")
    try:
        value: Number = int(token) if token.lstrip("-").isdigit() else float(token)
    except ValueError:  # more digits than int() converts
        return None
    return value if abs(value) <= MAX_MAGNITUDE else None


def _format_number(value: Number) -> str | None:
    """Integral values without '.0'; others rounded to 12 significant digits, shortest repr."""
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return None
    rounded = float(f"{value:.12g}")
    return str(int(rounded)) if rounded.is_integer() else repr(rounded)


def _number_answer(raw: str, choices: list[str]) -> str | None:
    words = _clean_markup(raw).split()
    if words and not any(re.search(r"\d", word) for word in words[:NUMBER_WITHIN]) and _number_in_words(raw) is None:
        return None  # "the number of eggs times 2": a description of the answer, not the answer
    return normalize_number(raw)


def _choice_answer(raw: str, choices: list[str]) -> str | None:
    """The choice text a statement names: by its letter first, else by its text; None if it names several."""
    text = _clean_markup(raw).rstrip(".").strip().lstrip("*-• ").strip()
    letters = {letter.lower() for letter in _LETTER_IN_PARENS.findall(text)}
    letters |= {letter.lower() for letter in _LETTER_CLOSED.findall(text)}
    if not letters and (leading := _LEADING_LETTER.match(text)):
        letters = {leading.group(1).lower()}
    if len(letters) > 1:
        return None  # "either (b) lake or (d) pond" is not one answer
    if letters:
        index = choice_index(letters.pop(), len(choices))
        if index is None:
            return None
        in_parens = list(_LETTER_IN_PARENS.finditer(text))
        named_after = text[in_parens[-1].end() :] if in_parens else text[1:]
        return choices[index] if _agrees(named_after, choices[index], choices) else None
    return _named_choice(text, choices)


def _agrees(text: str, chosen: str, choices: list[str]) -> bool:
    """Whether the text beside a letter names the letter's choice, or says nothing of its own: a typo,
    a plural, a cut or a longer form of it agrees ("(c) skyscraper" for "skyscaper"); another choice,
    or a thing that is no choice, does not ("(e) ice" for "water cooler") — letter and text conflict."""
    text = _CLAUSE_END.split(text, maxsplit=1)[0].strip(" .:-–—*\"'")
    if not text:
        return True
    named = _named_choice(text, choices)
    if named is not None:
        return named.lower() == chosen.lower()
    said, meant = normalize_text(text), normalize_text(chosen)
    stems = [{word.rstrip("s") for word in words.split()} - _FILLER_WORDS for words in (said, meant)]
    if said in meant or meant in said or 2 * len(stems[0] & stems[1]) > min(len(stems[0]), len(stems[1])):
        return True
    return difflib.SequenceMatcher(None, said, meant).ratio() >= TYPO_SIMILARITY


def _named_choice(text: str, choices: list[str]) -> str | None:
    """The one choice the text names (exactly, or as a word group, plural allowed); None if not one."""
    lowered = text.lower()
    for choice in choices:
        if choice.lower() == lowered:
            return choice
    named = [
        c
        for c in choices
        if re.search(rf"(?<!\w){re.escape(c.lower())}(?:e?s)?(?!\w)", lowered)
        and not re.search(rf"\bnot\s+(?:the\s+|an?\s+)?{re.escape(c.lower())}", lowered)  # rejected
    ]
    # "grocery store" also names "store": keep the longest of overlapping names
    named = [c for c in named if not any(c.lower() in o.lower() and c.lower() != o.lower() for o in named)]
    return named[0] if len({c.lower() for c in named}) == 1 else None


def _yes_no_answer(raw: str, choices: list[str]) -> str | None:
    return _statement_claim(raw)


def _read_yes_no(text: str, statements: list[_Statement]) -> str | None:
    """A yes/no answer: the claims of the answer statements if any make one, else the yes/no words
    that open a sentence, line or clause ("Sure!\nYes.", "In reality, no.", "…question: No, it…").
    Claims that disagree are a hedge, and "yes or no" (the instruction echoed) is no claim: both None."""
    claims = {claim for s in statements if not _under_condition(text, s) and (claim := _statement_claim(s.body))}
    if not claims:
        unechoed = _YES_NO_PAIR.sub(" ", text)
        claims = {_YES_NO[m.group(1).lower()] for m in _OPENING_CLAIM.finditer(unechoed)}
    return claims.pop() if len(claims) == 1 else None


def _under_condition(text: str, statement: _Statement) -> bool:
    """Whether the statement's sentence puts it under a condition ("If she sold 10, the answer would be
    20"): then it is no claim about the question."""
    sentence_start = max(text.rfind(mark, 0, statement.start) for mark in (". ", "! ", "? ", "\n")) + 1
    return bool(_CONDITIONAL.search(text, sentence_start, statement.start))


def _statement_claim(body: str) -> str | None:
    """The yes/no a statement claims: the yes/no word it opens with ("yes", "indeed yes", "that yes",
    '"No."'); None for "yes or no", "no or yes", "yes and no", or a statement that opens otherwise."""
    body = _PARENTHETICAL.sub(" ", _clean_markup(body))
    if _YES_NO_PAIR.search(body):
        return None
    for word in re.findall(r"[a-z]+", body.lower()):
        if word in _YES_NO:
            return _YES_NO[word]
        if word not in _YES_NO_LEAD_INS:
            return None  # "There are no other options": the statement does not open with its claim
    return None


def _text_answer(raw: str, choices: list[str]) -> str | None:
    """The answer phrase, without a clause that describes it ("Mount Everest, which rises …");
    None for "either A or B"."""
    phrase = _TEXT_CLAUSE.split(_clean_markup(raw), maxsplit=1)[0]
    if _EITHER_OR.search(phrase):
        return None
    return normalize_text(phrase) or None


_NORMALIZERS: dict[str, Callable[[str, list[str]], str | None]] = {
    "number": _number_answer,
    "choice": _choice_answer,
    "yes_no": _yes_no_answer,
    "text": _text_answer,
}


# ------------------------------------------------------------------------------------- fallbacks
def _last_number(text: str, choices: list[str], finished: bool | None = None) -> str | None:
    """The last number of a finished text (a text cut mid-sentence or mid-expression gives none)."""
    if not (finished or _finished(text)) or _UNRESOLVED.search(text):
        return None  # cut off, or the last equation ends in an unknown ("180 / 36 = X")
    tokens = _NUMBER.findall(text)
    value = _number_value(tokens[-1]) if tokens else None
    return None if value is None else _format_number(value)


def _finished(text: str) -> bool:
    """Whether a reply ends as a finished one: its last sentence closes (". ! ?"), or its last line is
    a bare number ("25", "$1,200", "75%"). A reply cut at the token limit usually ends mid-sentence,
    mid-expression or inside an unclosed GSM8K annotation ("<<41.472+8.")."""
    if text.count("<<") > text.count(">>"):
        return False
    end = text.rstrip().rstrip("*_`\"')]}")
    if end.endswith((".", "!", "?")):
        return True
    tail = end[-TAIL_CHARS:]
    last = _NUMBER_AT_END.search(tail)
    if not last or len(re.sub(r"\D", "", last["number"])) > MAX_FINAL_DIGITS:
        return False  # ends in words mid-sentence, or in a runaway "0.33333333333333…"
    return not tail[: last.start()].rstrip().endswith(("+", "-", "*", "/", "^", "×"))  # not mid-expression


def _choice_in_last_sentence(text: str, choices: list[str], finished: bool | None = None) -> str | None:
    """The one choice the last sentence names; none when the text ends in a list of options."""
    last_paragraph = text.strip().rsplit("\n\n", 1)[-1]
    if len(set(_OPTION_LINE.findall(last_paragraph))) >= 2:
        return None  # "a) move about\nb) city": the options listed, not one chosen
    return _choice_answer(_last_sentence(text), choices)


def _no_fallback(text: str, choices: list[str], finished: bool | None = None) -> str | None:
    return None


#: a statement that held an answer of its type but gave none refused on purpose (a hedge, a conflict):
#: the fallback must not guess past it (yes/no has neither: ``_read_yes_no`` reads it whole)
_REFUSAL: dict[str, re.Pattern[str]] = {
    "number": re.compile(r"\d"),
    "choice": re.compile(r"\([a-j]\)|^\W*[a-j](?:[).:]|$)|\s[a-j]\)", re.I),
    "text": re.compile(r"\S"),
}
_FALLBACKS: dict[str, Callable[[str, list[str], bool | None], str | None]] = {
    "number": _last_number,
    "choice": _choice_in_last_sentence,
    "text": _no_fallback,
}


# -------------------------------------------------------------------------------------- matching
def _numbers_match(answer: str, gold: str, choices: list[str], tolerance: float) -> bool:
    a, g = _parse_number(answer), _parse_number(gold)
    if a is None or g is None:
        return False
    # a whole number has no rounding for a relative tolerance to forgive: 120006 is not 120000
    whole = float(a).is_integer() or float(g).is_integer()
    return math.isclose(a, g, rel_tol=0.0 if whole else tolerance, abs_tol=tolerance)


def _choices_match(answer: str, gold: str, choices: list[str], tolerance: float) -> bool:
    return _choice_text(answer, choices).lower() == _choice_text(gold, choices).lower()


def _choice_text(value: str, choices: list[str]) -> str:
    """A choice's text as given, or the text a lone letter ('c', '(C)') stands for."""
    value = value.strip()
    if any(value.lower() == choice.lower() for choice in choices):
        return value
    letter = re.fullmatch(r"\(?([a-e])\)?", value, re.I)
    index = choice_index(letter.group(1), len(choices)) if letter else None
    return choices[index] if index is not None else value


def _yes_no_match(answer: str, gold: str, choices: list[str], tolerance: float) -> bool:
    a = _YES_NO.get(answer.strip().lower())
    return a is not None and a == _YES_NO.get(gold.strip().lower())


def _texts_match(answer: str, gold: str, choices: list[str], tolerance: float) -> bool:
    a = normalize_text(answer)
    return bool(a) and a == normalize_text(gold)


_MATCHERS: dict[str, Callable[[str, str, list[str], float], bool]] = {
    "number": _numbers_match,
    "choice": _choices_match,
    "yes_no": _yes_no_match,
    "text": _texts_match,
}


# ------------------------------------------------------------------------------ safe arithmetic
def _power(base: Number, exponent: Number) -> Number:
    if abs(exponent) > MAX_EXPONENT:
        raise ValueError(f"exponent {exponent} above {MAX_EXPONENT}")
    if base and exponent * math.log10(abs(base)) > math.log10(MAX_MAGNITUDE):
        raise ValueError(f"{base} ** {exponent} is beyond {MAX_MAGNITUDE:g}")
    return base**exponent


_BINARY: dict[type[ast.operator], Callable[[Number, Number], Number]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: _power,
}


def _evaluate(node: ast.expr) -> Number:
    """Walk the syntax tree; anything but numbers, arithmetic and parentheses raises ValueError."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):  # not bool, not complex
        return _bounded(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _evaluate(node.operand)
        return -value if isinstance(node.op, ast.USub) else value
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        return _bounded(_BINARY[type(node.op)](_evaluate(node.left), _evaluate(node.right)))
    raise ValueError(f"not plain arithmetic: {type(node).__name__}")


def _bounded(value: Number) -> Number:
    if type(value) not in (int, float) or abs(value) > MAX_MAGNITUDE or not math.isfinite(value):
        raise ValueError(f"not a number within {MAX_MAGNITUDE:g}: {value!r}")
    return value
