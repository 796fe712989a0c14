"""Lineage of a student's mistakes, on a run directory built by hand: teacher samples in the store and in
samples.jsonl, filter verdicts, and a student's examples.jsonl, predictions.jsonl and eval.json (with the
untrained base model's beside it). Every join is by request key or problem id, checked end to end, then
the report's error view and before/after numbers are checked on the page.
"""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from html import escape
from pathlib import Path

import pytest
from helpers import make_sample, write_jsonl

from cotfactory.export import sample_row
from cotfactory.lineage import Judgement, StudentErrors, TeacherIndex, TfIdf, trace_run, trace_student, words
from cotfactory.records import Problem, Sample, Verdict
from cotfactory.report import write_report
from cotfactory.store import Store

HOSTILE = '<script>alert("x")</script> & '
APPLES = "Tom has 3 apples and buys 5 more apples. How many apples does he have now?"
TRAINS = "A train travels 60 miles in 2 hours. What is the speed of the train?"
BOATS = "A boat carries 12 people on each trip. How many trips carry 48 people?"
CARS = "A car park has 4 rows of 9 cars. How many cars are parked?"
APPLES_TEXT = HOSTILE + "Tom starts with 3 apples. Buying 5 more gives 3 + 5 = 8. The answer is 8."
PREAMBLE = "Let's think step by step. "  # the teacher's text = preamble + the extracted rationale
EVAL = {
    "method": "step-by-step",
    "untrained": False,
    "total": 4,
    "correct": 1,
    "accuracy": 0.25,
    "interval": [0.0456, 0.6994],
    "rationale_agreement": 1.0,
    "rationale_accuracy": 0.25,
}
UNTRAINED = {**EVAL, "method": "label-only", "untrained": True, "correct": 0, "accuracy": 0.0, "interval": [0.0, 0.49]}


def _sample(problem: Problem, text: str, answer: str, temperature: float, seed: int) -> Sample:
    return make_sample(
        answer,
        PREAMBLE + text,
        rationale=text,
        problem_id=problem.id,
        template_hash="t",
        teacher="replay",
        model="palm",
        temperature=temperature,
        seed=seed,
    )


def _example(task: str, source: str, target: str, problem_id: str, sample_key: str) -> dict:
    return {
        "task": task,
        "source": source,
        "target": target,
        "context": "",
        "weight": 0.5,
        "problem_id": problem_id,
        "sample_key": sample_key,
    }


def _prediction(problem_id: str, question: str, gold: str, prediction: str, correct: bool, **extra: object) -> dict:
    row = {
        "problem_id": problem_id,
        "question": question,
        "choices": None,
        "gold": gold,
        "prediction": prediction,
        "rationale": f"I think it is {prediction}.",
        "text": f"I think it is {prediction}.",
        "correct": correct,
        "ranked": None,
        "ranked_correct": None,
        "choice_logprobs": None,
        "rationale_agrees": True,
        "rationale_correct": correct,
    }
    return {**row, **extra}


def _make_run(root: Path) -> tuple[Path, dict[str, str]]:
    """Teacher: apples (one kept, one dropped), trains (kept), cars (kept, but gone from samples.jsonl: the
    plan changed after training). Student ``sbs`` (step-by-step) learned from the kept ones and from boats
    (a dataset rationale); student ``old`` predates examples.jsonl."""
    run = root / "RUN"
    run.mkdir()
    problems = {
        "p-apples": Problem(id="p-apples", question=APPLES, gold="8", answer_type="number"),
        "p-trains": Problem(id="p-trains", question=TRAINS, gold="30", answer_type="number"),
        "p-cars": Problem(id="p-cars", question=CARS, gold="36", answer_type="number"),
    }
    samples = {
        "apples": _sample(problems["p-apples"], APPLES_TEXT, "8", 0.3, 1),
        "apples-wrong": _sample(problems["p-apples"], "3 times 5 is 15. The answer is 15.", "15", 0.8, 1),
        "trains": _sample(problems["p-trains"], "60 miles / 2 hours = 30. The answer is 30.", "30", 0.3, 1),
        "cars": _sample(problems["p-cars"], "4 rows of 9 is 36. The answer is 36.", "36", 0.3, 2),
    }
    keys = {name: sample.key for name, sample in samples.items()}
    with Store.in_run(run) as store:
        store.put_problems(problems.values())
        store.add_samples(samples.values())
        store.add_verdicts(
            [
                Verdict(sample_key=keys["apples"], filter="correct", keep=True, reason="kept"),
                Verdict(sample_key=keys["apples"], filter="consistency", keep=True, reason="kept"),
                Verdict(sample_key=keys["apples-wrong"], filter="correct", keep=False, reason="wrong_answer"),
                Verdict(sample_key=keys["trains"], filter="correct", keep=True, reason="kept"),
                Verdict(sample_key=keys["cars"], filter="correct", keep=True, reason="kept"),
            ]
        )
    current = [n for n in samples if n != "cars"]
    write_jsonl(
        run / "samples.jsonl", [sample_row(samples[n], problems[samples[n].request.problem_id]) for n in current]
    )

    student = run / "students" / "sbs"
    examples = []
    for problem_id, question, name, rationale, answer in [
        ("p-trains", TRAINS, "trains", samples["trains"].rationale, "30"),  # first in the file, but not the nearest
        ("p-apples", APPLES, "apples", APPLES_TEXT, "8"),
        ("p-boats", BOATS, "", "48 / 12 = 4 trips.", "4"),
        ("p-cars", CARS, "cars", samples["cars"].rationale, "36"),
    ]:
        key = keys[name] if name else ""
        examples.append(_example("label", f"predict: {question}", answer, problem_id, key))
        examples.append(_example("rationale", f"explain: {question}", rationale, problem_id, key))
    write_jsonl(student / "examples.jsonl", examples)
    held_out_apples = "Anna has 4 apples and buys 2 more apples. How many apples does she have?"
    write_jsonl(
        student / "predictions.jsonl",
        [
            _prediction("h-trains", "A train goes 90 miles in 3 hours. What is its speed?", "30", "30", True),
            _prediction("h-apples", HOSTILE + held_out_apples, "6", "5", False),
            _prediction("p-boats", BOATS, "4", "3", False),  # leaked: a training problem, held out again
            _prediction("h-cars", "A lot has 3 rows of 7 cars parked. How many cars?", "21", "20", False),
        ],
    )
    (student / "eval.json").write_text(json.dumps(EVAL))
    (student / "student.json").write_text(json.dumps({"method": "step-by-step"}))
    untrained = student / "untrained"
    untrained.mkdir()
    (untrained / "eval.json").write_text(json.dumps(UNTRAINED))
    write_jsonl(untrained / "predictions.jsonl", [])

    old = run / "students" / "old"
    old.mkdir()
    (old / "eval.json").write_text(json.dumps({**EVAL, "method": "label-only"}))
    return run, keys


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    return _make_run(tmp_path_factory.mktemp("lineage"))


@pytest.fixture(scope="module")
def traced(built: tuple[Path, dict[str, str]]) -> StudentErrors:
    run, _ = built
    (student,) = trace_run(run)  # ``old`` has no examples.jsonl; ``sbs/untrained`` is no student
    return student


def test_wrong_prediction_joins_nearest_example_teacher_sample_and_verdicts(
    built: tuple[Path, dict[str, str]], traced: StudentErrors
) -> None:
    _, keys = built
    assert (traced.student, traced.total, traced.wrong, traced.ranked_wrong, traced.examples) == ("sbs", 4, 3, None, 8)
    assert [f.prediction.problem_id for f in traced.failures] == ["h-apples", "p-boats", "h-cars"]  # the wrong ones

    apples = traced.failures[0]
    assert apples.prediction.prediction == "5" and apples.prediction.gold == "6" and not apples.in_training
    nearest = apples.neighbours[0]
    assert nearest.example.problem_id == "p-apples" and not nearest.same_problem
    assert nearest.example.task == "rationale" and nearest.example.target == APPLES_TEXT  # the rationale, not "8"
    assert nearest.example.sample_key == keys["apples"]
    assert nearest.sample is not None
    assert (nearest.sample.key, nearest.sample.answer) == (keys["apples"], "8")
    assert (nearest.sample.text, nearest.sample.rationale) == (PREAMBLE + APPLES_TEXT, APPLES_TEXT)
    assert nearest.sample.temperature == 0.3
    assert nearest.verdicts == (Judgement("correct", True, "kept"), Judgement("consistency", True, "kept"))

    problems = [n.example.problem_id for n in apples.neighbours]
    assert len(problems) == len(set(problems)) == 3  # one example per training problem
    similarities = [n.similarity for n in apples.neighbours]
    assert similarities == sorted(similarities, reverse=True) and 0 < similarities[-1] < similarities[0] <= 1


def test_leaked_problem_is_flagged_and_a_dataset_rationale_has_no_teacher(traced: StudentErrors) -> None:
    boats = traced.failures[1]
    assert boats.in_training
    assert [n.same_problem for n in boats.neighbours] == [True, True]  # its two examples, rationale first
    assert [n.example.task for n in boats.neighbours] == ["rationale", "label"]
    assert 0.8 < boats.neighbours[0].similarity < 1.0  # the same question; only "explain:" is extra
    assert all(n.sample is None and n.verdicts == () and n.example.sample_key == "" for n in boats.neighbours)


def test_sample_gone_from_samples_jsonl_is_read_from_the_store(
    built: tuple[Path, dict[str, str]], traced: StudentErrors
) -> None:
    _, keys = built
    cars = traced.failures[2]
    assert cars.neighbours[0].example.problem_id == "p-cars"
    sample = cars.neighbours[0].sample
    assert (
        sample is not None
        and sample.key == keys["cars"]
        and sample.text == PREAMBLE + "4 rows of 9 is 36. The answer is 36."
    )
    assert (sample.temperature, sample.seed) == (0.3, 2)
    assert cars.neighbours[0].verdicts == (Judgement("correct", True, "kept"),)


def test_multiple_choice_counts_ranked_errors(built: tuple[Path, dict[str, str]], tmp_path: Path) -> None:
    run, _ = built
    folder = tmp_path / "mc"
    write_jsonl(folder / "examples.jsonl", [_example("label", "predict: Where is sand? (a) beach", "a", "q1", "")])
    choices = {"choices": ["beach", "moon"]}
    write_jsonl(
        folder / "predictions.jsonl",
        [
            _prediction(
                "m1", "Where is sand found?", "beach", "moon", False, ranked="beach", ranked_correct=True, **choices
            ),
            _prediction(
                "m2", "Where is dust?", "moon", "beach", False, ranked="beach", ranked_correct=False, **choices
            ),
            _prediction("m3", "Where is sand?", "beach", "beach", True, ranked="beach", ranked_correct=True, **choices),
        ],
    )
    errors = trace_student(folder, TeacherIndex.load(run))
    assert errors is not None
    assert (errors.wrong, errors.ranked_wrong) == (2, 1)
    assert [f.prediction.ranked_correct for f in errors.failures] == [True, False]
    assert errors.failures[0].prediction.choices == ("beach", "moon")
    assert errors.failures[0].neighbours[0].example.problem_id == "q1"  # "sand", "beach" in the source


def test_runs_without_lineage_give_nothing(tmp_path: Path) -> None:
    assert trace_run(tmp_path) == []  # no students/ at all
    old = tmp_path / "students" / "old"
    old.mkdir(parents=True)
    (old / "eval.json").write_text(json.dumps(EVAL))
    write_jsonl(old / "predictions.jsonl", [_prediction("h", "q?", "1", "2", False)])
    assert trace_run(tmp_path) == []  # predictions but no examples.jsonl (trained before it existed)


def test_report_shows_error_view_and_before_after_with_intervals(built: tuple[Path, dict[str, str]]) -> None:
    run, keys = built
    page = write_report(run).read_text(encoding="utf-8")
    numbers = json.loads((run / "report" / "report.json").read_text())

    assert [s["name"] for s in numbers["students"]] == ["old", "sbs"]  # sbs/untrained is not a student
    sbs = numbers["students"][1]
    assert sbs["untrained"]["accuracy"] == 0.0 and sbs["untrained"]["interval"] == UNTRAINED["interval"]
    assert sbs["eval"]["interval"] == EVAL["interval"]
    assert "accuracy: before (untrained)" in page and "accuracy: after (trained)" in page
    assert "0/4 = 0.000 [0.000, 0.490]" in page and "1/4 = 0.250 [0.046, 0.699]" in page
    assert "accuracy" in numbers["plots"]

    assert "Where the student fails, and what it learned from" in page
    (errors,) = numbers["errors"]
    assert errors["student"] == "sbs" and errors["wrong"] == 3
    first = errors["failures"][0]["neighbours"][0]
    assert first["sample_key"] == keys["apples"] and first["problem_id"] == "p-apples"
    assert first["verdicts"] == [
        {"filter": "correct", "kept": True, "reason": "kept"},
        {"filter": "consistency", "kept": True, "reason": "kept"},
    ]
    assert escape(PREAMBLE + APPLES_TEXT) in page  # the teacher's text, escaped
    assert f"<pre>{escape(APPLES_TEXT)}</pre>" in page  # the training target, escaped
    assert escape(HOSTILE) + "Anna has 4 apples" in page  # the held-out question, escaped
    assert "<script" not in page.lower()
    assert "student's answer 5" in page
    assert "it leaked into training" in page  # p-boats
    assert "from the dataset, not from a teacher sample" in page
    assert f"teacher sample {keys['cars']}" in page  # found in the store


def _dense_cosines(documents: list[str], query: str) -> list[float]:
    """Obviously correct: full vocabulary vectors, smoothed idf, raw term counts, cosine."""
    vocabulary = sorted({w for d in documents for w in words(d)})
    n = len(documents)
    idf = {w: math.log((1 + n) / (1 + sum(w in words(d) for d in documents))) + 1 for w in vocabulary}

    def vector(text: str) -> list[float]:
        counts = Counter(words(text))
        return [counts[w] * idf[w] for w in vocabulary]

    q = vector(query)
    out = []
    for d in documents:
        v = vector(d)
        norms = math.sqrt(sum(x * x for x in q)) * math.sqrt(sum(x * x for x in v))
        out.append(sum(a * b for a, b in zip(q, v, strict=True)) / norms if norms else 0.0)
    return out


def test_tfidf_matches_a_dense_reference() -> None:
    rng = random.Random(7)
    pool = ["apple", "boat", "car", "train", "sand", "beach", "moon", "how", "many", "is", "the", "of", "a", "12", "60"]
    for _ in range(30):
        documents = [" ".join(rng.choices(pool, k=rng.randint(0, 8))) for _ in range(rng.randint(1, 6))]
        query = " ".join(rng.choices(pool + ["unseen"], k=rng.randint(0, 6)))
        sparse = TfIdf(documents).similarities(query)
        expected = _dense_cosines(documents, query)
        assert [sparse.get(i, 0.0) for i in range(len(documents))] == pytest.approx(expected)
