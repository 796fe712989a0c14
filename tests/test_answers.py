"""The answer module on unit cases and on real teacher text (GPT-3 on GSM8K, PaLM-540B on CommonsenseQA)."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
from helpers import read_jsonl

from cotfactory.answers import answers_match, extract, normalize_number, normalize_text, safe_eval
from cotfactory.errors import ConfigError
from cotfactory.records import Problem

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"

NUMBER = Problem(id="n", question="How many?", answer_type="number")
CHOICE = Problem(
    id="c",
    question="Where do beavers get their supplies?",
    answer_type="choice",
    choices=["british columbia", "body of water", "wooded area", "pay debts", "train station"],
)
YES_NO = Problem(id="y", question="Is it?", answer_type="yes_no")
TEXT = Problem(id="t", question="Which city?", answer_type="text")

# Real teacher text: a GPT-3 175B GSM8K solution and PaLM-540B CommonsenseQA completions, verbatim.
GPT3_SOLUTION = (
    "Janet eats 3 duck eggs for breakfast and bakes 4 into muffins so 3 + 4 = <<3+4=7>>7 duck eggs are used\n"
    "Each day Janet's ducks lay 16 eggs and she uses 7, 16 - 7 = <<16-7=9>>9 duck eggs are for sale\n"
    "She sells her eggs for $2 per egg and has 9 available for sale so 2 * 9 = $<<2*9=18>>18 per day\n"
    "A: 18"
)
PALM_BEAVER = (
    "The answer must be the place where beavers get their supplies. Of the above choices, only wooded areas have "
    "the supplies that beavers need. So the answer is (c) wooded area.\n\nQ: What is the best way to get rid of a "
    "bad smell?\nAnswer Choices:\n(a) air freshener\n(b) air conditioner\nA: The answer must be something that gets "
    "rid of bad smells. So the answer is (a) air freshener."
)
PALM_SOLDIER = (  # the text names choice (d), the letter says (e): letter and text conflict, refused
    "The answer must be something that a soldier does at a rendezvous point. Of the above choices, only wait for "
    "orders makes sense. So the answer is (e) wait for orders."
)
SOLDIER = Problem(
    id="340",
    question="The soldier was told to get to the rendezvous point, for there he was suppose to what?",
    answer_type="choice",
    choices=["fight enemy", "go to war", "fight for freedom", "wait for orders", "follow instructions"],
)
PALM_HEDGE = (
    "The answer must be a body of water. Of the above choices, only lake and pond are bodies of water. "
    "So the answer is either (b) lake or (d) pond."
)
PEBBLE = Problem(
    id="78",
    question="He picked up the perfect pebble, he planned to skip it across the entire small what?",
    answer_type="choice",
    choices=["manual", "lake", "aquarium", "pond", "playground"],
)


# ---------------------------------------------------------------------------------------- numbers
@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("She makes 9 * 2 = $<<9*2=18>>18 every day.\n#### 18", "18"),
        ("3 * 24 = 72 dollars. The answer is 72.", "72"),
        ("Adding them up, the final answer is: $72", "72"),
        ("16 - 3 - 4 = 9 eggs\nA: 72", "72"),
        ("The answer is $1,234.50.", "1234.5"),
        ("The answer is 72%.", "72"),
        ("The answer is 3/4.", "0.75"),
        ("The answer is -5.", "-5"),
        ("The answer is −5.", "-5"),  # unicode minus
        ("The answer is 72 dollars.", "72"),
        ("The answer is 18 eggs, one for each day.", "18"),
        ("The answer is **72**.", "72"),
        ("**Final Answer:** 72", "72"),
        ("Final Answer: The final answer is 72. I hope it is correct.", "72"),
        ("So the total is $\\boxed{72}$.", "72"),
        ("The answer is $\\boxed{\\frac{3}{4}}$.", "0.75"),
        ("We get \\[\\boxed{1{,}234}\\]", "1234"),
        ("The answer is ( 84.0 / 2.0 )", "42"),  # SVAMP's equation form
        ("The answer is 3 + 4 = 7.", "7"),
        ("The answer is 51.0", "51"),
        ("The answer is 1/3.", "0.333333333333"),
        ("The answer is 2^10.", "1024"),
        ("She has 16 - 3 = 13 eggs, then sells 13 * 2 = 26", "26"),  # no statement: the last number
        ("There is nothing to count here.", None),
    ],
)
def test_number_answers(text: str, answer: str | None) -> None:
    assert extract(text, NUMBER)[1] == answer


def test_rationale_is_the_text_before_the_statement() -> None:
    assert extract(GPT3_SOLUTION, NUMBER) == (GPT3_SOLUTION.rsplit("\nA: ", 1)[0], "18")
    assert extract("3 + 4 = 7.\nTherefore, the answer is 7.", NUMBER) == ("3 + 4 = 7.", "7")
    assert extract("Two steps.\n**Final Answer:** 7", NUMBER) == ("Two steps.", "7")
    assert extract("Two steps. So $\\boxed{7}$.", NUMBER) == ("Two steps. So", "7")
    assert extract("  no statement, 7  ", NUMBER) == ("no statement, 7", "7")


def test_statements_that_disagree_are_refused_unless_a_correction_is_marked() -> None:
    assert extract("The answer is 5 at first.\nOn reflection the answer is 6.", NUMBER)[1] == "6"  # a correction
    assert extract("The answer is 6.\nHmm, that's not right: 13 - 6 = 7. Final answer: 7", NUMBER)[1] == "7"
    assert extract("The answer is 5.\nSo the answer is 6.", NUMBER)[1] is None  # two claims, neither retracted
    assert extract("The answer is 5.\nSo the answer is 5.0.", NUMBER)[1] == "5"  # claims that agree
    assert extract("A: Let's think step by step. 3 + 4 = 7. The answer is 7.", NUMBER)[1] == "7"
    assert extract("The answer is 5.\n#### 6\nThe answer is 9.", NUMBER)[1] is None  # '####' wins no more
    assert extract("#### 6\nThe answer is 6.", NUMBER)[1] == "6"
    assert extract("So the answer is 6? No wait, it is Tuesday. The answer is 18.", NUMBER)[1] == "18"  # a question


@pytest.mark.parametrize(
    ("text", "number"),
    [
        ("$1,234.50", "1234.5"),
        ("72%", "72"),
        ("3/4", "0.75"),
        ("-0.5", "-0.5"),
        ("51.0", "51"),
        ("18 eggs", "18"),
        ("1,234", "1234"),
        ("3 + 4 = 7", "7"),
        ("7 % 3", "1"),
        ("0.1 + 0.2", "0.3"),
        ("8.333333333333334", "8.33333333333"),
        ("12345678901234567890", "12345678901234567890"),
        ("5 (five)", "5"),
        ("", None),
        ("seventy-two", "72"),
        ("one hundred and five", "105"),
        ("1.8 billion", "1800000000"),
        ("12 or 14", None),
        ("10+John's age", None),
    ],
)
def test_normalize_number(text: str, number: str | None) -> None:
    assert normalize_number(text) == number


# ------------------------------------------------------------------------------------ safe eval
@pytest.mark.parametrize(
    ("expression", "value"),
    [("( 84.0 / 2.0 )", 42.0), ("7 // 2", 3), ("-3 ** 2", -9), ("2 ** -3", 0.125), ("-(4 - 6) * 1.5", 3.0)],
)
def test_safe_eval_does_arithmetic(expression: str, value: float) -> None:
    assert safe_eval(expression) == value


@pytest.mark.parametrize(
    "expression",
    [
        "__import__('os')",
        "__import__('os').system('true')",
        "x + 1",
        "(1).real",
        "[1, 2]",
        "1 if 1 else 2",
        "True + 1",
        "2j",
        "1 / 0",
        "(-8) ** 0.5",  # complex
        "2 ** 101",  # exponent above 100
        "10 ** 60 * 10 ** 60",  # beyond 1e100
        "1" + "0" * 150,
        "1 +" * 100 + "1",  # too long
        "lambda: 1",
    ],
)
def test_safe_eval_refuses(expression: str) -> None:
    assert safe_eval(expression) is None


def test_safe_eval_refuses_a_tower_of_powers_at_once() -> None:
    start = time.monotonic()
    assert safe_eval("9**9**9") is None
    assert safe_eval("2**2**2**2**2**2") is None
    assert time.monotonic() - start < 0.1


# ---------------------------------------------------------------------------------------- choices
@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("(c) wooded area", "wooded area"),
        ("c", "wooded area"),
        ("(C)", "wooded area"),
        ("C)", "wooded area"),
        ("wooded area", "wooded area"),
        ("Wooded Area.", "wooded area"),
        ("The answer is (c).", "wooded area"),
        ("The answer is C.", "wooded area"),
        ("The answer is: Train Station, since it is busy.", "train station"),
        ("So the answer is (c) train station.", None),  # letter and text name different choices: refused
        ("So the answer is (c) woded areas.", "wooded area"),  # a misspelt plural of the letter's choice
        ("So the answer is (c) the forest.", None),  # the letter's text is no choice and not its choice
        ("So the answer is (e)", "train station"),
        ("Beavers live near woods. Only wooded areas have the supplies.", "wooded area"),  # unambiguous mention
        ("The answer is a wooded area or a body of water.", None),  # two choices named
        ("So the answer is either (b) body of water or (c) wooded area.", None),
        ("The answer must be a place.", None),
        ("", None),
    ],
)
def test_choice_answers(text: str, answer: str | None) -> None:
    assert extract(text, CHOICE)[1] == answer


def test_palm_completions() -> None:
    rationale, answer = extract(PALM_BEAVER, CHOICE)
    assert answer == "wooded area"  # the invented next turn's "(a) air freshener" is cut off first
    assert rationale.endswith("only wooded areas have the supplies that beavers need.")
    assert extract(PALM_SOLDIER, SOLDIER)[1] is None
    assert extract(PALM_HEDGE, PEBBLE) == (PALM_HEDGE.split(" So the answer")[0], None)


def test_a_longer_choice_hides_the_shorter_one_it_contains() -> None:
    stores = Problem(id="s", question="q", answer_type="choice", choices=["store", "grocery store", "mall"])
    assert extract("You would find it at a grocery store.", stores)[1] == "grocery store"


# ----------------------------------------------------------------------------------- yes/no, text
@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("Apples grow on trees. The answer is yes.", "yes"),
        ("The answer is: No, since water is wet.", "no"),
        ("So the answer is **Yes**.", "yes"),
        ("A: True", "yes"),
        ("The answer is false.", "no"),
        ("Yes. Apples grow on trees.", "yes"),
        ("No, apples do not grow underground.", "no"),
        ("No one knows for sure.", None),
        ("It depends on the apple.", None),
    ],
)
def test_yes_no_answers(text: str, answer: str | None) -> None:
    assert extract(text, YES_NO)[1] == answer


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("It is in France. The answer is The Eiffel Tower!", "eiffel tower"),
        ("The answer is: Paris,   France.", "paris france"),
        ("The answer is **an apple**.", "apple"),
        ("I cannot say.", None),
    ],
)
def test_text_answers(text: str, answer: str | None) -> None:
    assert extract(text, TEXT)[1] == answer


def test_normalize_text_is_squad_style() -> None:
    assert normalize_text("  The  Eiffel-Tower, in PARIS! ") == "eiffeltower in paris"


# ---------------------------------------------------------------------------------------- pattern
def test_a_template_pattern_comes_first() -> None:
    text = "The answer is 5.\nRESULT: 7"
    assert extract(text, NUMBER, r"RESULT:\s*(\S+)") == ("The answer is 5.", "7")
    assert extract(text, NUMBER, r"NOPE: (\d+)")[1] == "5"  # no match: the built-in rules
    assert extract("Final: (d)", CHOICE, r"Final: (.*)")[1] == "pay debts"


@pytest.mark.parametrize("pattern", [r"RESULT: (\d+", r"RESULT: \d+"])
def test_a_bad_template_pattern_is_a_config_error(pattern: str) -> None:
    with pytest.raises(ConfigError, match="answer_pattern"):
        extract("RESULT: 7", NUMBER, pattern)


# --------------------------------------------------------------------------------------- matching
@pytest.mark.parametrize(
    ("answer", "gold", "problem", "match"),
    [
        ("18.0", "18", NUMBER, True),
        ("1234", "1,234", NUMBER, True),
        ("0.75", "3/4", NUMBER, True),
        ("0.33333", "0.333333333", NUMBER, True),
        ("0.3", "0.333333333", NUMBER, False),
        ("120006", "120,000", NUMBER, False),  # whole: absolute tolerance only
        ("18.001", "18", NUMBER, False),
        ("18", "18.001", NUMBER, False),  # symmetric
        ("7.00001", "7", NUMBER, True),
        ("17.999999999", "18", NUMBER, True),
        ("17", "18", NUMBER, False),
        (None, "18", NUMBER, False),
        ("18", None, NUMBER, False),
        ("Wooded Area", "wooded area", CHOICE, True),
        ("c", "wooded area", CHOICE, True),
        ("zoo", "wooded area", CHOICE, False),
        ("yes", "yes", YES_NO, True),
        ("no", "yes", YES_NO, False),
        ("Eiffel Tower", "the eiffel tower.", TEXT, True),
        ("tower", "the eiffel tower", TEXT, False),
    ],
)
def test_answers_match(answer: str | None, gold: str | None, problem: Problem, match: bool) -> None:
    assert answers_match(answer, gold, problem) is match


def test_tolerance_is_a_parameter() -> None:
    assert answers_match("0.3334", "0.3333", NUMBER, tolerance=1e-3)
    assert not answers_match("0.3334", "0.3333", NUMBER, tolerance=1e-5)


# ------------------------------------------------------------------------------- real teacher text
def _shared(path: str) -> Path:
    full = SHARED / path
    if not full.exists():
        pytest.skip(f"shared data not here: {full}")
    return full


def test_gpt3_gsm8k_verdicts_agree_with_is_correct() -> None:
    agree, total, disagreements = 0, 0, []
    for index, record in enumerate(read_jsonl(_shared("gsm8k/example_model_solutions.jsonl"))):
        problem = Problem(id=str(index), question=record["question"], answer_type="number")
        _, gold = extract(record["ground_truth"], problem)
        assert gold is not None
        for model, run in record.items():
            if not isinstance(run, dict):
                continue
            _, answer = extract(run["solution"], problem)
            verdict = answers_match(answer, gold, problem)
            total += 1
            agree += verdict == run["is_correct"]
            if verdict != run["is_correct"]:
                disagreements.append((index, model, gold, answer, run["is_correct"]))
    rate = agree / total
    print(f"\nextractor agreement with is_correct: {agree}/{total} = {rate:.4f}")
    for disagreement in disagreements[:3]:
        print("  disagreement (line, model, gold, extracted, is_correct):", disagreement)
    assert total == 4 * 1319
    assert rate >= 0.99


def test_palm_cqa_completions() -> None:
    questions = read_jsonl(_shared("cqa_palm/cqa_test.json"))
    completions = [text for i in (0, 1) for text in json.loads(_shared(f"cqa_palm/llm/test_CoT_{i}.json").read_text())]
    assert len(questions) == len(completions) == 1221
    extracted, correct, hedged, conflicted, unexplained = 0, 0, 0, 0, []
    for record, completion in zip(questions, completions, strict=True):
        problem = Problem(
            id=record["id"],
            question=record["question"],
            gold=record["answer"],
            answer_type="choice",
            choices=record["choices"],
        )
        text = completion.split("\n\nQ:")[0]
        rationale, answer = extract(text, problem)
        assert "So the answer is" not in rationale
        extracted += answer is not None
        correct += answers_match(answer, problem.gold, problem)
        if answer is None:
            statement = text.rsplit("So the answer is", 1)[-1]
            letters = set(re.findall(r"\(([a-e])\)", statement))
            if len(letters) >= 2:
                hedged += 1  # "either (b) lake or (d) pond": several answers are none
            elif len(letters) == 1 and problem.choices["abcde".index(letters.pop())].lower() not in statement.lower():
                conflicted += 1  # "(b) Farsi" where (b) is "dard": the letter and the text disagree
            else:
                unexplained.append(text[-120:])
    total = len(completions)
    print(
        f"\nPaLM CQA extraction rate: {extracted}/{total} = {extracted / total:.4f} ({hedged} hedged between "
        f"choices, {conflicted} letter/text conflicts give None); "
        f"PaLM accuracy: {correct}/{total} = {correct / total:.4f}"
    )
    assert unexplained == []
    assert (extracted + hedged + conflicted) / total == 1.0
    assert conflicted == 4  # all four are in the answer corpus: cqa-palm-test-340, -559, -647, -862
    assert extracted / total >= 0.97
    assert 0.70 <= correct / total <= 0.85  # the README: about a quarter of PaLM's answers are wrong


def test_bundled_palm_sample() -> None:
    questions = read_jsonl(ROOT / "data" / "cqa" / "test_sample.json")
    completions = json.loads((ROOT / "data" / "cqa" / "palm_test_sample.json").read_text())
    answers = []
    for record, completion in zip(questions, completions, strict=True):
        problem = Problem(id=record["id"], question=record["question"], answer_type="choice", choices=record["choices"])
        rationale, answer = extract(completion, problem)  # the invented "\n\nQ:" turn is cut inside
        assert rationale.startswith("The answer ") and "So the answer" not in rationale and "\n" not in rationale
        answers.append(answer)
    golds = [record["answer"] for record in questions]
    assert answers[0] == golds[0] == "wooded area"
    assert all(answer in record["choices"] for answer, record in zip(answers, questions, strict=True))
    assert (
        sum(a == g for a, g in zip(answers, golds, strict=True)) == 14
    )  # PaLM says "show" and "pantry" for two of them


@pytest.mark.parametrize(
    ("text", "answer"),
    [
        ("She had 10, gave away 4, so 6 is the final answer.", "6"),  # the clause's own number
        ("With 5 people, 7 is the answer.", "7"),
        ("Step 1 gives \\boxed{9} eggs.\n#### 18", "18"),  # a closing '####' settles it
        ("Step 1 answer: 9\nStep 2 answer: 18\nFinal answer: 18", "18"),  # answers to steps are no claims
        ("The answer to the first part is 9 eggs. Then 9 * 2 = 18. The answer is 18.", "18"),
        ("If she sold 10, the answer would be 20. She sold 9, so the answer is 18.", "18"),  # a condition
        ("A: Janet has 16 eggs per day.\n9 * 2 = 18.\nThe answer is 18.", "18"),  # a long 'A:' line is rationale
        ("The answer will be the number of eggs times 2. 9 * 2 = 18. The answer is 18.", "18"),  # a description
        ("Let me restate it.\n\nProblem: Janet has 16 eggs.\n\nSolution: 16 - 3 = 13.\n\nThe answer is 13.", "13"),
        ("I think the answer is 16. Let me recompute: 9*2=18. So the answer is 18.", "18"),
        ("The answer is " + " " * 3000 + "x", None),  # long runs of blanks read in linear time
    ],
)
def test_intermediate_and_restated_answers(text: str, answer: str | None) -> None:
    assert extract(text, NUMBER)[1] == answer
