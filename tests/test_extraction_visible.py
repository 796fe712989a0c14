"""Extraction failures are visible (the funnel shows how dropped texts end; `filter --explain N`
prints them), and a template whose own exemplars the extractor cannot read is refused at load."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import invoke, invoke_ok, write_jsonl

ROOT = Path(__file__).resolve().parent.parent
REPLIES = {  # problem id → the recorded reply (an OpenAI Batch API output line each)
    "p0": "Step one. Step two. The answer is 7.",  # right
    "p1": "Two plus two is four, plus three more makes seven. The answer is 9.",  # wrong
    "p2": "I would need to think about this problem much longer before I could say anything about it at all, sorry",
}


def _run(tmp_path: Path) -> Path:
    problems = write_jsonl(
        tmp_path / "q.jsonl", [{"id": pid, "question": f"{pid}: 3 + 4?", "answer": "7"} for pid in REPLIES]
    )
    replies = [
        {"custom_id": pid, "response": {"body": {"choices": [{"message": {"content": text}}]}}}
        for pid, text in REPLIES.items()
    ]
    replay = write_jsonl(tmp_path / "replies.jsonl", replies)
    run = tmp_path / "run"
    args = ["--teacher", "replay", "--replay", str(replay), "--temperatures", "0"]
    invoke_ok("generate", "--input", str(problems), "--answer-type", "number", "--out", str(run), *args)
    return run


def test_the_funnel_keeps_how_dropped_texts_end_and_explain_prints_them(tmp_path: Path) -> None:
    run = _run(tmp_path)
    output = invoke_ok("filter", str(run), "--correct", "--explain", "1")
    assert "well_formed: no_answer — how the texts end:" in output
    assert "about it at all, sorry" in output and "→ read None" in output
    assert "correct: wrong_answer — how the texts end:" in output and "read '9', label '7'" in output
    stages = {stage["stage"]: stage for stage in json.loads((run / "funnel.json").read_text())["stages"]}
    [no_answer] = stages["well_formed"]["examples"]["no_answer"]
    assert no_answer["answer"] is None and no_answer["ending"].endswith("about it at all, sorry")
    assert len(no_answer["ending"]) <= 121  # the last 120 characters, with a leading "…"
    [wrong] = stages["correct"]["examples"]["wrong_answer"]
    assert (wrong["answer"], wrong["label"]) == ("9", "7") and wrong["ending"].endswith("The answer is 9.")
    quiet = invoke_ok("filter", str(run), "--correct")  # without --explain the table alone
    assert "how the texts end" not in quiet


def test_a_template_whose_exemplars_do_not_extract_is_refused_before_any_request(tmp_path: Path) -> None:
    template = (ROOT / "prompts" / "few-shot-cot-gsm8k.yaml").read_text()
    template = template.replace("The answer is {{ ex.answer }}.", "Result => {{ ex.answer }}")
    template = template.replace("../data/", f"{ROOT / 'data'}/")
    path = tmp_path / "arrows.yaml"
    path.write_text(template)
    code, output = invoke("templates", "show", str(path), "--problem", '{"question": "1+1?", "answer_type": "number"}')
    assert code == 2 and "exemplar 1 demonstrates the answer '15'" in output
    assert "reads no final-answer statement" in output and len(output.strip().splitlines()) == 1
    out = tmp_path / "run"
    code, output = invoke(
        "generate",
        "--input",
        str(ROOT / "data" / "gsm8k" / "train_sample.jsonl"),
        "--format",
        "gsm8k",
        "--template",
        str(path),
        "--out",
        str(out),
        "--limit",
        "1",
    )
    assert code == 2 and "exemplar 1" in output and not out.exists()
    # the same template with an answer_pattern that reads its format loads
    path.write_text(template.replace("exemplars:", 'answer_pattern: "Result => (\\\\S+)"\nexemplars:'))
    code, output = invoke("templates", "show", str(path), "--problem", '{"question": "1+1?", "answer_type": "number"}')
    assert code == 0, output
