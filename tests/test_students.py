"""Students: exact example strings, loss masks and weights, training, adapters, evaluation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import invoke, invoke_ok, read_jsonl, write_jsonl

from cotfactory.records import Problem
from cotfactory.students import evaluate
from cotfactory.students.features import IGNORE, encode_example
from cotfactory.students.methods import METHODS, MethodSettings, TrainingExample, build_examples
from cotfactory.students.methods.socratic import MAX_SOCRATIC_STEPS
from cotfactory.students.records import TeachingRecord, parse_subquestions
from cotfactory.students.trainer import example_losses, multitask_loss

ROOT = Path(__file__).resolve().parent.parent
Q = "Tom has 3 apples and buys 4 more. How many?"
RECORD = TeachingRecord(
    problem_id="p1",
    question=Q,
    answer="7",
    rationale="3 + 4 = 7.",
    answer_type="number",
    subquestions=[("How many at first?", "3"), ("How many in all?", "3 + 4 = 7")],
)
COUNTER = TeachingRecord(problem_id="p1", question=Q, answer="8", rationale="3 + 5 = 8.", mode="counterfactual")


def _examples(method: str, records: list[TeachingRecord], causal: bool = True, alpha: float = 0.5) -> list[tuple]:
    return [
        (e.task, e.source, e.context, e.target, e.weight)
        for e in build_examples(method, records, MethodSettings(alpha, causal))
    ]


def test_exact_example_strings() -> None:
    assert _examples("label-only", [RECORD, RECORD]) == [("label", f"{Q}\nAnswer:", "", " 7", 1.0)]
    assert _examples("label-only", [RECORD], causal=False) == [("label", Q, "", "7", 1.0)]
    assert _examples("step-by-step", [RECORD], alpha=0.3) == [
        ("label", f"predict: {Q}\nAnswer:", "", " 7", 0.3),
        ("rationale", f"explain: {Q}\nExplanation:", "", " 3 + 4 = 7.", 0.7),
    ]
    assert _examples("step-by-step", [RECORD], causal=False, alpha=0.3) == [
        ("label", f"predict: {Q}", "", "7", 0.3),
        ("rationale", f"explain: {Q}", "", "3 + 4 = 7.", 0.7),
    ]
    assert _examples("finetune-cot", [RECORD, RECORD.model_copy(update={"rationale": "4 + 3 = 7."})]) == [
        ("cot", f"{Q} ###", "", " 3 + 4 = 7. --> 7", 1.0),
        ("cot", f"{Q} ###", "", " 4 + 3 = 7. --> 7", 1.0),
    ]
    assert _examples("finetune-cot", [RECORD], causal=False) == [("cot", Q, "", "3 + 4 = 7. --> 7", 1.0)]
    assert _examples("socratic", [RECORD]) == [
        ("decompose", f"decompose: {Q}", "", "How many at first?\nHow many in all?", 1.0),
        ("solve", f"solve: {Q}\nQ: How many at first? A:", "", "3", 1.0),
        ("solve", f"solve: {Q}\nQ: How many at first? A: 3\nQ: How many in all? A:", "", "3 + 4 = 7", 1.0),
    ]
    assert _examples("socratic-unified", [RECORD]) == [
        ("unified", Q, "", "How many at first? ** 3\nHow many in all? ** 3 + 4 = 7\nThe answer is 7.", 1.0)
    ]
    assert _examples("scott", [RECORD, COUNTER], alpha=0.5) == [
        ("factual", f"[factual] {Q}", "", "3 + 4 = 7. So the answer is 7", 0.5),
        ("counterfactual", f"[counterfactual] {Q}", "3 + 5 = 8. So the answer is ", "8", 0.5),
    ]
    choice = TeachingRecord(problem_id="c", question="Where?", answer="zoo", choices=["park", "zoo"])
    assert _examples("label-only", [choice])[0][1] == "Where?\nAnswer Choices: (a) park (b) zoo\nAnswer:"


def test_socratic_without_sub_answers_and_parsing() -> None:
    plan_only = RECORD.model_copy(update={"subquestions": [("Is 3 > 4?", None), ("Is #1 true?", None)]})
    assert _examples("socratic", [plan_only])[1] == (
        "solve",
        f"solve: {Q}\nQ: Is 3 > 4?\nQ: Is #1 true?\nThe answer is",
        "",
        " 7",
        1.0,
    )
    text = "How many eggs are left? ** 16 - 3 = 13 eggs.\nHow much money? ** 13 * 2 = 26.\nThe answer is 26."
    assert parse_subquestions(text) == [
        ("How many eggs are left?", "16 - 3 = 13 eggs."),
        ("How much money?", "13 * 2 = 26."),
    ]


def test_prompt_and_context_tokens_carry_no_loss(tiny_llama: Path) -> None:
    from transformers import AutoTokenizer, ByT5Tokenizer

    causal_tok = AutoTokenizer.from_pretrained(tiny_llama)
    example = TrainingExample("counterfactual", "[counterfactual] q", "8", context="3 + 5 = 8. So the answer is ")
    feature = encode_example(example, causal_tok, True, {"counterfactual": 0}, 512, 256)
    source = causal_tok(example.source)["input_ids"]
    context = causal_tok(example.context, add_special_tokens=False)["input_ids"]
    target = causal_tok("8", add_special_tokens=False)["input_ids"] + [causal_tok.eos_token_id]
    assert feature["input_ids"] == source + context + target
    assert feature["labels"] == [IGNORE] * (len(source) + len(context)) + target
    byt5 = ByT5Tokenizer()
    seq = encode_example(example, byt5, False, {"counterfactual": 0}, 512, 256)
    assert seq["input_ids"][-1] == byt5.eos_token_id and seq["decoder_target"][-1] == byt5.eos_token_id
    assert seq["labels"] == [IGNORE] * len(byt5(example.context, add_special_tokens=False)["input_ids"]) + [
        byt5("8", add_special_tokens=False)["input_ids"][0],
        byt5.eos_token_id,
    ]


def test_multitask_loss_weights() -> None:
    per_example = torch.tensor([1.0, 3.0, 10.0, 20.0])
    tasks = torch.tensor([0, 0, 1, 1])
    weights = torch.tensor([0.3, 0.3, 0.7, 0.7])
    loss, by_task = multitask_loss(per_example, tasks, weights)
    assert loss.item() == pytest.approx(0.3 * 2.0 + 0.7 * 15.0)
    assert by_task == {0: 2.0, 1: 15.0}
    logits = torch.zeros(1, 3, 5)
    logits[0, 0, 2] = 10.0  # predicts token 2 at position 0 → for causal, that is the label of position 1
    labels = torch.tensor([[IGNORE, 2, IGNORE]])
    assert example_losses(logits, labels, causal=True).item() == pytest.approx(0.0, abs=1e-3)
    assert example_losses(logits, labels, causal=False).item() == pytest.approx(torch.log(torch.tensor(5.0)).item())


@pytest.fixture(scope="module")
def teaching_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("teach") / "rationales.jsonl"
    rows = [
        {
            "problem_id": f"p{i}",
            "question": f"What is {i} plus {i}?",
            "rationale": f"{i} + {i} = {2 * i}.",
            "answer": str(2 * i),
            "answer_type": "number",
        }
        for i in range(12)
    ]
    write_jsonl(path, rows)
    return path


@pytest.mark.parametrize(
    ("student", "method"), [("scratch:t5-tiny", "step-by-step"), ("scratch:llama-tiny", "finetune-cot")]
)
def test_a_few_steps_lower_the_loss(teaching_file: Path, tmp_path: Path, student: str, method: str) -> None:
    out = tmp_path / "student"
    invoke_ok(
        "train-student",
        str(teaching_file),
        "--method",
        method,
        "--student",
        student,
        "--out",
        str(out),
        "--lora-r",
        "0",
        "--max-steps",
        "24",
        "--batch-size",
        "6",
        "--lr",
        "3e-3",
        "--logging-steps",
        "4",
    )
    metrics = [m for m in read_jsonl(out / "metrics.jsonl") if "loss" in m]
    assert metrics[-1]["loss"] < 0.7 * metrics[0]["loss"]
    if method == "step-by-step":
        assert {"loss_label", "loss_rationale"} <= set(metrics[0])
    info = json.loads((out / "student.json").read_text())
    assert info["method"] == method and info["adapter"] is False and info["examples"] > 0


def test_lora_adapter_trains_only_adapters_and_reloads_with_plain_peft(
    tiny_llama: Path, teaching_file: Path, tmp_path: Path
) -> None:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    invoke_ok(
        "train-student",
        str(teaching_file),
        "--method",
        "finetune-cot",
        "--student",
        str(tiny_llama),
        "--out",
        str(out),
        "--lora-r",
        "4",
        "--max-steps",
        "6",
        "--batch-size",
        "4",
        "--lr",
        "1e-2",
    )
    base = AutoModelForCausalLM.from_pretrained(tiny_llama)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    student = PeftModel.from_pretrained(base, out)
    merged = dict(student.named_parameters())
    lora_b = [v for k, v in merged.items() if "lora_B" in k]
    assert lora_b and any(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: it moved
    frozen = {k.replace("base_model.model.", ""): v for k, v in merged.items() if "lora_" not in k}
    assert all(
        torch.equal(before[k.replace(".base_layer", "")], v)
        for k, v in frozen.items()
        if k.replace(".base_layer", "") in before
    )
    ids = torch.tensor([[5, 6, 7, 8]])
    ours = evaluate.Student(out).model
    with torch.inference_mode():
        assert torch.allclose(student(input_ids=ids).logits, ours(input_ids=ids).logits, atol=1e-5)


class FakeStudent:
    """Stands for a model: replies from a script, so the readers and scoring can be checked exactly."""

    causal = True
    explain = True

    def __init__(self, replies: dict[str, str]):
        self.replies = replies
        self.prompts: list[str] = []

    def write(self, prompts: list[str], max_new_tokens: int | None = None) -> list[str]:
        self.prompts += prompts
        return [next((r for key, r in self.replies.items() if key in p), "") for p in prompts]

    def loglikelihoods(self, pairs: list[tuple[str, str]]) -> list[float]:
        raise AssertionError("these problems have no choices to rank")


def _predict(method: str, student: FakeStudent, problems: list[Problem]) -> list[evaluate.Prediction]:
    """A registered method's reader, as ``cotfactory eval`` runs it."""
    predict = METHODS.get(method).predict
    assert predict is not None
    return predict(student, problems)


PROBLEMS = [
    Problem(id=f"q{i}", question=f"What is {i} + {i}?", gold=str(2 * i), answer_type="number") for i in range(1, 4)
]


def test_eval_readers_and_accuracy_on_known_predictions() -> None:
    cot = FakeStudent({"1 + 1": "1 + 1 = 2. --> 2", "2 + 2": "2 + 2 = 4. --> 5", "3 + 3": "I do not know"})
    predictions = _predict("finetune-cot", cot, PROBLEMS)
    assert [p.answer for p in predictions] == ["2", "5", None]
    assert [p.correct for p in predictions] == [True, False, False]
    assert [p.rationale_agrees for p in predictions] == [True, False, None]
    assert [p.rationale_correct for p in predictions] == [True, True, None]  # "2 + 2 = 4" is right; "--> 5" not
    assert cot.prompts[0] == "What is 1 + 1? ###"
    scott = FakeStudent(
        {
            "1 + 1": "1 + 1 = 2. So the answer is 2",
            "2 + 2": "2 + 2 = 4. So the answer is 4",
            "3 + 3": "3 + 3 = 6. So the answer is 7",
        }
    )
    predictions = _predict("scott", scott, PROBLEMS)
    assert [p.correct for p in predictions] == [True, True, False] and scott.prompts[0].startswith("[factual] ")


def test_socratic_loop_terminates_and_uses_the_last_sub_answer() -> None:
    endless = "\n".join(f"Sub-question {i}?" for i in range(50))
    student = FakeStudent({"decompose: ": endless, "Sub-question 7? A:": "so the total is 2", "solve: ": "1"})
    predictions = _predict("socratic", student, PROBLEMS[:1])
    solver_calls = [p for p in student.prompts if p.startswith("solve: ")]
    assert len(solver_calls) == MAX_SOCRATIC_STEPS
    assert predictions[0].answer == "2" and predictions[0].correct


def test_train_and_eval_from_a_filtered_run(tmp_path: Path) -> None:
    run = tmp_path / "palm"
    cqa = ROOT / "data" / "cqa"
    invoke_ok(
        "generate",
        "--input",
        str(cqa / "test_sample.json"),
        "--format",
        "cqa",
        "--teacher",
        "replay",
        "--replay",
        str(cqa / "palm_test_sample.json"),
        "--model",
        "palm",
        "--template",
        "few-shot-cot-cqa",
        "--out",
        str(run),
    )
    invoke_ok("filter", str(run), "--correct")
    out = tmp_path / "student"
    invoke_ok(
        "train-student",
        str(run),
        "--method",
        "step-by-step",
        "--student",
        "scratch:t5-tiny",
        "--out",
        str(out),
        "--lora-r",
        "0",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
    )
    card = (out / "README.md").read_text()
    funnel = json.loads((run / "funnel.json").read_text())["stages"]
    kept = next(stage for stage in funnel if stage["stage"] == "correct")
    assert "# student: a step-by-step student" in card and "Base model: `scratch:t5-tiny`" in card
    assert f"| correct | {kept['samples_in']} | {kept['samples_out']} |" in card
    assert "Teacher: `replay` `palm`" in card and "| max_steps | `2` |" in card
    assert "Not evaluated yet" in card
    invoke_ok(
        "eval",
        str(out),
        "--format",
        "cqa",
        "--input",
        str(cqa / "train_sample.json"),
        "--limit",
        "4",
        "--max-new-tokens",
        "8",
    )
    predictions = read_jsonl(out / "predictions.jsonl")
    assert len(predictions) == 4 and {"question", "gold", "prediction", "rationale", "correct"} <= set(predictions[0])
    summary = json.loads((out / "eval.json").read_text())
    assert summary["total"] == 4 and summary["correct"] == sum(p["correct"] for p in predictions)
    low, high = summary["interval"]
    card = (out / "README.md").read_text()  # rewritten with the score
    assert f"accuracy **{summary['accuracy']:.3f}** (95 % Wilson interval {low:.3f}–{high:.3f})" in card


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--method", "nope", "--student", "scratch:t5-tiny"], "unknown method 'nope'"),
        (["--method", "label-only", "--student", "scratch:gpt-huge"], "unknown scratch model"),
        (["--method", "label-only", "--student", "/no/such/model"], "/no/such/model"),
        (["--method", "socratic", "--student", "scratch:t5-tiny"], "gives no training examples"),
    ],
)
def test_bad_training_input_is_exit_2(teaching_file: Path, tmp_path: Path, args: list[str], message: str) -> None:
    code, output = invoke("train-student", str(teaching_file), *args, "--out", str(tmp_path / "s"))
    assert code == 2 and message in output, output
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_smollm2_lora_student_trains_and_evaluates(smollm2: str, tmp_path: Path) -> None:
    out = tmp_path / "smol"
    invoke_ok(
        "train-student",
        str(ROOT / "data" / "gsm8k" / "train_sample.jsonl"),
        "--format",
        "gsm8k",
        "--method",
        "finetune-cot",
        "--student",
        smollm2,
        "--out",
        str(out),
        "--lora-r",
        "8",
        "--max-steps",
        "4",
        "--batch-size",
        "2",
        "--limit",
        "8",
    )
    info = json.loads((out / "student.json").read_text())
    assert info["adapter"] and (out / "adapter_config.json").exists()
    invoke_ok(
        "eval",
        str(out),
        "--format",
        "gsm8k",
        "--input",
        str(ROOT / "data" / "gsm8k" / "test_sample.jsonl"),
        "--limit",
        "2",
        "--max-new-tokens",
        "24",
    )
    assert len(read_jsonl(out / "predictions.jsonl")) == 2


@pytest.fixture(scope="module")
def rich_teaching_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Rows that feed every method: rationales, Socratic sub-question lines, and counterfactuals."""
    path = tmp_path_factory.mktemp("rich") / "rows.jsonl"
    rows = []
    for i in range(1, 7):
        text = f"What is {i} plus {i}? ** {i} + {i} = {2 * i}.\nThe answer is {2 * i}."
        rows.append(
            {
                "problem_id": f"p{i}",
                "question": f"What is {i} + {i}?",
                "rationale": f"{i} + {i} = {2 * i}.",
                "answer": str(2 * i),
                "answer_type": "number",
                "text": text,
                "mode": "contrastive",
            }
        )
        rows.append(
            {
                "problem_id": f"p{i}",
                "question": f"What is {i} + {i}?",
                "rationale": f"{i} + {i} = {2 * i + 1}.",
                "answer": str(2 * i + 1),
                "answer_type": "number",
                "text": "",
                "mode": "counterfactual",
            }
        )
    write_jsonl(path, rows)
    return path


@pytest.mark.parametrize("student", ["scratch:t5-tiny", "scratch:llama-tiny"])
@pytest.mark.parametrize(
    "method", ["label-only", "step-by-step", "finetune-cot", "socratic", "socratic-unified", "scott"]
)
def test_every_method_trains_and_evaluates_on_both_architectures(
    rich_teaching_file: Path, tmp_path: Path, method: str, student: str
) -> None:
    out = tmp_path / "s"
    invoke_ok(
        "train-student",
        str(rich_teaching_file),
        "--method",
        method,
        "--student",
        student,
        "--out",
        str(out),
        "--lora-r",
        "0",
        "--max-steps",
        "2",
        "--batch-size",
        "4",
    )
    problems = write_jsonl(
        tmp_path / "test.jsonl",
        ({"id": f"t{i}", "question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(2)),
    )
    output = invoke_ok("eval", str(out), "--input", str(problems), "--answer-type", "number", "--max-new-tokens", "6")
    assert f"{method}: accuracy" in output and len(read_jsonl(out / "predictions.jsonl")) == 2
