"""Filters: exact verdicts on small fixtures, and `cotfactory filter` on real runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import invoke, invoke_ok, make_sample, read_jsonl, write_jsonl

from cotfactory.filters.base import ProblemGroup
from cotfactory.filters.consistency import Consistency
from cotfactory.filters.correct import Correct
from cotfactory.filters.dedup import Dedup
from cotfactory.filters.reward import Reward
from cotfactory.filters.well_formed import WellFormed
from cotfactory.records import Problem, Sample
from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "cqa_palm"
MATH = Problem(id="m", question="3 + 4?", gold="7", answer_type="number")
NO_GOLD = Problem(id="n", question="3 + 4?", answer_type="number")


def _sample(index: int, answer: str | None, text: str | None = None, **fields: object) -> Sample:
    body = text if text is not None else f"Step {index}: 3 + 4. The answer is {answer}."
    return make_sample(answer, body, problem_id=MATH.id, temperature=0.5, seed=index, max_tokens=32, **fields)


def _group(problem: Problem, samples: list[Sample], scores: dict | None = None) -> ProblemGroup:
    return ProblemGroup(problem, samples, list(samples), scores or {}, label=problem.gold)


def _decide(stage, group: ProblemGroup) -> list[tuple[bool, str]]:
    return [(v.keep, v.reason) for v in stage.apply(group)]


def test_well_formed_reasons() -> None:
    samples = [
        _sample(0, "7"),
        _sample(1, None, error="HTTP 400: bad", finish_reason="error"),
        _sample(2, "7", text="   "),
        _sample(3, "7", finish_reason="length"),
        _sample(4, None),
    ]
    assert _decide(WellFormed(), _group(MATH, samples)) == [
        (True, "kept"),
        (False, "failed"),
        (False, "empty"),
        (False, "truncated"),
        (False, "no_answer"),
    ]


def test_correct_with_tolerance_and_pseudo_label() -> None:
    samples = [_sample(0, "7"), _sample(1, "7.00001"), _sample(2, "8")]
    assert _decide(Correct(), _group(MATH, samples)) == [(True, "kept"), (True, "kept"), (False, "wrong_answer")]
    no_gold = _group(NO_GOLD, samples)
    assert _decide(Correct(), no_gold) == [(False, "no_gold")] * 3
    no_gold.label = "8"  # what consistency sets as pseudo-label
    assert _decide(Correct(), no_gold) == [(False, "wrong_answer"), (False, "wrong_answer"), (True, "kept")]


def test_consistency_majority_agreement_and_threshold() -> None:
    samples = [_sample(0, "7"), _sample(1, "8"), _sample(2, "7"), _sample(3, None)]
    group = _group(MATH, samples)
    verdicts = Consistency(0.6).apply(group)
    assert [(v.keep, v.reason) for v in verdicts] == [
        (True, "kept"),
        (False, "minority"),
        (True, "kept"),
        (False, "minority"),
    ]
    assert verdicts[0].details == {
        "majority": "7",
        "agreement": 0.6667,
        "voters": 3,
        "tie": False,
        "pseudo_label": False,
    }
    assert _decide(Consistency(0.7), _group(MATH, samples)) == [(False, "low_agreement")] * 4


def test_consistency_ties_break_toward_the_first_in_plan_order() -> None:
    samples = [_sample(0, "8"), _sample(1, "7"), _sample(2, "7"), _sample(3, "8")]
    verdicts = Consistency(0.5).apply(_group(MATH, samples))
    assert verdicts[0].details["tie"] is True and verdicts[0].details["majority"] == "8"
    assert [v.keep for v in verdicts] == [True, False, False, True]


def test_consistency_pseudo_label_and_weighted_votes() -> None:
    samples = [_sample(0, "7"), _sample(1, "8"), _sample(2, "7")]
    group = _group(NO_GOLD, samples)
    Consistency(0.5).apply(group)
    assert group.label == "7" and group.pseudo_label
    weights = {samples[0].key: 0.1, samples[1].key: 0.9, samples[2].key: 0.1}
    weighted = _group(NO_GOLD, samples, weights)
    verdicts = Consistency(0.5, weighted=True).apply(weighted)
    assert weighted.label == "8" and [v.keep for v in verdicts] == [False, True, False]
    assert verdicts[1].details["agreement"] == pytest.approx(0.8182, abs=1e-4)


def test_counterfactuals_neither_vote_nor_get_judged_by_consistency() -> None:
    samples = [_sample(0, "7"), _sample(1, "7")]
    counter = _sample(2, "8")
    counter = counter.model_copy(
        update={
            "request": counter.request.model_copy(update={"mode": "counterfactual", "decoding": {"target_answer": "8"}})
        }
    )
    verdicts = Consistency(0.9).apply(_group(MATH, [*samples, counter]))
    assert [(v.keep, v.reason) for v in verdicts] == [(True, "kept")] * 3
    assert verdicts[0].details["voters"] == 2 and verdicts[2].details == {"exempt": "counterfactual"}
    assert _decide(Correct(), _group(MATH, [counter])) == [(True, "kept")]


def test_reward_threshold_top_k_and_unscored() -> None:
    samples = [_sample(i, "7") for i in range(4)]
    scores = {samples[0].key: 0.2, samples[1].key: 0.9, samples[2].key: None, samples[3].key: 0.5}
    assert _decide(Reward(threshold=0.4), _group(MATH, samples, scores)) == [
        (False, "below_threshold"),
        (True, "kept"),
        (False, "unscored"),
        (True, "kept"),
    ]
    assert _decide(Reward(top_k=1), _group(MATH, samples, scores)) == [
        (False, "below_top_k"),
        (True, "kept"),
        (False, "unscored"),
        (False, "below_top_k"),
    ]


def test_dedup_groups_near_duplicates_and_keeps_the_best_scored() -> None:
    base = "Janet has 16 eggs. She eats 3 and bakes with 4, so 16 - 3 - 4 = 9 are left. 9 * 2 = 18."
    samples = [
        _sample(0, "18", text=base),
        _sample(1, "18", text=base.replace("Janet", "janet") + "  "),  # same after normalisation
        _sample(2, "18", text="Eggs left: 16 - 7 = 9. Money: 9 times 2 dollars is 18 dollars in total."),
        _sample(3, "18", text=base.replace("are left", "remain")),  # one word changed: near duplicate
    ]
    scores = {samples[0].key: 0.1, samples[1].key: 0.3, samples[2].key: 0.2, samples[3].key: 0.05}
    verdicts = Dedup(0.6).apply(_group(MATH, samples, scores))  # the one-word change has Jaccard 0.68
    assert [(v.keep, v.reason) for v in verdicts] == [
        (False, "duplicate"),
        (True, "kept"),
        (True, "kept"),
        (False, "duplicate"),
    ]
    assert verdicts[0].details["duplicate_of"] == samples[1].key == verdicts[3].details["duplicate_of"]


# --- the command on real runs --------------------------------------------------------------------------


def _palm_run(tmp_path: Path, input_file: Path, replay: Path) -> Path:
    out = tmp_path / "palm"
    invoke_ok(
        "generate",
        "--input",
        str(input_file),
        "--format",
        "cqa",
        "--teacher",
        "replay",
        "--replay",
        str(replay),
        "--model",
        "palm-540b",
        "--template",
        "few-shot-cot-cqa",
        "--out",
        str(out),
    )
    return out


def test_correct_filter_on_bundled_palm_rationales(tmp_path: Path) -> None:
    run = _palm_run(
        tmp_path, ROOT / "data" / "cqa" / "test_sample.json", ROOT / "data" / "cqa" / "palm_test_sample.json"
    )
    invoke_ok("filter", str(run), "--correct", "--dedup", "0.95")
    kept = read_jsonl(run / "filtered.jsonl")
    samples = read_jsonl(run / "samples.jsonl")
    right = [s for s in samples if s["answer"] == s["gold"]]
    assert len(kept) == len(right) and all(k["answer"] == k["gold"] == k["label"] for k in kept)
    assert kept[0]["verdicts"]["correct"] == {"keep": True, "reason": "kept", "score": None}
    funnel = json.loads((run / "funnel.json").read_text())["stages"]
    assert [s["stage"] for s in funnel] == ["input", "well_formed", "correct", "dedup"]
    assert funnel[0]["samples_out"] == 16 and funnel[-1]["samples_out"] == len(kept)
    assert funnel[2]["dropped"] == {"wrong_answer": funnel[2]["samples_in"] - funnel[2]["samples_out"]}
    with Store.in_run(run) as store:
        verdicts = store.verdicts()
    assert sum(1 for v in verdicts if v.filter == "correct" and not v.keep) == funnel[2]["dropped"]["wrong_answer"]
    import datasets

    assert datasets.load_from_disk(str(run / "filtered")).num_rows == len(kept)


def test_correct_filter_on_all_palm_cqa_test_rationales(tmp_path: Path) -> None:
    if not SHARED.exists():
        pytest.skip("../shared/data is not here")
    run = _palm_run(tmp_path, SHARED / "cqa_test.json", SHARED / "llm")
    invoke_ok("filter", str(run), "--correct")
    kept = read_jsonl(run / "filtered.jsonl")
    precision = sum(k["answer"] == k["gold"] for k in kept) / len(kept)
    coverage = len(kept) / 1221
    print(f"PaLM CQA test: kept {len(kept)}/1221 = {coverage:.3f}, precision against gold {precision:.3f}")
    assert precision == 1.0 and 0.70 < coverage < 0.80


def test_new_threshold_does_not_rescore(tmp_path: Path, tiny_llama: Path) -> None:
    run = _palm_run(
        tmp_path, ROOT / "data" / "cqa" / "test_sample.json", ROOT / "data" / "cqa" / "palm_test_sample.json"
    )
    output = invoke_ok(
        "filter",
        str(run),
        "--reward",
        "answer-gain",
        "--scorer-model",
        str(tiny_llama),
        "--top-k",
        "1",
        "--reward-batch-size",
        "4",
    )
    assert "scored 16 samples" in output
    code, output = invoke(
        "filter", str(run), "--reward", "answer-gain", "--scorer-model", str(tiny_llama), "--reward-threshold", "-1000"
    )
    assert code == 0 and "scored" not in output
    kept = read_jsonl(run / "filtered.jsonl")
    assert len(kept) == 16 and all(isinstance(k["reward"], float) for k in kept)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--consistency", "1.5"], "field 'consistency'"),
        (["--top-k", "2"], "need reward"),
        (["--reward", "answer-gain", "--top-k", "1", "--reward-threshold", "0"], "not both"),
        (["--reward", "/no/such/reward-model"], "/no/such/reward-model"),
    ],
)
def test_bad_flags_exit_2_and_write_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    run = _palm_run(
        tmp_path, ROOT / "data" / "cqa" / "test_sample.json", ROOT / "data" / "cqa" / "palm_test_sample.json"
    )
    before = sorted(p.name for p in run.iterdir())
    code, output = invoke("filter", str(run), *args)
    assert code == 2 and output.startswith("error: ") and message in output and output.count("\n") == 1, output
    assert sorted(p.name for p in run.iterdir()) == before


def test_run_dir_without_samples(tmp_path: Path) -> None:
    code, output = invoke("filter", str(tmp_path), "--correct")
    assert code == 2 and "not a run directory" in output
    Store.in_run(tmp_path).close()
    (tmp_path / "samples.jsonl").write_text("")
    code, output = invoke("filter", str(tmp_path), "--correct")
    assert code == 2 and "no samples to filter" in output


def test_pseudo_labels_reach_the_correct_filter(tmp_path: Path) -> None:
    """`--correct --consistency` on problems without gold: correct runs first in the chain, and checks
    samples against the majority that consistency establishes before the chain (it used to drop every
    sample as no_gold)."""
    data = write_jsonl(tmp_path / "q.jsonl", ({"id": f"q{i}", "question": f"{i} + 3?"} for i in range(2)))
    replies = {"q0": ["3", "3", "4"], "q1": ["4", "5", "4"]}  # majorities 3 and 4
    batch = tmp_path / "batch.jsonl"
    lines = []
    for pid, answers in replies.items():
        choices = [
            {"index": k, "message": {"role": "assistant", "content": f"So the answer is {a}."}, "finish_reason": "stop"}
            for k, a in enumerate(answers)
        ]
        lines.append({"custom_id": pid, "response": {"status_code": 200, "body": {"choices": choices}}})
    write_jsonl(batch, lines)
    run = tmp_path / "run"
    generate = ["generate", "--input", str(data), "--answer-type", "number", "--teacher", "replay"]
    invoke_ok(*generate, "--replay", str(batch), "--samples-per-setting", "3", "--out", str(run))
    invoke_ok("filter", str(run), "--correct", "--consistency", "0.5")
    kept = read_jsonl(run / "filtered.jsonl")
    assert sorted((row["problem_id"], row["answer"]) for row in kept) == [
        ("q0", "3"),
        ("q0", "3"),
        ("q1", "4"),
        ("q1", "4"),
    ]
    assert all(row["pseudo_label"] and row["label"] == row["answer"] for row in kept)
