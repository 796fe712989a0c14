"""Recorded completions (PaLM-540B's DSS rationales, an OpenAI Batch API output) as a teacher."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import invoke, invoke_ok, read_jsonl, write_jsonl

from cotfactory.problems import load_problems

ROOT = Path(__file__).resolve().parent.parent
CQA = ROOT / "data" / "cqa" / "test_sample.json"
PALM = ROOT / "data" / "cqa" / "palm_test_sample.json"
SHARED_LLM = ROOT.parent / "shared" / "data" / "cqa_palm" / "llm"


def test_palm_rationales_flow_into_the_store(tmp_path: Path) -> None:
    invoke_ok(
        "generate",
        "--input",
        str(CQA),
        "--format",
        "cqa",
        "--teacher",
        "replay",
        "--replay",
        str(PALM),
        "--model",
        "palm-540b",
        "--template",
        "few-shot-cot-cqa",
        "--out",
        str(tmp_path / "run"),
    )
    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert len(rows) == 16 and all(r["model"] == "palm-540b" and r["teacher"] == "replay" for r in rows)
    first = rows[0]
    assert first["text"].startswith("The answer must be the place where beavers get their supplies.")
    assert "\n\nQ:" not in first["text"]  # PaLM's invented next turn is cut off
    assert first["answer"] == "wooded area" == first["gold"]
    correct = sum(r["answer"] == r["gold"] for r in rows)
    assert 8 <= correct < 16  # PaLM is wrong about a quarter of the time: the filters have work to do


def test_palm_esnli_rationales_cut_at_the_invented_premise(tmp_path: Path) -> None:
    esnli = ROOT / "data" / "esnli"
    invoke_ok(
        "generate",
        *("--input", str(esnli / "train_sample.json"), "--format", "esnli", "--limit", "40"),
        *("--teacher", "replay", "--replay", str(esnli / "palm_train_sample.json"), "--model", "palm-540b"),
        *("--template", "few-shot-cot-esnli", "--out", str(tmp_path / "run")),
    )
    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert len(rows) == 40
    second = rows[1]  # pair 1: "This church choir sings …" / "The church is filled with song."
    assert second["text"] == "The church choir is singing joyous songs from the book.\nAnswer: entailment"
    assert second["answer"] == "entailment" == second["gold"]
    assert not any("Premise:" in r["text"] for r in rows)  # PaLM's invented next pair is cut off
    assert all(r["answer"] in ("entailment", "neutral", "contradiction") for r in rows)
    assert 24 <= sum(r["answer"] == r["gold"] for r in rows) < 40  # PaLM is right on ~74 % of them


def test_palm_folder_with_shards_when_the_shared_data_is_here(tmp_path: Path) -> None:
    if not SHARED_LLM.exists():
        return
    test_file = ROOT.parent / "shared" / "data" / "cqa_palm" / "cqa_test.json"
    invoke_ok(
        "generate",
        "--input",
        str(test_file),
        "--format",
        "cqa",
        "--shard",
        "0/100",
        "--teacher",
        "replay",
        "--replay",
        str(SHARED_LLM),
        "--model",
        "palm-540b",
        "--out",
        str(tmp_path / "run"),
    )
    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    problems = load_problems("cqa", test_file, shard=(0, 100))
    assert len(rows) == len(problems) == 13
    # example 1200 lives in shard file test_CoT_1.json, element 200
    last = json.loads((SHARED_LLM / "test_CoT_1.json").read_text())[200].split("\n\nQ:")[0].strip()
    assert rows[-1]["problem_id"] == problems[-1].id and problems[-1].metadata["index"] == 1200
    assert rows[-1]["text"] == last


def test_batch_api_output_by_problem_id(tmp_path: Path) -> None:
    data = write_jsonl(
        tmp_path / "q.jsonl", ({"id": f"q{i}", "question": f"{i} + 1?", "answer": str(i + 1)} for i in range(3))
    )
    batch = tmp_path / "batch_output.jsonl"
    lines = []
    for i in range(2):  # q2 has no recorded answer
        body = {
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": f"{i} + 1 = {i + 1}. The answer is {i + 1}."},
                    "finish_reason": "stop",
                }
            ]
        }
        lines.append(
            {
                "id": f"batch_req_{i}",
                "custom_id": f"q{i}",
                "response": {"status_code": 200, "body": body},
                "error": None,
            }
        )
    write_jsonl(batch, lines)
    code, output = invoke(
        "generate",
        "--input",
        str(data),
        "--answer-type",
        "number",
        "--teacher",
        "replay",
        "--replay",
        str(batch),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 1 and "no recorded completion for problem 'q2'" in output
    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert [r["answer"] for r in rows] == ["1", "2", None]


def test_bad_replay_source_is_exit_2(tmp_path: Path) -> None:
    code, output = invoke(
        "generate",
        "--input",
        str(CQA),
        "--format",
        "cqa",
        "--teacher",
        "replay",
        "--replay",
        str(tmp_path / "nowhere"),
        "--out",
        str(tmp_path / "run"),
    )
    assert code == 2 and "replay:" in output and not (tmp_path / "run").exists()
