"""Training across processes: ``torchrun --nproc_per_node 2`` (DDP over gloo, on CPU) trains the student
one process trains with a twice larger ``--batch-size`` — the same per-step losses (the Trainer's logged
loss is the mean over the ranks), the same weights, each rank a share of the same global order — and
only rank 0 writes the student folder. With a live teacher (gkd, the hidden cosine) rank 0 alone reads its
weights and scores both ranks' batches (cotfactory.students.shared_teacher), to the same effect.

Equal means up to float summation order: dropout is off (``--lora-dropout 0``, models without dropout),
since every rank would draw the same dropout masks for other examples than one process does.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from helpers import invoke_ok, read_jsonl, write_jsonl

from cotfactory.students.features import MultitaskCollator
from cotfactory.students.trainer import FILLER, GlobalOrderSampler, multitask_loss, multitask_loss_across

ROOT = Path(__file__).resolve().parent.parent
ENTRY = Path(__file__).resolve().parent / "ddp_entry.py"
# 17 records × 2 tasks (step-by-step: label and rationale) = 34 examples; a global batch of 4 leaves 2 for
# the last batch of an epoch: rank 0 takes them, rank 1 two fillers; 10 steps cross into epoch 2
TRAINING = ("--method", "step-by-step", "--max-steps", "10", "--logging-steps", "1", "--save-steps", "5")
TRAINING += ("--lr", "3e-3", "--lora-dropout", "0", "--max-target-length", "48")
WEIGHTS = ("adapter_model.safetensors", "model.safetensors", "base/model.safetensors")


# --------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def teaching(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ddp") / "teach.jsonl"
    rows = [
        {
            "problem_id": f"p{i}",
            "question": f"What is {i} plus {i + 3}?" + " Think." * (i % 6),  # lengths differ: grouping matters
            "rationale": f"{i} + {i + 3} = {2 * i + 3}." + " Done." * (i % 4),
            "answer": str(2 * i + 3),
            "answer_type": "number",
        }
        for i in range(17)
    ]
    write_jsonl(path, rows)
    return path


@pytest.fixture(scope="module")
def tiny_t5(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small random T5 without dropout (scratch:t5-tiny has T5's 0.1), with the byte-level ByT5Tokenizer."""
    from transformers import ByT5Tokenizer, T5Config, T5ForConditionalGeneration

    folder = tmp_path_factory.mktemp("tiny-t5")
    tokenizer = ByT5Tokenizer()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=len(tokenizer),
        d_model=64,
        d_ff=128,
        num_layers=2,
        num_heads=4,
        d_kv=16,
        dropout_rate=0.0,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        decoder_start_token_id=tokenizer.pad_token_id,
    )
    T5ForConditionalGeneration(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def live_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(a 2-layer student, a 3-layer live teacher): tiny random LLaMAs sharing one tokenizer."""
    from tiny_models import build_tiny_llama

    root = tmp_path_factory.mktemp("live")
    return build_tiny_llama(root / "student", seed=2), build_tiny_llama(root / "teacher", seed=1, layers=3)


def _student(name: str, tiny_t5: Path) -> str:
    return str(tiny_t5) if name == "t5" else "scratch:llama-tiny"  # LLaMA has no dropout


# --------------------------------------------------------------------------------------------- running


def _torchrun(*args: str | Path, entry: tuple[str, ...] = ("-m", "cotfactory"), batches: Path | None = None) -> str:
    """``torchrun --standalone --nproc_per_node 2 ENTRY ARGS`` on CPU: its output (it must exit 0)."""
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false", CUDA_VISIBLE_DEVICES="")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if batches is not None:
        batches.mkdir(parents=True)
        env["COTFACTORY_TEST_BATCHES"] = str(batches)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *entry]
    done = subprocess.run(
        [*command, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    return output


def _recorded_torchrun(*args: str | Path, batches: Path) -> str:
    return _torchrun(*args, entry=(str(ENTRY),), batches=batches)


def _one_process(monkeypatch: pytest.MonkeyPatch, *args: str | Path, batches: Path) -> str:
    """``cotfactory ARGS`` in this process, its batches recorded like ddp_entry's."""
    from ddp_entry import record_batches

    monkeypatch.setattr(MultitaskCollator, "__call__", MultitaskCollator.__call__)  # restored after the test
    batches.mkdir(parents=True)
    record_batches(batches, "0")
    return invoke_ok(*args)


def _train(data: Path, student: str, out: Path, *extra: str | Path) -> list[str | Path]:
    return ["train-student", data, "--student", student, "--out", out, *TRAINING, *extra]


# --------------------------------------------------------------------------------------------- comparing


def _logged(out: Path) -> list[dict[str, Any]]:
    """metrics.jsonl's step logs: step, loss, per-task losses, grad_norm (not the timing summary)."""
    return [m for m in read_jsonl(out / "metrics.jsonl") if "loss" in m]


def _assert_same_training(one: Path, two: Path) -> None:
    """Same logs step by step, same weights, same files: ``two`` (torchrun) against ``one`` (one process)."""
    from safetensors.torch import load_file

    logged, reference = _logged(two), _logged(one)
    assert [m["step"] for m in logged] == [m["step"] for m in reference] and len(logged) == 10
    for row, expected in zip(logged, reference, strict=True):
        assert set(row) == set(expected)
        for key in ("loss", "grad_norm", *(k for k in expected if k.startswith("loss_"))):
            assert row[key] == pytest.approx(expected[key], rel=1e-4, abs=1e-6), (row["step"], key)
    compared = 0
    for name in WEIGHTS:
        if (one / name).exists():
            ours, theirs = load_file(two / name), load_file(one / name)
            assert ours.keys() == theirs.keys()
            for key, tensor in theirs.items():
                # Adam divides each gradient by its running size: where a gradient is ~0 (a cross-attention
                # query late in a tiny T5), float-order noise moves the weight by a fraction of lr (3e-3)
                assert torch.allclose(ours[key], tensor, rtol=1e-4, atol=1e-4), (name, key)
            compared += 1
    assert compared
    assert _files(two) == _files(one)  # rank 1 wrote nothing of its own (but its RNG state in checkpoints)
    info, expected_info = (json.loads((folder / "student.json").read_text()) for folder in (two, one))
    for value in (info, expected_info):
        for key in ("out", "batch_size", "grad_accum", "resume"):
            del value["config"][key]
        del value["base"]
    assert info == expected_info
    assert (two / "examples.jsonl").read_text() == (one / "examples.jsonl").read_text()


def _teacher_loads(folder: Path, teacher: Path) -> dict[int, int]:
    """How many times each rank read the teacher's weights (ddp_entry's loads-rank{N}.jsonl)."""
    loads = {}
    for rank in (0, 1):
        path = folder / f"loads-rank{rank}.jsonl"
        read = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        loads[rank] = read.count(str(teacher))
    return loads


def _files(folder: Path) -> list[str]:
    """Every file in ``folder``, each rank's RNG state in a checkpoint as one process's."""
    names = {str(p.relative_to(folder)).replace("rng_state_0.pth", "rng_state.pth") for p in folder.rglob("*")}
    return sorted(name for name in names if not name.endswith("rng_state_1.pth"))


def _batches(folder: Path, rank: int) -> list[list[int | None]]:
    return [json.loads(line) for line in (folder / f"rank{rank}.jsonl").read_text().splitlines()]


def _assert_shares_of_one_order(one: Path, two: Path, filled: bool = True) -> None:
    """The ranks' batches, k-th with k-th, fillers left out, are one process's batches, in order; fillers
    where an epoch's last batch does not divide among the ranks (``filled``)."""
    single, ranks = _batches(one, 0), [_batches(two, 0), _batches(two, 1)]
    assert len(ranks[0]) == len(ranks[1])
    merged = [[i for i in first + second if i is not None] for first, second in zip(*ranks, strict=True)]
    assert merged == single
    assert any(None in batch for batch in ranks[1]) == filled  # 34 examples, 4 a batch: the last 2 are rank 0's


# --------------------------------------------------------------------------------------------- quick


def test_multitask_loss_across_ranks_is_the_global_batch_loss(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two ranks' shares of a batch with two tasks of unequal counts, the second share with a filler: the
    mean of the ranks' losses and of their gradients are the whole batch's."""
    import torch.distributed as dist

    losses = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0], requires_grad=True)
    tasks, weights = torch.tensor([0, 0, 1, 0, 1]), torch.tensor([0.3, 0.3, 0.7, 0.3, 0.7])
    whole, whole_by_task = multitask_loss(losses, tasks, weights)
    (expected_grad,) = torch.autograd.grad(whole, losses)
    shares = [(slice(0, 3), [0, 0, 1]), (slice(3, 5), [0, 1, FILLER])]
    local_stats: list[torch.Tensor] = []
    monkeypatch.setattr(dist, "all_reduce", lambda stats: local_stats.append(stats.clone()))
    share_inputs = []
    for rows, share_tasks in shares:
        share = losses[rows]
        share = torch.cat([share, share[:1]]) if FILLER in share_tasks else share  # the filler copies a row
        share_weights = torch.tensor([0.3 if t == 0 else 0.7 for t in share_tasks])
        share_inputs.append((share, torch.tensor(share_tasks), share_weights))
        multitask_loss_across(share, torch.tensor(share_tasks), share_weights, tasks=2, world=2)
    total = sum(local_stats)
    monkeypatch.setattr(dist, "all_reduce", lambda stats: stats.copy_(total))
    results = [multitask_loss_across(*inputs, tasks=2, world=2) for inputs in share_inputs]
    assert float(sum(loss.detach() for loss, _ in results) / 2) == pytest.approx(float(whole.detach()))
    assert all(by_task == pytest.approx(whole_by_task) for _, by_task in results)
    (grad,) = torch.autograd.grad(sum(loss for loss, _ in results) / 2, losses)
    assert torch.allclose(grad, expected_grad)


def test_every_rank_draws_the_one_process_order_padded_at_the_end() -> None:
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths = [(i * 7) % 23 + 1 for i in range(34)]
    stock = list(LengthGroupedSampler(4, lengths=lengths, generator=torch.Generator().manual_seed(42 + 1)))
    alone = GlobalOrderSampler(lengths, 4, seed=42)
    alone.set_epoch(1)
    assert list(alone) == stock  # one process: transformers' grouping, drawn from seed + epoch
    shared = GlobalOrderSampler(lengths, 4, seed=42, pad_to=4, filler=34)
    shared.set_epoch(1)
    assert len(shared) == 36 and list(shared) == [*stock, 34, 34]
    mixed = GlobalOrderSampler(lengths, 4, seed=42, grouped=False, pad_to=4, filler=34)
    assert sorted(mixed)[:34] == list(range(34)) and list(mixed) == list(mixed)  # a seeded permutation


def test_gloo_only_when_a_launcher_started_several_processes(monkeypatch: pytest.MonkeyPatch) -> None:
    """One process with a backend finds no group to join; several on CPU without one each train alone."""
    from cotfactory.students.train import _distributed_arguments

    monkeypatch.delenv("WORLD_SIZE", raising=False)
    assert _distributed_arguments() == {}
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _distributed_arguments() == {"ddp_find_unused_parameters": False, "use_cpu": True, "ddp_backend": "gloo"}


def _score_shared(rank: int, store: str, teacher: str) -> None:
    """Rank ``rank`` of 2 (torch.multiprocessing.spawn): the shared teacher, held by rank 0, gives each rank
    what the teacher alone gives on its batch — batches of other rows, widths and kept logits per rank."""
    import torch.distributed as dist
    from transformers import AutoModelForCausalLM

    from cotfactory.students.on_policy import LiveTeacher
    from cotfactory.students.shared_teacher import SharedTeacher

    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        alone = LiveTeacher(AutoModelForCausalLM.from_pretrained(teacher), teacher)  # every rank, to compare
        shared = SharedTeacher(alone if rank == 0 else None)
        rows, width, keep = [(3, 9, 4), (2, 13, 11)][rank]
        ids = torch.randint(3, 300, (rows, width), generator=torch.Generator().manual_seed(rank))
        mask = torch.ones_like(ids)
        mask[0, width - 3 :] = 0  # a row shorter than the batch, right-padded as the collator pads
        for dtype in (torch.float32, torch.bfloat16):
            alone.model.to(dtype)
            for kept, layers in ((keep, (0, 1)), (keep, ()), (1, (1,))):
                logits, states = shared.score(ids, mask, kept, layers)
                expected_logits, expected_states = alone.score(ids, mask, kept, layers)
                assert logits.shape == expected_logits.shape and logits.dtype == expected_logits.dtype == dtype
                tolerance = 1e-5 if dtype == torch.float32 else 2e-2
                assert torch.allclose(logits, expected_logits, rtol=tolerance, atol=tolerance), (rank, kept, dtype)
                assert len(states) == len(expected_states) == len(layers)
                for state, expected in zip(states, expected_states, strict=True):
                    assert state.shape == expected.shape == (rows, width, 32) and state.dtype == dtype
                    assert torch.allclose(state[mask.bool()], expected[mask.bool()], rtol=tolerance, atol=tolerance)
    finally:
        dist.destroy_process_group()


def test_shared_teacher_gives_each_rank_what_the_teacher_alone_gives(tiny_llama: Path, tmp_path: Path) -> None:
    """Two gloo processes, the teacher held by rank 0: logits (the last kept positions of each rank's own
    width) and layer outputs as the teacher scores each rank's batch by itself, float32 and bfloat16."""
    import torch.multiprocessing as mp

    mp.spawn(_score_shared, args=(str(tmp_path / "store"), str(tiny_llama)), nprocs=2, join=True)


def test_gradient_accumulation_is_the_larger_batch(teaching: Path, tmp_path: Path) -> None:
    """--batch-size 2 --grad-accum 2 trains as --batch-size 4 (one task: the two halves' means average to
    the whole's). The Trainer left our loss unscaled (the model takes **kwargs) and doubled it."""
    runs = {}
    for name, batch in (("whole", ("--batch-size", "4")), ("halves", ("--batch-size", "2", "--grad-accum", "2"))):
        out = tmp_path / name
        data = ("--method", "finetune-cot", "--max-steps", "3", "--logging-steps", "1", "--lora-dropout", "0")
        invoke_ok("train-student", teaching, "--student", "scratch:llama-tiny", "--out", out, *data, *batch)
        runs[name] = [m["loss"] for m in _logged(out)]
    assert runs["halves"] == pytest.approx(runs["whole"], rel=1e-5)


def test_torchrun_trains_the_one_process_student(teaching: Path, tmp_path: Path) -> None:
    """The documented command, `torchrun --nproc_per_node 2 -m cotfactory train-student`, with --batch-size 2
    against one process with --batch-size 4: a LoRA on a causal student."""
    student = "scratch:llama-tiny"
    invoke_ok(*_train(teaching, student, tmp_path / "one", "--batch-size", "4"))
    output = _torchrun(*_train(teaching, student, tmp_path / "two", "--batch-size", "2"))
    _assert_same_training(tmp_path / "one", tmp_path / "two")
    assert output.count("trained step-by-step on 34 examples") == 1  # rank 0 reports; rank 1 is quiet


# --------------------------------------------------------------------------------------------- long


@pytest.mark.reliability
@pytest.mark.parametrize(("model", "lora"), [("t5", "4"), ("t5", "0"), ("llama", "4"), ("llama", "0")])
def test_two_processes_equal_one_with_their_global_batch(
    teaching: Path, tiny_t5: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str, lora: str
) -> None:
    """Seq2seq and causal, LoRA and full fine-tuning, length-grouped: same losses, weights and files, and the
    ranks' batches, taken together, are one process's batches."""
    student = _student(model, tiny_t5)
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process(
        monkeypatch, *_train(teaching, student, one, "--lora-r", lora, "--batch-size", "4"), batches=tmp_path / "b1"
    )
    _recorded_torchrun(*_train(teaching, student, two, "--lora-r", lora, "--batch-size", "2"), batches=tmp_path / "b2")
    _assert_same_training(one, two)
    _assert_shares_of_one_order(tmp_path / "b1", tmp_path / "b2")


@pytest.mark.reliability
@pytest.mark.parametrize(
    ("one_process", "two_processes"),
    [
        # accumulation: a micro-batch is per-device × processes (a multitask loss sums over the tasks a
        # micro-batch holds, so --grad-accum 2 is not --batch-size twice larger with two tasks)
        (("--batch-size", "2", "--grad-accum", "2"), ("--batch-size", "1", "--grad-accum", "2")),
        (("--batch-size", "4", "--no-group-by-length"), ("--batch-size", "2", "--no-group-by-length")),
    ],
    ids=["accumulation", "random-order"],
)
def test_two_processes_equal_one_with_accumulation_or_random_order(
    teaching: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    one_process: tuple[str, ...],
    two_processes: tuple[str, ...],
) -> None:
    student = "scratch:llama-tiny"
    one, two = tmp_path / "one", tmp_path / "two"
    _one_process(monkeypatch, *_train(teaching, student, one, *one_process), batches=tmp_path / "b1")
    _recorded_torchrun(*_train(teaching, student, two, *two_processes), batches=tmp_path / "b2")
    _assert_same_training(one, two)
    _assert_shares_of_one_order(tmp_path / "b1", tmp_path / "b2", filled="--grad-accum" not in two_processes)


@pytest.mark.reliability
def test_two_processes_resume_to_the_uninterrupted_student(teaching: Path, tiny_t5: Path, tmp_path: Path) -> None:
    """Killed after logging step 9 (before its last checkpoint), resumed under torchrun from checkpoint-5 —
    mid-epoch, length-grouped: the same weights and logs as the uninterrupted torchrun."""
    reference, out = tmp_path / "reference", tmp_path / "resumed"
    command = _train(teaching, str(tiny_t5), reference, "--batch-size", "2")
    _torchrun(*command)
    shutil.copytree(reference, out)
    shutil.rmtree(out / "checkpoints" / "checkpoint-10")
    for name in ("adapter_model.safetensors", "student.json"):
        (out / name).unlink()
    logs = [line for line in (out / "metrics.jsonl").read_text().splitlines() if '"step": 10' not in line]
    (out / "metrics.jsonl").write_text("".join(line + "\n" for line in logs))
    _torchrun(*_train(teaching, str(tiny_t5), out, "--batch-size", "2", "--resume"))
    _assert_same_training(reference, out)


# gkd at λ = 0 scores the teacher-written completions only: each rank's sampled completions would differ from
# one process's (another seed, other rows), so only λ = 0 can equal one process
LIVE = {
    "gkd": ("--distill", "gkd", "--lmbda", "0"),
    "gkd-hidden-cosine": ("--distill", "gkd", "--lmbda", "0", "--hidden-cosine", "0.5"),
    "init-from-teacher": ("--init-from-teacher", "every-other", "--hidden-cosine", "0.5"),
    "per-rank": ("--distill", "gkd", "--lmbda", "0", "--teacher-placement", "per-rank"),
}


@pytest.mark.reliability
@pytest.mark.parametrize(
    ("case", "loads"),
    [
        ("gkd", {0: 1, 1: 0}),
        ("gkd-hidden-cosine", {0: 1, 1: 0}),
        ("init-from-teacher", {0: 1, 1: 1}),  # every rank builds its student from the weights, then frees them
        ("per-rank", {0: 1, 1: 1}),
    ],
)
def test_two_processes_with_a_live_teacher_equal_one(
    teaching: Path,
    live_models: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    case: str,
    loads: dict[int, int],
) -> None:
    """A live teacher held by rank 0 alone, scoring both ranks' batches (gkd's logits, the hidden cosine's
    layer outputs): the same losses, weights and files as one process with the global batch."""
    student, teacher = live_models
    one, two = tmp_path / "one", tmp_path / "two"
    extra = ("--teacher", str(teacher), *LIVE[case])
    _one_process(
        monkeypatch, *_train(teaching, str(student), one, "--batch-size", "4", *extra), batches=tmp_path / "b1"
    )
    output = _recorded_torchrun(
        *_train(teaching, str(student), two, "--batch-size", "2", *extra), batches=tmp_path / "b2"
    )
    _assert_same_training(one, two)
    _assert_shares_of_one_order(tmp_path / "b1", tmp_path / "b2")
    assert _teacher_loads(tmp_path / "b2", teacher) == loads
    shared = "per-rank" not in case
    assert output.count("held by rank 0, scoring the batches of all 2 processes") == shared


@pytest.mark.reliability
def test_each_rank_samples_its_completions_for_the_one_shared_teacher(
    teaching: Path, live_models: tuple[Path, Path], tmp_path: Path
) -> None:
    """gkd at λ = 1 under torchrun: every micro-batch is the student's own (each rank samples its share),
    rank 0's teacher scores them all, and no other rank reads the teacher's weights."""
    student, teacher = live_models
    out, batches = tmp_path / "gkd", tmp_path / "batches"
    command = ["train-student", teaching, "--student", student, "--out", out, "--method", "finetune-cot"]
    command += ["--teacher", teacher, "--distill", "gkd", "--lmbda", "1", "--on-policy-tokens", "8"]
    command += ["--batch-size", "2", "--max-steps", "4", "--logging-steps", "1", "--max-target-length", "48"]
    _recorded_torchrun(*command, batches=batches)
    rows = _logged(out)
    assert [row["on_policy"] for row in rows] == [1.0] * 4
    assert all(0 < row["loss"] < float("inf") for row in rows)
    assert _teacher_loads(batches, teacher) == {0: 1, 1: 0}
