"""`train-student --distill`: the recorded teacher distributions reach the student's loss."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import invoke, invoke_ok, read_jsonl, write_jsonl

from cotfactory.run_dir import RunDir
from cotfactory.students.distill_losses import distillation_loss
from cotfactory.students.features import MultitaskCollator, encode_example
from cotfactory.students.methods import MethodSettings, build_examples
from cotfactory.students.records import load_records
from cotfactory.students.teacher_targets import build_teacher_targets, open_distributions

ROOT = Path(__file__).resolve().parent.parent
GSM8K = ROOT / "data" / "gsm8k" / "train_sample.jsonl"


@pytest.fixture(scope="module")
def peaked_teacher(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny LLaMA trained for a few seconds on the tokenizer's sentences: a confident teacher that
    writes text (a random one writes stray bytes, and its near-uniform distribution any student matches)."""
    from tiny_models import CORPUS, build_tiny_llama
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = build_tiny_llama(tmp_path_factory.mktemp("peaked"), seed=3)
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path)
    batch = tokenizer([s + tokenizer.eos_token for s in CORPUS[:3]], return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    torch.manual_seed(0)
    for _ in range(150):
        loss = model(**batch, labels=labels).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def recorded_run(peaked_teacher: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run of the tiny teacher with --logprobs 8, every sample kept as a teaching record (its text as
    the rationale, the gold as answer: a random teacher states no answers of its own)."""
    run = tmp_path_factory.mktemp("distill") / "run"
    invoke_ok(
        "generate", "--input", GSM8K, "--format", "gsm8k", "--limit", "6", "--teacher", "hf", "--model", peaked_teacher,
        "--temperatures", "0.7", "--seeds", "1,2", "--max-tokens", "24", "--logprobs", "8", "--out", run,
    )  # fmt: skip
    rows = read_jsonl(run / "samples.jsonl")
    write_jsonl(RunDir(run).filtered, [{**r, "rationale": r["text"].strip(), "answer": r["gold"]} for r in rows])
    return run


def _kl_to_teacher(model_dir: Path, run: Path) -> float:
    """Mean KL(teacher ‖ student) over the aligned label positions of every example."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir).eval()
    examples = build_examples("finetune-cot", load_records(str(run)), MethodSettings(causal=True))
    features = [encode_example(e, tokenizer, True, {"cot": 0}, 256, 64) for e in examples]
    for index, feature in enumerate(features):
        feature["example_index"] = index
    store, teacher_tokenizer, vocabulary = open_distributions(str(run), tokenizer, align=False)
    with store:
        targets, coverage, k = build_teacher_targets(
            examples, features, store, teacher_tokenizer, tokenizer, vocabulary
        )
    # a random teacher samples many non-canonical token splits, which the student's tokenization of the
    # same text cannot pair; a trained teacher's are mostly canonical (SmolLM2: see BENCHMARKS.md)
    assert coverage.aligned_tokens > 0.2 * coverage.label_tokens
    batch = MultitaskCollator(tokenizer.pad_token_id, True, 0, targets, k)(features)
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    labels = batch["labels"][:, 1:]
    chosen = (labels != -100) & (batch["teacher_ids"][:, 1:] >= 0).any(-1)
    _, parts = distillation_loss(
        "kd",
        logits[chosen],
        labels[chosen],
        batch["teacher_ids"][:, 1:][chosen],
        batch["teacher_logprobs"][:, 1:][chosen],
        batch["teacher_tail"][:, 1:][chosen],
        alpha=1.0,
    )
    return parts["distill"]


def test_kd_moves_the_student_toward_the_teacher(recorded_run: Path, tmp_path: Path) -> None:
    from tiny_models import build_tiny_llama

    student = build_tiny_llama(tmp_path / "student", seed=7)  # same tokenizer, other weights
    before = _kl_to_teacher(student, recorded_run)
    common = ["--method", "finetune-cot", "--student", student, "--lora-r", "0", "--lr", "3e-3", "--max-steps", "30"]
    common += ["--batch-size", "4", "--max-target-length", "64", "--logging-steps", "10"]
    output = invoke_ok("train-student", recorded_run, *common, "--distill", "kd", "--distill-alpha", "0.9", "--out",
                       tmp_path / "kd")  # fmt: skip
    assert re.search(r"teacher distributions \(K=8\): \d+/12 examples, \d+/\d+ label tokens", output)
    invoke_ok("train-student", recorded_run, *common, "--out", tmp_path / "ce")
    after_kd, after_ce = _kl_to_teacher(tmp_path / "kd", recorded_run), _kl_to_teacher(tmp_path / "ce", recorded_run)
    print(f"KL(teacher || student): before {before:.4f}, after kd {after_kd:.4f}, after ce {after_ce:.4f}")
    assert after_kd < 0.7 * before
    assert after_kd < after_ce  # the soft targets teach the distribution, not only the sampled token


@pytest.mark.parametrize("kind", ["slim", "reverse-kl", "jsd"])
def test_every_loss_trains(recorded_run: Path, tiny_llama: Path, tmp_path: Path, kind: str) -> None:
    invoke_ok(
        "train-student", recorded_run, "--method", "finetune-cot", "--student", tiny_llama, "--lora-r", "0",
        "--max-steps", "2", "--batch-size", "4", "--distill", kind, "--beta", "0.3", "--out", tmp_path / kind,
    )  # fmt: skip
    metrics = read_jsonl(tmp_path / kind / "metrics.jsonl")
    assert metrics[-1]["train_loss"] > 0


def test_other_vocabulary_is_refused_unless_aligned(recorded_run: Path, tmp_path: Path) -> None:
    args = ["train-student", recorded_run, "--method", "finetune-cot", "--student", "scratch:t5-tiny"]
    args += ["--max-steps", "1", "--distill", "kd", "--out", tmp_path / "t5"]
    code, output = invoke(*args)
    assert code == 2 and "differ: token-level distillation needs the same vocabulary, or --align" in output
    assert "teacher tokenizer" in output and "student tokenizer" in output
    assert not (tmp_path / "t5").exists()
    output = invoke_ok(*args, "--align")
    assert "teacher distributions (K=8)" in output


def test_distill_without_recorded_distributions_is_refused(tiny_llama: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    invoke_ok(
        "generate", "--input", GSM8K, "--format", "gsm8k", "--limit", "2", "--teacher", "hf", "--model", tiny_llama,
        "--max-tokens", "8", "--out", run,
    )  # fmt: skip
    rows = read_jsonl(run / "samples.jsonl")
    write_jsonl(RunDir(run).filtered, [{**r, "answer": r["gold"]} for r in rows])
    code, output = invoke(
        "train-student", run, "--method", "finetune-cot", "--student", tiny_llama, "--distill", "kd",
        "--out", tmp_path / "s",
    )  # fmt: skip
    assert code == 2 and "no teacher distributions recorded; run generate with --logprobs K first" in output
    assert not (tmp_path / "s").exists()


def test_in_context_training_with_kd_and_in_context_eval(recorded_run: Path, tiny_llama: Path, tmp_path: Path) -> None:
    """--in-context 2 puts two other examples before each source (with any loss); eval asks the same
    way by default, and --in-context 0 asks without demonstrations."""
    out = tmp_path / "icl"
    plain = invoke_ok(
        "train-student", recorded_run, "--method", "finetune-cot", "--student", tiny_llama, "--lora-r", "0",
        "--max-steps", "2", "--batch-size", "4", "--max-target-length", "64", "--out", tmp_path / "plain",
    )  # fmt: skip
    shots = invoke_ok(
        "train-student", recorded_run, "--method", "finetune-cot", "--student", tiny_llama, "--lora-r", "0",
        "--max-steps", "2", "--batch-size", "4", "--distill", "kd", "--in-context", "2", "--max-source-length", "400",
        "--max-target-length", "64", "--out", out,
    )  # fmt: skip
    longest = [int(re.search(r"longest source (\d+)", text).group(1)) for text in (plain, shots)]  # source tokens
    assert longest[1] > 2 * longest[0]
    test_file = ROOT / "data" / "gsm8k" / "test_sample.jsonl"
    asked = invoke_ok("eval", out, "--input", test_file, "--format", "gsm8k", "--limit", "2", "--max-new-tokens", "4")
    bare = invoke_ok("eval", out, "--input", test_file, "--format", "gsm8k", "--limit", "2", "--max-new-tokens", "4",
                     "--in-context", "0", "--out", tmp_path / "bare.jsonl")  # fmt: skip
    assert "accuracy" in asked and "accuracy" in bare


def test_an_edited_teacher_text_is_paired_by_the_edit_distance_alignment(recorded_run: Path, tmp_path: Path) -> None:
    """A target holding the teacher's text with its whitespace rewritten is not found verbatim: its
    tokens are paired by dp_align instead, and still mostly."""
    from transformers import AutoTokenizer

    from cotfactory.store import Store
    from cotfactory.students.methods.base import TrainingExample

    tokenizer = AutoTokenizer.from_pretrained(recorded_run / "teacher_tokenizer")
    with Store.in_run(recorded_run) as store:
        texts = {
            key: tokenizer.decode(d.token_ids.tolist(), skip_special_tokens=True) for key, d in store.distributions()
        }
    texts = {key: text for key, text in texts.items() if len(text.split()) > 4}
    assert texts

    def coverage(edit: Any) -> int:
        examples = [TrainingExample("cot", "Q ###", " " + edit(text), sample_key=key) for key, text in texts.items()]
        features = [encode_example(e, tokenizer, True, {"cot": 0}, 64, 128) for e in examples]
        store, teacher_tokenizer, vocabulary = open_distributions(str(recorded_run), tokenizer, align=False)
        with store:
            _, found, _ = build_teacher_targets(examples, features, store, teacher_tokenizer, tokenizer, vocabulary)
        return found.aligned_tokens

    verbatim = coverage(lambda text: text.strip())
    edited = coverage(lambda text: "  ".join(text.split()))  # every blank doubled: nowhere verbatim
    assert verbatim > 0 and edited > 0.3 * verbatim


def test_a_short_reply_ending_in_eos_keeps_its_teacher(tiny_llama: Path, tmp_path: Path) -> None:
    """A reply shorter than the lookup anchor, recorded with the EOS that ended it, is still placed:
    the EOS is in no target text and is left out of the lookup."""
    from helpers import make_sample
    from transformers import AutoTokenizer

    from cotfactory.distributions import TokenDistributions
    from cotfactory.store import Store
    from cotfactory.students.methods.base import TrainingExample

    tokenizer = AutoTokenizer.from_pretrained(tiny_llama)
    ids = tokenizer("So 7.", add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    k = 3
    recorded = TokenDistributions.build(ids, [-0.1] * len(ids), [[i, 0, 1] for i in ids], [[-0.1, -3, -4]] * len(ids))
    sample = make_sample("7", "So 7.", distributions=recorded)
    run = RunDir(tmp_path / "run")
    run.path.mkdir()
    tokenizer.save_pretrained(run.teacher_tokenizer)
    with Store(run.store) as store:
        store.add_samples([sample])
    example = TrainingExample("cot", "Q ###", " So 7. --> 7", sample_key=sample.key)
    feature = encode_example(example, tokenizer, True, {"cot": 0}, 64, 64)
    store, teacher_tokenizer, vocabulary = open_distributions(str(run.path), tokenizer, align=False)
    with store:
        targets, coverage, found_k = build_teacher_targets(
            [example], [feature], store, teacher_tokenizer, tokenizer, vocabulary
        )
    assert found_k == k and coverage.with_teacher == 1
    placed = targets[0]
    assert placed is not None and len(placed.positions) >= len(ids) - 2  # all but the first (" So" vs "So") and EOS
    assert [feature["labels"][p] for p in placed.positions] == placed.ids[:, 0].tolist()  # each the teacher's top-1
