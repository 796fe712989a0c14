"""Preflight before training (cuts that lose answers are refused, others reported) and lineage keys that
join a student's failure back to the teacher sample it learned from, end to end through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import invoke, invoke_ok, read_jsonl

from cotfactory.lineage import trace_run
from cotfactory.students.methods import TrainingExample
from cotfactory.students.preflight import measure

ROOT = Path(__file__).resolve().parent.parent
GSM8K = ROOT / "data" / "gsm8k" / "train_sample.jsonl"
ESNLI = ROOT / "data" / "esnli"


def test_measure_counts_cuts_and_lost_answers() -> None:
    examples = [
        TrainingExample("cot", "q" * 10, "r" * 30 + " --> 7"),  # target 36 + EOS: cut at 20, answer lost
        TrainingExample("rationale", "q" * 10, "r" * 30),  # cut, but a rationale has no answer to lose
        TrainingExample("label", "q" * 40, "7"),  # source cut at 20 (its front), answer kept
        TrainingExample("label", "q", "7"),
    ]
    # token counts before the cut, one per byte with EOS (as a byte-level seq2seq student encodes them)
    uncut = [(11, 37), (11, 31), (41, 2), (2, 2)]
    features = [
        {"source_tokens": s, "written_tokens": w, "length": length}
        for (s, w), length in zip(uncut, [60, 60, 60, 3], strict=True)
    ]
    report = measure(examples, features, max_source=20, max_target=20, context_limit=50, answer_at_end={"cot", "label"})
    assert (report.examples, report.source_cut, report.target_cut) == (4, 1, 2)
    assert dict(report.answer_lost) == {"cot": 1}
    assert (report.longest_source, report.longest_target, report.over_context) == (41, 37, 3)


def test_train_student_refuses_when_answers_would_be_cut(tmp_path: Path) -> None:
    out = tmp_path / "student"
    code, output = invoke(
        "train-student",
        *(str(GSM8K), "--format", "gsm8k", "--method", "finetune-cot", "--student", "scratch:llama-tiny"),
        *("--out", str(out), "--max-target-length", "64", "--max-steps", "1", "--limit", "8"),
    )
    lines = [line for line in output.splitlines() if line.strip()]
    assert code == 2, output
    assert len(lines) == 1 and "max_target_length 64" in lines[0] and "8/8 examples" in lines[0], output
    assert "would lose their answer (cot 8" in lines[0]
    assert not out.exists()  # nothing written


def test_train_student_reports_cuts_under_the_threshold(tmp_path: Path) -> None:
    out = tmp_path / "student"
    output = invoke_ok(
        "train-student",
        *(str(GSM8K), "--format", "gsm8k", "--method", "finetune-cot", "--student", "scratch:llama-tiny"),
        *("--out", str(out), "--max-target-length", "64", "--max-answer-cut", "1.0", "--max-steps", "1"),
        *("--limit", "4", "--batch-size", "2", "--lora-r", "0"),
    )
    assert "preflight: 4 examples" in output and "losing their answer: cot 4" in output


def test_lineage_keys_join_teacher_sample_to_student_prediction(tmp_path: Path) -> None:
    """generate (replay) → filter → train → eval through the CLI; every training example names its
    teacher sample, and each wrong held-out answer traces to real samples and their verdicts."""
    run = tmp_path / "run"
    output = invoke_ok(
        *("generate", "--format", "esnli", "--input", str(ESNLI / "train_sample.json"), "--limit", "24"),
        *("--teacher", "replay", "--replay", str(ESNLI / "palm_train_sample.json"), "--model", "palm-540b"),
        *("--template", "few-shot-cot-esnli", "--temperatures", "0", "--seeds", "0", "--out", str(run)),
    )
    assert invoke("filter", str(run), "--correct")[0] == 0
    student = run / "students" / "sbs"
    output = invoke_ok(
        *("train-student", str(run), "--method", "step-by-step", "--student", "scratch:llama-tiny"),
        *("--out", str(student), "--max-steps", "1", "--batch-size", "4", "--lora-r", "0"),
    )
    output = invoke_ok(
        *("eval", str(student), "--input", str(ESNLI / "test_sample.json"), "--format", "esnli"),
        *("--limit", "6", "--max-new-tokens", "4", "--no-explain"),
    )
    assert "choices ranked by log-likelihood" in output and "[" in output  # with its interval
    kept = {row["key"]: row for row in read_jsonl(run / "filtered.jsonl")}
    examples = read_jsonl(student / "examples.jsonl")
    assert len(examples) == 2 * len(kept)  # step-by-step: a label and a rationale example per sample
    assert {e["sample_key"] for e in examples} == set(kept)
    for example in examples:
        assert kept[example["sample_key"]]["problem_id"] == example["problem_id"]
    predictions = read_jsonl(student / "predictions.jsonl")
    assert len(predictions) == 6 and not {p["problem_id"] for p in predictions} & {e["problem_id"] for e in examples}
    summary = json.loads((student / "eval.json").read_text())
    assert summary["ranked_correct"] == sum(p["ranked_correct"] for p in predictions)
    low, high = summary["ranked_interval"]
    assert low <= summary["ranked_accuracy"] <= high
    [traced] = trace_run(run)
    assert traced.wrong == sum(not p["correct"] for p in predictions) and traced.failures
    samples = {row["key"]: row for row in read_jsonl(run / "samples.jsonl")}
    for failure in traced.failures:
        assert not failure.in_training and failure.neighbours
        for neighbour in failure.neighbours:
            key = neighbour.example.sample_key
            assert neighbour.sample is not None and neighbour.sample.text == samples[key]["text"]
            assert [(v.filter, v.kept) for v in neighbour.verdicts] == [("well_formed", True), ("correct", True)]
