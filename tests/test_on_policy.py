"""`train-student --distill gkd`: generalized JSD on full logits, the student's own completions, resume, LoRA."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import invoke, invoke_ok, read_jsonl, write_jsonl

from cotfactory.students.distill_losses import generalized_jsd
from cotfactory.students.features import IGNORE
from cotfactory.students.on_policy import (
    OnPolicy,
    cut_after_eos,
    gkd_example_losses,
    on_policy_batch,
    prompt_lengths,
)

# ----------------------------------------------------------------------------------------------------------------------
# The loss against a slow reference


def reference_jsd(student: list[float], teacher: list[float], beta: float, temperature: float) -> float:
    """GKD's Eq. 1 in TRL's convention, by explicit sums: p teacher, q student, m = β·p + (1 − β)·q,
    β·KL(p ‖ m) + (1 − β)·KL(q ‖ m); β = 0 → KL(p ‖ q), β = 1 → KL(q ‖ p)."""

    def softmax(logits: list[float]) -> list[float]:
        top = max(logits)
        weights = [math.exp((z - top) / temperature) for z in logits]
        return [w / sum(weights) for w in weights]

    def kl(a: list[float], b: list[float]) -> float:
        return sum(ai * math.log(ai / bi) for ai, bi in zip(a, b, strict=True) if ai > 0)

    p, q = softmax(teacher), softmax(student)
    if beta == 0:
        return kl(p, q)
    if beta == 1:
        return kl(q, p)
    m = [beta * pi + (1 - beta) * qi for pi, qi in zip(p, q, strict=True)]
    return beta * kl(p, m) + (1 - beta) * kl(q, m)


@pytest.mark.parametrize("temperature", [1.0, 2.0])
@pytest.mark.parametrize("beta", [0.0, 0.5, 1.0])
def test_generalized_jsd_equals_the_slow_reference(beta: float, temperature: float) -> None:
    gen = torch.Generator().manual_seed(int(beta * 10 + temperature))
    student = torch.randn(5, 11, generator=gen, dtype=torch.float64) * 2
    teacher = torch.randn(5, 11, generator=gen, dtype=torch.float64) * 3
    fast = generalized_jsd(student, teacher, beta, temperature)
    slow = [reference_jsd(s, t, beta, temperature) for s, t in zip(student.tolist(), teacher.tolist(), strict=True)]
    assert fast.tolist() == pytest.approx(slow, rel=1e-5, abs=1e-6)
    assert generalized_jsd(teacher, teacher, beta, temperature).abs().max() < 1e-6  # 0 when the student is the teacher


def test_beta_direction_forward_kl_at_0_reverse_kl_at_1() -> None:
    """β = 0 is KL(teacher ‖ student), β = 1 KL(student ‖ teacher), as torch.distributions computes them."""
    from torch.distributions import Categorical, kl_divergence

    gen = torch.Generator().manual_seed(1)
    student, teacher = torch.randn(4, 9, generator=gen), torch.randn(4, 9, generator=gen)
    p, q = Categorical(logits=teacher), Categorical(logits=student)
    assert torch.allclose(generalized_jsd(student, teacher, 0.0), kl_divergence(p, q), atol=1e-6)
    assert torch.allclose(generalized_jsd(student, teacher, 1.0), kl_divergence(q, p), atol=1e-6)


@pytest.mark.parametrize("beta", [0.0, 0.3, 1.0])
def test_generalized_jsd_equals_trl(beta: float) -> None:
    """Same values as TRL's GKDTrainer.generalized_jsd_loss (when trl is installed)."""
    gkd = pytest.importorskip("trl.experimental.gkd.gkd_trainer")
    gen = torch.Generator().manual_seed(2)
    student, teacher = torch.randn(2, 3, 13, generator=gen), torch.randn(2, 3, 13, generator=gen)
    labels = torch.tensor([[5, IGNORE, 7], [1, 2, 3]])
    theirs = gkd.GKDTrainer.generalized_jsd_loss(student, teacher, labels=labels, beta=beta, temperature=1.5)
    chosen = labels != IGNORE
    ours = generalized_jsd(student[chosen], teacher[chosen], beta, 1.5).mean()
    assert float(ours) == pytest.approx(float(theirs), rel=1e-5)


def test_gkd_example_losses_read_completion_tokens_only() -> None:
    """Per example: the mean JSD over the positions predicting a label; prompt logits change nothing."""
    gen = torch.Generator().manual_seed(3)
    student, teacher = torch.randn(2, 6, 10, generator=gen), torch.randn(2, 6, 10, generator=gen)
    labels = torch.tensor([[IGNORE, IGNORE, IGNORE, 4, 5, IGNORE], [IGNORE, 1, 2, 3, 4, 5]])
    settings = OnPolicy(beta=0.5)
    losses = gkd_example_losses(student, teacher, labels, settings)
    for row, positions in ((0, [2, 3]), (1, [0, 1, 2, 3, 4])):
        expected = generalized_jsd(student[row, positions], teacher[row, positions], 0.5).mean()
        assert float(losses[row]) == pytest.approx(float(expected), rel=1e-6)
    changed = student.clone()
    changed[0, :2] += 5.0  # prompt positions of row 0
    assert torch.equal(gkd_example_losses(changed, teacher, labels, settings), losses)


# ----------------------------------------------------------------------------------------------------------------------
# The student's own completions


def test_coins_and_sampling_seeds_are_functions_of_seed_and_step() -> None:
    settings = OnPolicy(lmbda=0.3, seed=5)
    coins = [settings.draws_on_policy(step, micro) for step in range(400) for micro in range(2)]
    assert coins == [OnPolicy(lmbda=0.3, seed=5).draws_on_policy(s, m) for s in range(400) for m in range(2)]
    assert 0.25 < sum(coins) / len(coins) < 0.35
    assert not any(OnPolicy(lmbda=0.0).draws_on_policy(s, 0) for s in range(50))
    assert all(OnPolicy(lmbda=1.0).draws_on_policy(s, 0) for s in range(50))
    assert settings.sampling_seed(3, 0) != settings.sampling_seed(3, 1) != settings.sampling_seed(4, 0)


def test_on_policy_batch_keeps_prompts_and_labels_the_sampled_completion(tiny_llama: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_llama).train()
    ids = torch.tensor([[5, 6, 7, 8, 9, 0, 0], [10, 11, 12, 13, 14, 15, 16]])
    labels = torch.tensor([[IGNORE, IGNORE, 7, 8, 9, IGNORE, IGNORE], [IGNORE] * 4 + [14, 15, 16]])
    batch = {"input_ids": ids, "attention_mask": (ids != 0).long(), "labels": labels, "task_ids": torch.tensor([0, 1])}
    settings = OnPolicy(max_new_tokens=6, sample_temperature=1.0)
    assert prompt_lengths(labels, batch["attention_mask"]) == [2, 4]
    rng_before = torch.get_rng_state()
    new = on_policy_batch(model, batch, settings, seed=11, pad_id=0, eos_ids=[2])
    assert torch.equal(torch.get_rng_state(), rng_before)  # the global RNG (dropout, shuffling) is untouched
    assert model.training  # back in training mode after sampling in eval mode
    again = on_policy_batch(model, batch, settings, seed=11, pad_id=0, eos_ids=[2])
    assert all(torch.equal(new[k], again[k]) for k in ("input_ids", "attention_mask", "labels"))
    assert torch.equal(new["task_ids"], batch["task_ids"])
    for row, prompt in enumerate((2, 4)):
        length = int(new["attention_mask"][row].sum())
        assert torch.equal(new["input_ids"][row, :prompt], ids[row, :prompt])  # prompt first, from position 0
        assert (new["labels"][row, :prompt] == IGNORE).all() and (new["labels"][row, length:] == IGNORE).all()
        completion = new["input_ids"][row, prompt:length]
        assert torch.equal(new["labels"][row, prompt:length], completion)
        assert 1 <= len(completion) <= 6 and not (completion[:-1] == 2).any()  # cut after the first EOS
    other = on_policy_batch(model, batch, settings, seed=12, pad_id=0, eos_ids=[2])
    assert not torch.equal(other["input_ids"], new["input_ids"])


def test_cut_after_eos_keeps_the_eos() -> None:
    assert cut_after_eos(torch.tensor([4, 5, 2, 0, 0]), [2]).tolist() == [4, 5, 2]
    assert cut_after_eos(torch.tensor([4, 5, 6]), [2, 9]).tolist() == [4, 5, 6]
    assert cut_after_eos(torch.tensor([9, 2]), [2, 9]).tolist() == [9]


# ----------------------------------------------------------------------------------------------------------------------
# train-student --distill gkd


@pytest.fixture(scope="module")
def gkd_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(teaching records, a 3-layer teacher, a 2-layer student): tiny LLaMAs sharing one tokenizer."""
    from tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("gkd")
    rows = [
        {"problem_id": f"p{i}", "question": f"What is {i} plus {i + 3}?", "rationale": f"{i} + {i + 3} = {2 * i + 3}.",
         "answer": str(2 * i + 3), "answer_type": "number"}
        for i in range(16)
    ]  # fmt: skip
    data = write_jsonl(root / "teach.jsonl", rows)
    return data, build_tiny_llama(root / "teacher", seed=1, layers=3), build_tiny_llama(root / "student", seed=2)


def _gkd_args(models: tuple[Path, Path, Path], out: Path, *extra: str) -> list[str | Path]:
    data, teacher, student = models
    return [
        "train-student", data, "--method", "finetune-cot", "--student", student, "--teacher", teacher,
        "--distill", "gkd", "--batch-size", "4", "--max-target-length", "16", "--on-policy-tokens", "8",
        "--logging-steps", "1", "--lr", "3e-3", "--out", out, *extra,
    ]  # fmt: skip


def test_resumed_gkd_run_equals_the_uninterrupted_run(gkd_models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    """λ = 0.5, seed 3: steps 0-2 draw on, on, on and steps 3-5 off, on, off. A run stopped after its step-3
    checkpoint and resumed ends with the same weights and logs the same losses, bit for bit on CPU."""
    settings = OnPolicy(lmbda=0.5, seed=3)
    assert [settings.draws_on_policy(step, 0) for step in range(6)] == [True, True, True, False, True, False]
    steps = ("--lora-r", "0", "--lmbda", "0.5", "--seed", "3", "--max-steps", "6", "--save-steps", "3")
    reference = tmp_path / "reference"
    invoke_ok(*_gkd_args(gkd_models, reference, *steps))

    resumed = tmp_path / "resumed"  # as a kill after the step-3 checkpoint leaves it
    shutil.copytree(reference, resumed)
    shutil.rmtree(resumed / "checkpoints" / "checkpoint-6")
    for name in ("model.safetensors", "student.json"):
        (resumed / name).unlink()
    invoke_ok(*_gkd_args(gkd_models, resumed, *steps, "--resume"))

    from safetensors.torch import load_file

    mine, theirs = load_file(resumed / "model.safetensors"), load_file(reference / "model.safetensors")
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)

    def losses(folder: Path) -> list[tuple[int, float, float]]:
        rows = read_jsonl(folder / "metrics.jsonl")
        return [(row["step"], row["loss"], row["on_policy"]) for row in rows if "loss" in row]

    assert losses(resumed) == losses(reference)
    assert [shared for _, _, shared in losses(reference)] == [1.0, 1.0, 1.0, 0.0, 1.0, 0.0]


def test_gkd_with_lora_trains_the_adapter_only(gkd_models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    from safetensors.torch import load_file

    out = tmp_path / "lora"
    invoke_ok(*_gkd_args(gkd_models, out, "--lora-r", "4", "--lmbda", "1", "--beta", "1", "--max-steps", "3"))
    adapter = load_file(out / "adapter_model.safetensors")
    lora_b = [tensor for name, tensor in adapter.items() if "lora_B" in name]
    assert lora_b and any(tensor.abs().sum() > 0 for tensor in lora_b)  # B starts at zero: it was trained
    base = gkd_models[2]
    info = json.loads((out / "student.json").read_text())
    assert info["adapter"] and info["base"] == str(base) and info["config"]["distill"] == "gkd"
    rows = [row for row in read_jsonl(out / "metrics.jsonl") if "loss" in row]
    assert [row["on_policy"] for row in rows] == [1.0, 1.0, 1.0]
    assert all(math.isfinite(row["loss"]) and row["loss"] > 0 for row in rows)


def test_another_vocabulary_is_refused_before_training(gkd_models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, teacher, _ = gkd_models
    out = tmp_path / "byt5"
    code, output = invoke(
        "train-student", data, "--method", "finetune-cot", "--student", "scratch:llama-tiny", "--teacher", teacher,
        "--distill", "gkd", "--max-steps", "1", "--out", out,
    )  # fmt: skip
    assert code == 2, output
    assert "differ: a live teacher reads the student's token ids" in output
    assert len(output.strip().splitlines()) == 1 and not out.exists()


def test_gkd_needs_a_teacher_and_a_teacher_needs_a_use(gkd_models: tuple[Path, Path, Path], tmp_path: Path) -> None:
    data, teacher, student = gkd_models
    common = ["train-student", data, "--method", "finetune-cot", "--student", student, "--out", tmp_path / "s"]
    code, output = invoke(*common, "--distill", "gkd")
    assert code == 2 and "--distill gkd needs --teacher" in output
    code, output = invoke(*common, "--teacher", teacher, "--distill", "kd")
    assert code == 2 and "--teacher is only used by" in output
    code, output = invoke(*common, "--teacher", teacher, "--distill", "gkd", "--align")
    assert code == 2 and "--align does not apply" in output
