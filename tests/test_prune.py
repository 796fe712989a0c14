"""`cotfactory prune`: activation importance, slicing a LLaMA (GQA included), the checkpoint and the command."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import invoke, write_jsonl
from tiny_models import CORPUS, build_tiny_llama

from cotfactory.students.importance import calibration_batches, collect_importance
from cotfactory.students.prune import (
    PrunePlan,
    Shape,
    apply_plan,
    depth_plan,
    evenly_spaced_plan,
    parameter_count,
    prune_in_memory,
    random_width_plan,
    read_calibration,
    save_pruned,
    width_plan,
)

VOCAB = 97


def tiny(layers: int = 4, heads: int = 6, kv_heads: int = 2, seed: int = 0) -> torch.nn.Module:
    """A random LLaMA in memory: 48 wide, GQA with heads / kv_heads query heads per group, tied embeddings."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=48,
        intermediate_size=96,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=True,
    )
    torch.manual_seed(seed)
    return LlamaForCausalLM(config).eval()


def random_ids(count: int = 12, seed: int = 1) -> list[list[int]]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (int(n),), generator=generator).tolist() for n in range(5, 5 + count)]


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


@pytest.fixture(scope="module")
def tiny_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 4-layer tiny LLaMA folder with a tokenizer (4 query heads in 2 KV groups)."""
    return build_tiny_llama(tmp_path_factory.mktemp("prune-teacher"), hidden=48, layers=4)


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rows = [{"question": f"Question {i}?", "text": CORPUS[i % len(CORPUS)]} for i in range(10)]
    return write_jsonl(tmp_path_factory.mktemp("calibration") / "calibration.jsonl", rows)


# --------------------------------------------------------------------------------------------- importance


def test_a_block_that_is_the_identity_is_least_important_and_dropping_it_changes_nothing() -> None:
    model = tiny()
    layer = model.model.layers[2]
    with torch.no_grad():  # attention and MLP add nothing to the residual stream: the block is the identity
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
    importance = collect_importance(model, calibration_batches(random_ids(), batch_size=4))

    assert int(importance.blocks.argmin()) == 2
    assert abs(float(importance.blocks[2])) < 1e-5 < float(importance.blocks.sort().values[1])
    plan = depth_plan(Shape.of(model.config), importance, keep=3)
    assert plan.layers == [0, 1, 3]
    ids = torch.tensor([random_ids(1, seed=7)[0]])
    assert torch.allclose(logits(apply_plan(model, plan), ids), logits(model, ids), atol=1e-5)


def test_importance_counts_real_tokens_only() -> None:
    """Padding changes no score: the same samples alone or padded in one batch score the same."""
    model = tiny()
    ids = random_ids(6)
    alone = collect_importance(model, calibration_batches(ids, batch_size=1))
    padded = collect_importance(model, calibration_batches(ids, batch_size=6))
    assert alone.tokens == padded.tokens == sum(map(len, ids))
    for name in ("blocks", "heads", "neurons", "channels"):
        assert torch.allclose(getattr(alone, name), getattr(padded, name), rtol=1e-4, atol=1e-6), name


def test_evenly_spaced_baseline_is_every_other_layer_for_half() -> None:
    shape = Shape(layers=30, hidden=576, intermediate=1536, heads=9, kv_heads=3, head_dim=64)
    assert evenly_spaced_plan(shape, 15).layers == list(range(0, 30, 2))
    assert len(evenly_spaced_plan(shape, 11).layers) == 11


# --------------------------------------------------------------------------------------------- slicing


@pytest.mark.parametrize("ratio", [0.3, 0.5, 0.75])
def test_width_keeps_the_share_of_parameters_asked(ratio: float) -> None:
    model = tiny()
    importance = collect_importance(model, calibration_batches(random_ids(), batch_size=4))
    pruned = apply_plan(model, width_plan(model, importance, ratio))

    before = sum(p.numel() for p in model.parameters())
    after = sum(p.numel() for p in pruned.parameters())  # tied lm_head counted once
    assert after == parameter_count(pruned)
    assert abs(after / before - ratio) < 0.01, after / before
    assert pruned.config.num_key_value_heads == 2 and pruned.config.num_attention_heads % 2 == 0
    assert pruned.lm_head.weight.data_ptr() == pruned.model.embed_tokens.weight.data_ptr()  # still tied


def test_query_heads_are_cut_within_their_kv_group() -> None:
    """Cutting heads and neurons equals zeroing their o_proj / down_proj columns in the teacher — which
    holds only if every kept query head still reads its own group's K/V."""
    model = tiny(layers=2, heads=6, kv_heads=2)  # groups: heads 0-2 → KV 0, heads 3-5 → KV 1
    importance = collect_importance(model, calibration_batches(random_ids(), batch_size=4))
    importance.heads[:] = torch.tensor([[5.0, 1.0, 4.0, 0.5, 3.0, 2.0], [0.1, 0.2, 0.3, 9.0, 8.0, 7.0]])
    plan = width_plan(model, importance, 0.5)
    assert plan.heads == [[0, 2, 4, 5], [1, 2, 3, 4]]  # the best 2 of each group, never 4 from one group

    shape = Shape.of(model.config)
    cut = PrunePlan(layers=[0, 1], channels=list(range(48)), heads=plan.heads, neurons=[list(range(0, 96, 2))] * 2)
    reference = tiny(layers=2, heads=6, kv_heads=2)
    with torch.no_grad():
        for layer, heads in zip(reference.model.layers, cut.heads, strict=True):
            for head in set(range(6)) - set(heads):
                layer.self_attn.o_proj.weight[:, head * shape.head_dim : (head + 1) * shape.head_dim] = 0
            layer.mlp.down_proj.weight[:, 1::2] = 0
    ids = torch.tensor([random_ids(1, seed=3)[0]])
    assert torch.allclose(logits(apply_plan(model, cut), ids), logits(reference, ids), atol=1e-5)


def test_random_width_baseline_has_the_same_shape() -> None:
    model = tiny()
    importance = collect_importance(model, calibration_batches(random_ids(), batch_size=4))
    ranked, drawn = width_plan(model, importance, 0.5), random_width_plan(model, 0.5, seed=1)
    assert drawn.how == "random" and drawn.sizes(8) == ranked.sizes(8)
    assert parameter_count(apply_plan(model, drawn)) == parameter_count(apply_plan(model, ranked))


# --------------------------------------------------------------------------------------------- checkpoint


def test_pruned_checkpoint_reloads_with_plain_transformers_and_the_same_logits(tiny_folder: Path, tmp_path) -> None:  # noqa: ANN001
    from transformers import AutoModelForCausalLM, AutoTokenizer

    teacher = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_folder)
    result = prune_in_memory(teacher, tokenizer, CORPUS, width=0.5, batch_size=2)
    save_pruned(result.model, tokenizer, result.record(), tmp_path / "student")

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "student").eval()
    ids = tokenizer(CORPUS[0], return_tensors="pt").input_ids
    assert torch.allclose(logits(reloaded, ids), logits(result.model, ids), atol=1e-6)
    assert reloaded.config.hidden_size == len(result.plan.channels) < teacher.config.hidden_size
    assert teacher.config.hidden_size == 48  # the teacher itself is untouched
    assert (tmp_path / "student" / "tokenizer.json").is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary folder left


# --------------------------------------------------------------------------------------------- calibration


def test_calibration_from_a_run_directory_a_jsonl_and_a_text_file(tmp_path) -> None:  # noqa: ANN001
    run = tmp_path / "run"
    write_jsonl(
        run / "samples.jsonl",
        [
            {"question": "What is 2+3?", "text": "2 + 3 = 5. The answer is 5.", "error": None},
            {"question": "What is 1+1?", "text": "", "error": "timeout"},
        ],
    )
    assert read_calibration(run) == ["What is 2+3?\n2 + 3 = 5. The answer is 5."]
    jsonl = write_jsonl(tmp_path / "c.jsonl", ["plain line", {"prompt": "P", "text": "T"}])
    assert read_calibration(jsonl) == ["plain line", "P\nT"]
    text = tmp_path / "c.txt"
    text.write_text("first passage\nstill first\n\nsecond\n", encoding="utf-8")
    assert read_calibration(text) == ["first passage\nstill first", "second"]


# --------------------------------------------------------------------------------------------- the command


def test_cli_prunes_depth_and_the_checkpoint_matches_the_in_memory_cut(
    tiny_folder: Path,
    calibration_file: Path,
    tmp_path,  # noqa: ANN001
) -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "pruned"
    code, output = invoke(
        "prune", "--teacher", tiny_folder, "--calibration", calibration_file, "--depth", "2", "--out", out
    )
    assert code == 0, output
    assert "layers 4→2" in output
    record = json.loads((out / "prune.json").read_text())
    assert record["calibration_samples"] == 10 and len(record["kept"]["layers"]) == 2
    assert record["params_after"] < record["params_before"]
    assert set(record["estimators"]) >= {"blocks", "heads", "neurons", "channels", "gqa"}

    student = AutoModelForCausalLM.from_pretrained(out).eval()
    teacher = AutoModelForCausalLM.from_pretrained(tiny_folder).eval()
    tokenizer = AutoTokenizer.from_pretrained(out)
    texts = read_calibration(calibration_file)
    in_memory = prune_in_memory(teacher, tokenizer, texts, depth=2)
    assert in_memory.plan.layers == record["kept"]["layers"]
    ids = tokenizer(CORPUS[1], return_tensors="pt").input_ids
    assert torch.allclose(logits(student, ids), logits(in_memory.model, ids), atol=1e-6)


def test_cli_prunes_width(tiny_folder: Path, calibration_file: Path, tmp_path) -> None:  # noqa: ANN001
    out = tmp_path / "narrow"
    code, output = invoke(
        "prune", "--teacher", tiny_folder, "--calibration", calibration_file, "--width", "0.6", "--out", out
    )
    assert code == 0, output
    record = json.loads((out / "prune.json").read_text())
    assert abs(record["params_kept"] - 0.6) < 0.01
    assert record["student_shape"]["hidden"] == len(record["kept"]["hidden_channels"]) < 48


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--depth", "2", "--width", "0.5"], "--depth"),
        ([], "--depth"),
        (["--width", "1.5"], "width"),
        (["--depth", "0"], "depth"),
        (["--depth", "9"], "--depth 9"),
        (["--depth", "2", "--calibration", "missing.jsonl"], "--calibration"),
        (["--depth", "2", "--teacher", "./no-such-model"], "--teacher"),
        (["--depth", "2", "--samples", "0"], "samples"),
        (["--depth", "2", "--calibration", "BAD"], "bad.jsonl:2"),
        (["--depth", "2", "--out", "FULL"], "--out"),
    ],
)
def test_bad_flags_exit_2_with_one_line_and_write_nothing(
    args: list[str],
    named: str,
    tiny_folder: Path,
    calibration_file: Path,
    tmp_path,  # noqa: ANN001
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"no_text": 1}\n', encoding="utf-8")
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("mine", encoding="utf-8")
    defaults = {"--teacher": str(tiny_folder), "--calibration": str(calibration_file), "--out": str(tmp_path / "o")}
    replace = {"BAD": str(bad), "FULL": str(full)}
    args = [replace.get(arg, arg) for arg in args]
    for flag, value in defaults.items():
        if flag not in args:
            args += [flag, value]

    code, output = invoke("prune", *args)
    assert code == 2, output
    assert len(output.strip().splitlines()) == 1, output
    assert named in output, output
    assert not (tmp_path / "o").exists()
    assert [p.name for p in full.iterdir()] == ["keep.txt"]


@pytest.mark.parametrize("ratio", [0.45, 0.48, 0.5, 0.53, 0.6])
def test_width_cut_of_a_smollm2_shape_keeps_the_hidden_size_a_multiple_of_the_heads(ratio: float) -> None:
    """transformers refuses to save a config whose hidden size is not a multiple of its attention heads:
    `prune --width 0.5` on SmolLM2 (hidden 576, 9 heads in 3 KV groups) once cut hidden to 383 with 6 heads."""
    from transformers import LlamaConfig, LlamaForCausalLM

    from cotfactory.students.prune import parameter_count, width_sizes

    config = LlamaConfig(
        vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
        num_attention_heads=9, num_key_value_heads=3, head_dim=64, tie_word_embeddings=True,
    )  # fmt: skip
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    sizes = width_sizes(model, ratio)
    heads = sizes["query"] // 64
    assert sizes["hidden"] % heads == 0
    assert parameter_count(model, sizes=sizes) / parameter_count(model) == pytest.approx(ratio, abs=0.005)
    cut = LlamaConfig(**{**config.to_dict(), "hidden_size": sizes["hidden"], "num_attention_heads": heads})
    cut.validate()
