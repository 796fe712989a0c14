"""`cotfactory eval` cross-checked against lm-evaluation-harness on the task files cotfactory writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import invoke_ok, read_jsonl

from cotfactory.problems import load_problems
from cotfactory.records import Problem
from cotfactory.students.lm_eval_tasks import read_manifest, run_lm_eval, write_lm_eval_tasks

lm_eval = pytest.importorskip("lm_eval")

ROOT = Path(__file__).resolve().parent.parent
CQA_TRAIN = ROOT / "data" / "cqa" / "train_sample.json"
CQA_TEST = ROOT / "data" / "cqa" / "test_sample.json"
GSM8K_TRAIN = ROOT / "data" / "gsm8k" / "train_sample.jsonl"
GSM8K_TEST = ROOT / "data" / "gsm8k" / "test_sample.jsonl"
HELD_OUT = 10


def _train(out: Path, input: Path, format: str, method: str, lora_r: int) -> Path:
    from cotfactory.config.train import TrainConfig
    from cotfactory.students.train import run_train

    config = TrainConfig(
        input=str(input),
        format=format,
        method=method,
        student="scratch:llama-tiny",
        out=str(out),
        lora_r=lora_r,
        max_steps=2,
        batch_size=4,
        limit=8,
        max_target_length=900,  # GSM8K solutions, byte-level
        save_steps=100,
    )
    run_train(config)
    return out


def _rows(path: Path) -> dict[str, dict]:
    return {row["problem_id"]: row for row in read_jsonl(path)}


def _fake_student(folder: Path, method: str) -> Path:
    """A student folder with what task writing reads (student.json, tokenizer); no weights."""
    from transformers import ByT5Tokenizer

    folder.mkdir(parents=True)
    ByT5Tokenizer().save_pretrained(folder)
    info = {"method": method, "causal": True, "adapter": False, "base": str(folder)}
    (folder / "student.json").write_text(json.dumps(info))
    return folder


def _load_task(manifest: dict):
    from lm_eval.tasks import TaskManager, get_task_dict

    tasks = get_task_dict(
        [manifest["task"]], TaskManager(include_path=manifest["include_path"], include_defaults=False)
    )
    return tasks[manifest["task"]]


# --- task files --------------------------------------------------------------------------------------------


def test_multiple_choice_task_holds_the_students_exact_prompts(tmp_path: Path) -> None:
    problems = load_problems("cqa", CQA_TEST, limit=3)
    folder = _fake_student(tmp_path / "student", "step-by-step")
    manifest = read_manifest(write_lm_eval_tasks(folder, problems, tmp_path / "tasks"))
    config = yaml.safe_load((tmp_path / "tasks" / f"{manifest['task']}.yaml").read_text())
    assert config["output_type"] == "multiple_choice" and config["target_delimiter"] == " "
    # ByT5 appends </s>, which a causal student never reads: lm-eval must not add special tokens
    assert manifest["model_args"] == f"pretrained={folder.resolve()},backend=causal,add_bos_token=False"
    task = _load_task(manifest)
    docs = list(task.eval_docs)
    assert len(docs) == 3
    first = problems[0]
    choices = " ".join(f"({'abcde'[i]}) {c}" for i, c in enumerate(first.choices or []))
    assert task.doc_to_text(docs[0]) == f"predict: {first.question}\nAnswer Choices: {choices}\nAnswer:"
    assert task.doc_to_choice(docs[0]) == first.choices
    assert task.doc_to_choice(docs[0])[task.doc_to_target(docs[0])] == first.gold


def test_generation_task_loads_and_reads_the_answer_after_the_arrow(tmp_path: Path) -> None:
    from lm_eval.filters.extraction import RegexFilter

    problems = load_problems("gsm8k", GSM8K_TEST, limit=4)
    folder = _fake_student(tmp_path / "student", "finetune-cot")
    manifest = read_manifest(write_lm_eval_tasks(folder, problems, tmp_path / "tasks", max_new_tokens=64))
    assert manifest["output_type"] == "generate_until" and manifest["problems"] == 4
    task = _load_task(manifest)
    docs = list(task.eval_docs)
    assert len(docs) == 4
    assert task.doc_to_text(docs[0]) == problems[0].question + " ###"
    assert task.doc_to_target(docs[0]) == problems[0].gold
    assert task.config.generation_kwargs["max_gen_toks"] == 64
    step = task.config.filter_list[0]["filter"][0]
    regex = RegexFilter(step["regex_pattern"], step["group_select"])
    texts = ["3 + 4 = 7 --> 7", "a --> b gives 2 --> $1,234.", "no arrow 5"]
    assert [r[0] for r in regex.apply([[t] for t in texts], docs[:3])] == ["7", "$1,234", "[invalid]"]


def test_methods_without_a_single_prompt_and_mixed_problems_are_refused(tmp_path: Path) -> None:
    from cotfactory.errors import ConfigError, DataError

    choice = Problem(id="c", question="Q?", gold="x", answer_type="choice", choices=["x", "y"])
    number = Problem(id="n", question="How many?", gold="3", answer_type="number")
    with pytest.raises(ConfigError, match="socratic"):
        write_lm_eval_tasks(_fake_student(tmp_path / "socratic", "socratic"), [number], tmp_path / "a")
    with pytest.raises(DataError, match="mix"):
        write_lm_eval_tasks(_fake_student(tmp_path / "label", "label-only"), [choice, number], tmp_path / "b")


# --- agreement ---------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_lm_eval_ranks_choices_as_cotfactory_eval_does(tmp_path: Path) -> None:
    """Per-choice log-likelihoods, chosen answers and accuracies of lm-eval equal `cotfactory eval`'s."""
    folder = _train(tmp_path / "student", CQA_TRAIN, "cqa", "label-only", lora_r=0)
    tasks = tmp_path / "lm-eval"
    args = ["eval", str(folder), "--input", str(CQA_TEST), "--format", "cqa", "--limit", str(HELD_OUT)]
    assert "lm_eval --model hf" in invoke_ok(*args, "--lm-eval", str(tasks))
    manifest = read_manifest(tasks)
    assert manifest["output_type"] == "multiple_choice" and manifest["problems"] == HELD_OUT

    output = run_lm_eval(manifest)
    predictions = _rows(folder / "predictions.jsonl")
    samples = output["samples"][manifest["task"]]
    assert len(samples) == HELD_OUT
    for sample in samples:
        doc, prediction = sample["doc"], predictions[sample["doc"]["id"]]
        logprobs = [float(ll) for ll, _ in sample["filtered_resps"]]
        assert logprobs == pytest.approx(prediction["choice_logprobs"], abs=1e-3), doc["id"]
        assert doc["choices"][max(range(len(logprobs)), key=logprobs.__getitem__)] == prediction["ranked"]
    numbers = output["results"][manifest["task"]]
    summary = json.loads((folder / "eval.json").read_text())
    assert numbers["acc,none"] == pytest.approx(summary["ranked_accuracy"])
    assert numbers["acc_norm,none"] == pytest.approx(summary["ranked_norm_accuracy"])


@pytest.mark.slow
def test_lm_eval_writes_what_a_lora_student_writes(tmp_path: Path) -> None:
    """Fine-tune-CoT through a LoRA adapter (pretrained=base, peft=adapter): the same greedy text."""
    from cotfactory.students.evaluate import run_eval

    folder = _train(tmp_path / "student", GSM8K_TRAIN, "gsm8k", "finetune-cot", lora_r=4)
    run_eval(str(folder), "gsm8k", str(GSM8K_TEST), limit=3, max_new_tokens=24)
    problems = load_problems("gsm8k", GSM8K_TEST, limit=3)
    manifest = read_manifest(write_lm_eval_tasks(folder, problems, tmp_path / "lm-eval", max_new_tokens=24))
    assert f"peft={folder.resolve()}" in manifest["model_args"]

    output = run_lm_eval(manifest)
    predictions = _rows(folder / "predictions.jsonl")
    samples = output["samples"][manifest["task"]]
    assert len(samples) == 3
    for sample in samples:
        assert sample["resps"][0][0].strip() == predictions[sample["doc"]["id"]]["text"]
