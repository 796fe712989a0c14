"""Counterfactual arithmetic problems (DISCO, `cotfactory augment`): every kept problem's gold is the
original equation recomputed on the new numbers (checked here independently, from the changed text);
problems whose numbers cannot be traced are dropped with their reason counted; the output loads and
generates like any problem file, carrying its origin."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from helpers import invoke, invoke_ok, write_jsonl

from cotfactory.answers import safe_eval
from cotfactory.counterfactual import make_counterfactuals
from cotfactory.problems import load_problems
from cotfactory.records import Problem

ROOT = Path(__file__).resolve().parent.parent
SVAMP = ROOT / "data" / "svamp" / "sample.json"


def test_svamp_counterfactuals_recompute_the_equation() -> None:
    problems = {p.id: p for p in load_problems("svamp", SVAMP)}
    made = make_counterfactuals(list(problems.values()), 3, seed=1)
    assert len(made.problems) >= 2 * len(problems)
    for new in made.problems:
        old = problems[new.metadata["origin"]]
        changed = new.metadata["changed"]
        equation = re.sub(  # one pass: the equation's operands are written "76.0"
            r"\d+(?:\.\d+)?",
            lambda m, changed=changed: changed.get(f"{float(m.group()):g}", m.group()),
            old.metadata["equation"],
        )
        assert float(new.gold) == pytest.approx(safe_eval(equation))
        assert new.gold != old.gold and float(new.gold) > 0
        for before, after in changed.items():  # each changed number is stated in the new text, in its place
            assert re.search(rf"(?<![\d.]){re.escape(after)}(?![\d.])", new.question)
            assert not re.search(rf"(?<![\d.]){re.escape(before)}(?![\d.])", new.question) or before in changed.values()
    again = make_counterfactuals(list(problems.values()), 3, seed=1)
    assert [p.question for p in again.problems] == [p.question for p in made.problems]  # seeded


def test_gsm8k_counterfactuals_follow_the_annotation_chain() -> None:
    problem = Problem(
        id="duck",
        question="Janet's ducks lay 16 eggs per day. She eats three for breakfast and bakes with four. "
        "She sells the rest for $2 per egg. How much does she make every day?",
        gold="18",
        answer_type="number",
        metadata={"solution": "16 - 3 - 4 = <<16-3-4=9>>9 eggs.\n9 * 2 = $<<9*2=18>>18.\n#### 18"},
    )
    [new] = make_counterfactuals([problem], 1, seed=0).problems
    eggs, price = int(new.metadata["changed"]["16"]), int(new.metadata["changed"]["2"])
    assert f"lay {eggs} eggs" in new.question and f"${price} per egg" in new.question
    assert "three" in new.question and "four" in new.question  # number words are constants of the chain
    assert int(new.gold) == (eggs - 3 - 4) * price


def test_untraceable_problems_are_dropped_and_counted() -> None:
    base = dict(answer_type="number", gold="4")
    problems = [
        Problem(id="none", question="How many legs has a dog?", **base),  # no equation, no annotations
        Problem(id="twice", question="2 cats and 2 dogs: how many?", metadata={"equation": "( 2.0 + 2.0 )"}, **base),
        Problem(id="wrong", question="3 and 2?", metadata={"equation": "( 3.0 + 2.0 )"}, **base),
        Problem(id="ambiguous", question="A robe takes 2 bolts and half that much more.",
                metadata={"solution": "2/2=<<2/2=1>>1\n2+1=<<2+1=3>>3\n#### 3"}, answer_type="number", gold="3"),
    ]  # fmt: skip
    made = make_counterfactuals(problems, 2)
    assert made.problems == []
    assert made.dropped == {
        "no equation or calculator annotations to recompute the gold from": 1,
        "no number of the equation appears exactly once in the text": 1,
        "the equation does not give the gold answer": 1,
        "a number of the text is used twice (or also as a result): its role is ambiguous": 1,
    }


def test_augment_cli_writes_problems_that_generate_reads(tmp_path: Path) -> None:
    out = tmp_path / "cf.jsonl"
    output = invoke_ok("augment", str(SVAMP), "--format", "svamp", "--counterfactual", "2", "--out", str(out))
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert f"augment: {len(rows)} counterfactual problems" in output and rows
    loaded = load_problems("jsonl", out, answer_type="number")
    assert [p.id for p in loaded] == [row["id"] for row in rows]
    assert all(p.metadata["origin"] and p.id.startswith(p.metadata["origin"] + "-cf") for p in loaded)
    code, output = invoke("augment", str(tmp_path / "missing.json"), "--out", str(out))
    assert code == 2 and "missing.json" in output
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"id": "a", "question": "q", "answer": "1", "metadata": "x"}])
    with pytest.raises(Exception, match="bad.jsonl:1: field 'metadata' must be an object"):
        load_problems("jsonl", bad)
