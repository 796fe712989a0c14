"""`generate --contrastive`: SCOTT rationales and counterfactuals land in the store like any sample."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import invoke, invoke_ok, read_jsonl

from cotfactory.perturb import perturbed_answer
from cotfactory.problems import load_problems
from cotfactory.records import Problem

ROOT = Path(__file__).resolve().parent.parent
CQA = ROOT / "data" / "cqa" / "test_sample.json"


def test_contrastive_and_counterfactual_samples(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    args = [
        "generate",
        "--input",
        str(CQA),
        "--format",
        "cqa",
        "--limit",
        "3",
        "--teacher",
        "hf",
        "--model",
        str(tiny_llama),
        "--template",
        "scott-rationale",
        "--contrastive",
        "--counterfactual",
        "--temperatures",
        "0",
        "--seeds",
        "1",
        "--max-tokens",
        "12",
        "--out",
        str(out),
    ]
    output = invoke_ok(*args)
    rows = read_jsonl(out / "samples.jsonl")
    assert [r["mode"] for r in rows] == ["contrastive", "counterfactual"] * 3
    problems = load_problems("cqa", CQA, limit=3)
    for problem, (factual, counter) in zip(problems, zip(rows[::2], rows[1::2], strict=True), strict=True):
        wrong = perturbed_answer(problem, "auto", 1)
        assert factual["answer"] == problem.gold and counter["answer"] == wrong != problem.gold
        assert json.loads(factual["metadata"]) == {} and factual["key"] != counter["key"]
    code, output = invoke(*args)  # resumable like any run
    assert code == 0 and "new this run                 │ 0" in output
    # the random model's rationales are truncated: skip well-formed to see the correct filter's verdicts
    output = invoke_ok("filter", str(out), "--no-well-formed", "--correct")
    kept = read_jsonl(out / "filtered.jsonl")
    assert len(kept) == 6  # counterfactuals are judged against the answer they were written for
    assert [r["verdicts"]["correct"]["reason"] for r in kept] == ["kept"] * 6


def test_perturbations() -> None:
    number = Problem(id="n", question="q", gold="72", answer_type="number")
    assert perturbed_answer(number, "auto", 1) == perturbed_answer(number, "number", 1) != "72"
    assert {perturbed_answer(number, "auto", seed) for seed in range(20)} - {"72"} == {
        perturbed_answer(number, "auto", seed) for seed in range(20)
    }
    yes = Problem(id="y", question="q", gold="yes", answer_type="yes_no")
    assert perturbed_answer(yes, "auto", 3) == "no"
    assert perturbed_answer(yes, "empty", 3) == ""


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--teacher", "openai", "--model", "m", "--template", "scott-rationale"], "teacher 'openai' cannot"),
        (["--template", "zero-shot-cot"], "does not state the answer first"),
        (["--no-contrastive", "--template", "scott-rationale"], "use it with --contrastive"),
        (["--no-contrastive", "--counterfactual"], "counterfactual needs contrastive"),
    ],
)
def test_contrastive_misuse_is_exit_2(tmp_path: Path, extra: list[str], message: str) -> None:
    code, output = invoke(
        "generate", "--input", str(CQA), "--format", "cqa", "--contrastive", *extra, "--out", str(tmp_path / "run")
    )
    assert code == 2 and message in output and not (tmp_path / "run").exists(), output


@pytest.mark.slow
def test_contrastive_rationales_support_the_gold_answer_better(smollm2: str, tmp_path: Path) -> None:
    """On real CommonsenseQA problems, SmolLM2's contrastive rationales raise log p(gold | q, r) − log p(gold | q)
    more than plain (lambda = 0) rationales of the same answer-first prompts."""
    from cotfactory.config.filter import FilterConfig
    from cotfactory.scorers.answer_gain import AnswerGainScorer
    from cotfactory.scorers.base import ScoreItem
    from cotfactory.store import Store

    gains = {}
    for name, weight in (("plain", "0"), ("contrastive", "0.5")):
        out = tmp_path / name
        invoke_ok(
            "generate",
            "--input",
            str(CQA),
            "--format",
            "cqa",
            "--limit",
            "8",
            "--teacher",
            "hf",
            "--model",
            smollm2,
            "--template",
            "scott-rationale-cqa",
            "--contrastive",
            "--contrast-weight",
            weight,
            "--temperatures",
            "0",
            "--seeds",
            "1",
            "--max-tokens",
            "40",
            "--batch-size",
            "8",
            "--out",
            str(out),
        )
        with Store.in_run(out) as store:
            problems = store.problems()
            samples = list(store.samples())
        scorer = AnswerGainScorer(FilterConfig(run_dir="-", reward="answer-gain", scorer_model=smollm2))
        scores = scorer.score(
            [
                ScoreItem(
                    problems[s.request.problem_id],
                    s.model_copy(update={"rationale": s.text, "answer": problems[s.request.problem_id].gold}),
                )
                for s in samples
            ]
        )
        gains[name] = [score for score, _ in scores]
    plain, contrastive = (sum(gains[k]) / len(gains[k]) for k in ("plain", "contrastive"))
    print(
        f"mean answer-gain for gold over 8 CQA problems: plain {plain:.3f}, contrastive {contrastive:.3f}; "
        f"per problem plain {[round(g, 2) for g in gains['plain']]} contrastive "
        f"{[round(g, 2) for g in gains['contrastive']]}"
    )
    assert contrastive > plain
