"""Held-out scoring: the 95 % interval maths and the log-likelihood ranker against a plain reference."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from cotfactory.stats import format_accuracy, wilson_interval


def test_wilson_interval_known_values() -> None:
    # textbook values (Newcombe 1998, method 3): 81/263 → [0.2553, 0.3662]; 15/148 → [0.0624, 0.1605]
    low, high = wilson_interval(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)
    low, high = wilson_interval(15, 148)
    assert (round(low, 4), round(high, 4)) == (0.0624, 0.1605)


def test_wilson_interval_edges() -> None:
    assert wilson_interval(0, 0) == (0.0, 1.0)
    low, high = wilson_interval(0, 10)
    assert low == 0.0 and 0.27 < high < 0.28  # stays inside [0, 1] where p ± z·se would not
    low, high = wilson_interval(10, 10)
    assert high == 1.0 and 0.72 < low < 0.73
    # symmetric: k of n correct mirrors n - k wrong
    a, b = wilson_interval(3, 17), wilson_interval(14, 17)
    assert math.isclose(a[0], 1 - b[1]) and math.isclose(a[1], 1 - b[0])
    with pytest.raises(ValueError):
        wilson_interval(5, 4)
    assert format_accuracy(52, 300) == "52/300 = 0.173 [0.135, 0.220]"


def _student(tmp_path: Path):
    from cotfactory.students.evaluate import Student
    from cotfactory.students.models import build_scratch

    model, tokenizer = build_scratch("scratch:llama-tiny", seed=3)
    folder = tmp_path / "tiny"
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    student = Student(str(folder), batch_size=3)
    return student, model.eval()


def _reference(model, student, context: str, continuation: str) -> float:
    """One unpadded full forward per pair: the obviously correct log-likelihood."""
    context_ids, continuation_ids = student._encode_pair(context, continuation)
    ids = torch.tensor([context_ids + continuation_ids])
    with torch.inference_mode():
        logprobs = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
    return sum(float(logprobs[len(context_ids) + i - 1, t]) for i, t in enumerate(continuation_ids))


def test_shared_prefix_ranker_matches_one_forward_per_pair(tmp_path: Path) -> None:
    """Contexts of different lengths (left padding), continuations of 1 to many tokens, a context
    with trailing space (moved to the continuation, as lm-eval does), batches cut mid-problem."""
    student, model = _student(tmp_path)
    contexts = ["Where is the zoo?\nAnswer:", "Q?\nAnswer:", "A much longer question about a park, with words. ", "x"]
    choices = [" zoo", " a large park", " b", " sea and sand and a lot of water"]
    pairs = [(c, x) for c in contexts for x in choices]
    scores = student.loglikelihoods(pairs)
    for (context, continuation), score in zip(pairs, scores, strict=True):
        assert score == pytest.approx(_reference(model, student, context, continuation), abs=1e-4)
    # scoring alone equals scoring in a batch
    assert student.loglikelihoods(pairs[5:6])[0] == pytest.approx(scores[5], abs=1e-5)


def test_mcnemar_exact() -> None:
    from cotfactory.stats import mcnemar_p

    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == 1.0
    assert mcnemar_p(10, 0) == pytest.approx(2 / 1024)  # all 10 discordant one way
    assert mcnemar_p(2, 8) == pytest.approx(2 * (1 + 10 + 45) / 1024)  # = 0.109
    assert mcnemar_p(8, 2) == mcnemar_p(2, 8)


def test_eval_in_steps_gives_the_predictions_of_one_pass(tmp_path: Path) -> None:
    """eval predicts a few batches of problems at a time (to show the running accuracy): the
    predictions, their order and their correctness are those of one pass over every problem."""
    from cotfactory.records import Problem
    from cotfactory.students.evaluate import PROBLEMS_PER_STEP, predict_with_progress
    from cotfactory.students.methods.label_only import predict

    student, _ = _student(tmp_path)
    problems = [
        Problem(id=f"p{i}", question=f"What is {i} + {i}?" + " pad" * (i % 5), gold=str(2 * i), answer_type="number")
        for i in range(2 * 3 * PROBLEMS_PER_STEP + 5)  # two whole steps and a short one
    ]
    stepped = predict_with_progress(predict, student, problems)
    whole = predict(student, problems)
    assert [p.problem.id for p in stepped] == [p.id for p in problems]
    assert [(p.text, p.answer, p.correct) for p in stepped] == [(p.text, p.answer, p.correct) for p in whole]
