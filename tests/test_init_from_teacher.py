"""`--init-from-teacher` (students built from the teacher's layers) and `--hidden-cosine`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import invoke, invoke_ok, read_jsonl, write_jsonl

from cotfactory.errors import ConfigError
from cotfactory.students.features import IGNORE
from cotfactory.students.init_from_teacher import (
    HiddenCosine,
    every_other_layers,
    important_layers,
    init_from_teacher,
    layer_outputs,
)


def tiny(path: Path, layers: int, hidden: int = 32, seed: int = 0) -> tuple[Path, torch.nn.Module]:
    from tiny_models import build_tiny_llama
    from transformers import AutoModelForCausalLM

    folder = build_tiny_llama(path, seed=seed, hidden=hidden, layers=layers)
    return folder, AutoModelForCausalLM.from_pretrained(folder)


def same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_every_other_layer_indices() -> None:
    assert every_other_layers(30, 15) == list(range(0, 30, 2))  # DistilBERT: one layer out of two
    assert every_other_layers(4, 2) == [0, 2]
    assert every_other_layers(5, 3) == [0, 2, 4]
    assert every_other_layers(30, 3) == [0, 10, 20]
    assert every_other_layers(4, 3) == [0, 1, 2]  # stride 2 would run past layer 3: evenly spread
    assert every_other_layers(4, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="at most as many"):
        every_other_layers(2, 3)


def test_important_layers_keep_the_top_blocks_in_depth_order() -> None:
    assert important_layers([0.5, 0.01, 0.3, 0.2], 2) == [0, 2]
    assert important_layers([0.1, 0.1, 0.1], 2) == [0, 1]


def test_every_other_copies_the_teachers_layers(tmp_path: Path) -> None:
    _, teacher = tiny(tmp_path / "teacher", layers=4, seed=1)
    _, student = tiny(tmp_path / "student", layers=2, seed=2)
    built, layers = init_from_teacher(student, teacher, "every-other")
    assert layers.teacher_layers == [0, 2] and layers.teacher_depth == 4
    assert same(built.model.layers[0], teacher.model.layers[0])
    assert same(built.model.layers[1], teacher.model.layers[2])
    assert not same(built.model.layers[1], teacher.model.layers[1])
    assert same(built.model.embed_tokens, teacher.model.embed_tokens) and same(built.model.norm, teacher.model.norm)
    assert torch.equal(built.lm_head.weight, teacher.lm_head.weight)


def test_a_student_as_deep_as_the_teacher_is_cut_to_half(tmp_path: Path) -> None:
    _, teacher = tiny(tmp_path / "teacher", layers=4, seed=1)
    built, layers = init_from_teacher(teacher, teacher, "every-other")
    assert built is not teacher and built.config.num_hidden_layers == 2 and len(built.model.layers) == 2
    assert layers.teacher_layers == [0, 2] and same(built.model.layers[1], teacher.model.layers[2])
    ids = torch.tensor([[5, 6, 7, 8]])
    with torch.no_grad():  # runs, and its first layer computes what the teacher's first layer computes
        with layer_outputs(built, [0]) as mine, layer_outputs(teacher, [0]) as theirs:
            built(input_ids=ids), teacher(input_ids=ids)
        assert torch.allclose(mine[0], theirs[0])


def test_other_widths_are_refused(tmp_path: Path) -> None:
    _, teacher = tiny(tmp_path / "teacher", layers=4, hidden=64)
    _, student = tiny(tmp_path / "student", layers=2, hidden=32)
    with pytest.raises(ConfigError, match="needs the same widths"):
        init_from_teacher(student, teacher, "every-other")


def test_importance_skips_a_block_that_is_the_identity(tmp_path: Path) -> None:
    """A block whose attention and MLP write nothing returns its input: least important, not copied."""
    _, teacher = tiny(tmp_path / "teacher", layers=4, seed=1)
    with torch.no_grad():
        teacher.model.layers[2].self_attn.o_proj.weight.zero_()
        teacher.model.layers[2].mlp.down_proj.weight.zero_()
    _, student = tiny(tmp_path / "student", layers=3, seed=2)
    calibration = [[5 + i, 6 + i, 7 + i, 8 + i, 9 + i] for i in range(6)]
    built, layers = init_from_teacher(student, teacher, "importance", calibration, pad_id=0)
    assert layers.teacher_layers == [0, 1, 3]
    assert same(built.model.layers[2], teacher.model.layers[3])


def test_hidden_cosine_losses() -> None:
    """Per example: weight · mean over layers and loss positions of (1 − cos); prompt positions ignored."""
    cosine = HiddenCosine(weight=2.0, teacher_layers=[0, 2])
    state = torch.randn(2, 4, 8)
    labels = torch.tensor([[IGNORE, IGNORE, 3, 4], [IGNORE, 2, 3, 4]])  # loss positions: row 0: 1, 2; row 1: 0-2
    assert torch.allclose(cosine.example_losses([state, state], [state, state], labels), torch.zeros(2), atol=1e-6)
    opposite = -state
    opposite[0, 0] = state[0, 0]  # a prompt position of row 0 agreeing changes nothing
    losses = cosine.example_losses([state, state], [opposite, state], labels)
    assert torch.allclose(losses, torch.tensor([2.0, 2.0]), atol=1e-5)  # 2 · mean(2 on layer 0, 0 on layer 1)


# ----------------------------------------------------------------------------------------------------------------------
# Through train-student


@pytest.fixture(scope="module")
def records(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [
        {"problem_id": f"p{i}", "question": f"What is {i} plus {i + 3}?", "rationale": f"{i} + {i + 3} = {2 * i + 3}.",
         "answer": str(2 * i + 3), "answer_type": "number"}
        for i in range(8)
    ]  # fmt: skip
    return write_jsonl(tmp_path_factory.mktemp("records") / "teach.jsonl", rows)


def test_hidden_cosine_is_refused_when_widths_differ(records: Path, tmp_path: Path) -> None:
    teacher, _ = tiny(tmp_path / "teacher", layers=4, hidden=64)
    student, _ = tiny(tmp_path / "student", layers=2, hidden=32)
    out = tmp_path / "out"
    code, output = invoke(
        "train-student", records, "--method", "finetune-cot", "--student", student, "--teacher", teacher,
        "--hidden-cosine", "1", "--max-steps", "1", "--out", out,
    )  # fmt: skip
    assert code == 2, output
    assert "--hidden-cosine: the student's hidden size 32 and the teacher's 64 differ" in output
    assert len(output.strip().splitlines()) == 1 and not out.exists()


def test_train_a_student_built_from_the_teacher_with_hidden_cosine(records: Path, tmp_path: Path) -> None:
    """--student naming the teacher: a 2-layer student from layers 0 and 2, LoRA on it, its base kept."""
    teacher, model = tiny(tmp_path / "teacher", layers=4, seed=1)
    out = tmp_path / "out"
    output = invoke_ok(
        "train-student", records, "--method", "finetune-cot", "--student", teacher, "--teacher", teacher,
        "--init-from-teacher", "every-other", "--hidden-cosine", "0.5", "--max-steps", "2", "--batch-size", "4",
        "--lora-r", "4", "--logging-steps", "1", "--out", out,
    )  # fmt: skip
    assert "student built from the teacher (every-other): layers [0, 2] of 4" in output
    info = json.loads((out / "student.json").read_text())
    assert info["base"] == str((out / "base").resolve())  # not the teacher's folder: the cut student's weights
    from transformers import AutoModelForCausalLM

    base = AutoModelForCausalLM.from_pretrained(out / "base")
    assert base.config.num_hidden_layers == 2 and same(base.model.layers[1], model.model.layers[2])
    losses = [row["loss"] for row in read_jsonl(out / "metrics.jsonl") if "loss" in row]
    assert len(losses) == 2 and all(loss > 0 for loss in losses)
