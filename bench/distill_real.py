"""Token-level distillation from recorded teacher distributions, on real weights: cost and quality.

Teacher: the embedded SmolLM2-135M-Instruct (hf teacher, fp32 on CPU). Student: the same model with
every other decoder layer dropped (15 of 30 layers; same vocabulary, so every recorded id maps).

1. Capture cost: the hf teacher decoding the same GSM8K prompts (one batch, sampled, fixed seeds, so
   both sides write the very same tokens) with ``--logprobs 20`` (the TopKRecorder logits processor)
   vs without; one warm-up, then A/B/B/A, the better of 2 each. Target <= 1.15 x. Also the stored
   bytes per token at K = 20 (``Store.distribution_bytes``; 6K + 8 = 128 expected) against fp32
   full-vocabulary logits.
2. Cost of a distillation step: ``MultitaskTrainer.compute_loss`` + backward of the student on one
   fixed batch with ``--distill kd`` vs plain cross-entropy (``--distill none``), the best of 3 each
   after a warm-up. Target <= 1.2 x. Also the whole-run ratio of ``train_steps_per_second`` (part 3).
3. Quality at equal steps: the teacher writes rationales with ``--logprobs 20`` for GSM8K train
   problems (temperature 0.7, one sample each, zero-shot-cot); every sample is kept as a teaching
   record (filtered.jsonl written here: rationale = the sample's text, answer = the answer read from
   it, else the gold). The student trains with Fine-tune-CoT at the same steps, batch, learning rate
   and seed with CE, kd and slim (distill alpha 0.5, T = 1). Held out: teacher rationales (also
   --logprobs 20) of GSM8K *test* problems; per method the mean NLL of the teacher's rationale tokens
   under the student, and the mean KL(teacher || student) on the recorded K+1 buckets (both over
   the label tokens aligned to a teacher token). Rows: the teacher's own weights read in the student's
   format (a reference, not 0: the teacher wrote under its chat prompt, the student reads
   "{question} ###"), the untrained half-layer student, and each trained one.

    python bench/distill_real.py [--train 160] [--heldout 32] [--steps 40] [--lora-r 0] [--lr 1e-4]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data" / "gsm8k"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import cli_or_exit, read_jsonl, write_jsonl  # noqa: E402

K = 20
METHODS = ("none", "kd", "slim")  # --distill of each trained row; none = plain cross-entropy (SFT)


def gsm8k(split: str) -> Path:
    """The full split under shared/data when present, else the repo's 16-problem sample."""
    full = SHARED / f"{split}.jsonl"
    return full if full.exists() else ROOT / "data" / "gsm8k" / f"{split}_sample.jsonl"


# --------------------------------------------------------------------------------------------- 1. capture


def capture_overhead(prompts: int, max_tokens: int, batch_size: int) -> None:
    from cotfactory.config.generate import GenerateConfig
    from cotfactory.plan import Plan, SamplingGrid
    from cotfactory.problems import load_problems
    from cotfactory.prompts import load_template
    from cotfactory.teachers.hf import HFTeacher

    problems = load_problems("gsm8k", gsm8k("train"), limit=prompts)
    config = GenerateConfig(input="-", out="-", teacher="hf", batch_size=batch_size)
    teacher = HFTeacher(config.teacher)
    plan = Plan(
        problems,
        [load_template("zero-shot-cot")],
        SamplingGrid([0.7], [1], 1, 1.0, max_tokens),
        "hf",
        teacher.model_label,
    )
    requests = list(plan.requests())

    def timed(k: int, batch: list[Any]) -> tuple[float, float, int]:
        """(wall seconds, process CPU seconds, tokens written) of decoding ``batch`` at --logprobs k."""
        teacher.logprobs_k = k

        async def decode() -> int:
            count = 0
            async for samples in teacher.generate(iter(batch)):
                count += sum(s.completion_tokens for s in samples)
            return count

        wall, cpu = time.perf_counter(), time.process_time()
        tokens = asyncio.run(decode())
        return time.perf_counter() - wall, time.process_time() - cpu, tokens

    warm = Plan(problems, plan.templates, SamplingGrid([0.7], [1], 1, 1.0, 8), "hf", teacher.model_label)
    timed(0, list(warm.requests()))  # warm-up: loads the model, first-call allocations
    times: dict[int, list[tuple[float, float]]] = {0: [], K: []}
    tokens: dict[int, int] = {}
    for k in (0, K, K, 0):
        wall, cpu, tokens[k] = timed(k, requests)
        times[k].append((wall, cpu))
    plain, recorded = min(w for w, _ in times[0]), min(w for w, _ in times[K])
    plain_cpu, recorded_cpu = min(c for _, c in times[0]), min(c for _, c in times[K])
    print(
        f"capture: {len(requests)} GSM8K prompts, batch {batch_size}, max_tokens {max_tokens}, sampled at 0.7 "
        f"({tokens[0]} / {tokens[K]} tokens written without / with); better of 2, order A B B A"
    )
    print(
        f"  generate without logprobs : {plain:6.2f} s = {tokens[0] / plain:6.1f} tok/s (process CPU {plain_cpu:.2f} s)"
    )
    print(
        f"  generate --logprobs {K}    : {recorded:6.2f} s = {tokens[K] / recorded:6.1f} tok/s (process CPU "
        f"{recorded_cpu:.2f} s) = {recorded / plain:.3f} x wall, {recorded_cpu / plain_cpu:.3f} x CPU (target <= 1.15)",
        flush=True,
    )


# --------------------------------------------------------------------------------------------- 3. data


def teacher_run(source: Path, limit: int, max_tokens: int, out: Path) -> tuple[float, int]:
    """A run of the hf teacher with --logprobs K and a filtered.jsonl keeping every sample; (seconds, tokens)."""
    started = time.perf_counter()
    cli_or_exit(
        "generate",
        *("--input", str(source), "--format", "gsm8k", "--limit", str(limit), "--teacher", "hf"),
        *("--temperatures", "0.7", "--seeds", "1", "--max-tokens", str(max_tokens), "--length-retry-tokens", "0"),
        *("--batch-size", "32", "--logprobs", str(K), "--out", str(out)),
    )
    seconds = time.perf_counter() - started
    rows = [r for r in read_jsonl(out / "samples.jsonl") if not r.get("error") and r["text"].strip()]
    write_jsonl(
        out / "filtered.jsonl",
        [{**r, "rationale": r["text"].strip(), "answer": r["answer"] or r["gold"]} for r in rows],
    )
    return seconds, sum(r["completion_tokens"] for r in rows)


def half_layer_student(folder: Path) -> Path:
    """SmolLM2 with every other decoder layer kept, saved with the teacher's tokenizer."""
    from torch import nn
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from cotfactory.model_loading import resolve_model_path

    source = resolve_model_path(None)
    model = AutoModelForCausalLM.from_pretrained(source)
    model.model.layers = nn.ModuleList(model.model.layers[::2])
    for index, layer in enumerate(model.model.layers):
        layer.self_attn.layer_idx = index  # the KV cache is indexed by it
    model.config.num_hidden_layers = len(model.model.layers)
    if getattr(model.config, "layer_types", None):
        model.config.layer_types = model.config.layer_types[::2]
    model.save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    return folder


class Taught:
    """A run's Fine-tune-CoT examples encoded for the student, with the teacher's targets placed on them."""

    def __init__(self, run: Path, tokenizer: Any):
        from cotfactory.students.features import MultitaskCollator, encode_example
        from cotfactory.students.methods import MethodSettings, build_examples
        from cotfactory.students.records import load_records
        from cotfactory.students.teacher_targets import build_teacher_targets, open_distributions

        self.examples = build_examples("finetune-cot", load_records(str(run)), MethodSettings(causal=True))
        self.features = [encode_example(e, tokenizer, True, {"cot": 0}, 512, 256) for e in self.examples]
        for index, feature in enumerate(self.features):
            feature["example_index"] = index
        store, teacher_tokenizer, vocabulary = open_distributions(str(run), tokenizer, align=False)
        with store:
            self.targets, self.coverage, self.k = build_teacher_targets(
                self.examples, self.features, store, teacher_tokenizer, tokenizer, vocabulary
            )
        self.collator = MultitaskCollator(tokenizer.pad_token_id, True, 0, self.targets, self.k)


def heldout_scores(model: Any, taught: Taught, chunk: int = 8) -> tuple[float, float]:
    """(mean NLL, mean KL(teacher || student)) per aligned label token of the held-out rationales."""
    import torch

    from cotfactory.students.distill_losses import distillation_loss
    from cotfactory.students.trainer import first_logit_needed

    model.eval()
    nll = kl = count = 0.0
    for start in range(0, len(taught.features), chunk):
        batch = taught.collator(taught.features[start : start + chunk])
        first = first_logit_needed(batch["labels"])  # logits of the prompt positions are never read
        with torch.no_grad():
            logits = model(
                input_ids=batch["input_ids"],
                attention_mask=batch["attention_mask"],
                logits_to_keep=batch["input_ids"].shape[1] - first,
            ).logits[:, :-1]
        labels = batch["labels"][:, first + 1 :]
        ids, logprobs, tail = (
            batch[name][:, first + 1 :] for name in ("teacher_ids", "teacher_logprobs", "teacher_tail")
        )
        chosen = (labels != -100) & (ids >= 0).any(-1)
        n = int(chosen.sum())
        if not n:
            continue
        _, parts = distillation_loss(
            "kd", logits[chosen], labels[chosen], ids[chosen], logprobs[chosen], tail[chosen], alpha=1.0
        )
        nll, kl, count = nll + parts["ce"] * n, kl + parts["distill"] * n, count + n
    return nll / max(count, 1), kl / max(count, 1)


# --------------------------------------------------------------------------------------------- 2. step cost


def with_lora(model: Any, r: int) -> Any:
    from peft import LoraConfig, TaskType, get_peft_model

    return get_peft_model(model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=r, lora_alpha=2 * r, lora_dropout=0.05))


def step_cost(student: Path, taught: Taught, batch_size: int, lora_r: int, folder: Path, reps: int = 3) -> None:
    """compute_loss + backward on one fixed batch (4 examples of median length), kd vs none."""
    from transformers import TrainingArguments

    from cotfactory.students.models import load_student
    from cotfactory.students.trainer import Distillation, MultitaskTrainer

    model, _, _ = load_student(str(student))
    if lora_r:
        model = with_lora(model, lora_r)
    trainer = MultitaskTrainer(
        model=model,
        args=TrainingArguments(output_dir=str(folder), report_to=[], disable_tqdm=True),
        data_collator=taught.collator,
        causal=True,
        task_names=["cot"],
    )
    order = sorted(range(len(taught.features)), key=lambda i: len(taught.features[i]["input_ids"]))
    middle = len(order) // 2
    chosen = [taught.features[i] for i in order[middle - batch_size // 2 : middle - batch_size // 2 + batch_size]]
    batch = taught.collator(chosen)
    model.train()
    times: dict[str, list[float]] = {"none": [], "kd": []}
    cpu: dict[str, list[float]] = {"none": [], "kd": []}
    for rep in range(reps + 1):
        for kind in ("none", "kd") if rep % 2 else ("kd", "none"):
            trainer.distillation = Distillation(kind)
            wall, process = time.perf_counter(), time.process_time()
            loss = trainer.compute_loss(model, dict(batch))
            loss.backward()
            if rep:  # rep 0 warms up
                times[kind].append(time.perf_counter() - wall)
                cpu[kind].append(time.process_time() - process)
            model.zero_grad(set_to_none=True)
    ce, kd = min(times["none"]), min(times["kd"])
    labelled = int((batch["labels"] != -100).sum())
    print(
        f"step cost: compute_loss + backward, batch {batch_size} ({tuple(batch['input_ids'].shape)} tokens, "
        f"{labelled} labelled), best of {reps}, order alternating"
    )
    print(f"  CE (--distill none) : {ce * 1000:7.1f} ms (process CPU {min(cpu['none']) * 1000:7.1f} ms)")
    print(
        f"  kd                  : {kd * 1000:7.1f} ms (process CPU {min(cpu['kd']) * 1000:7.1f} ms) = "
        f"{kd / ce:.3f} x CE wall, {min(cpu['kd']) / min(cpu['none']):.3f} x CPU (target <= 1.2)",
        flush=True,
    )


# --------------------------------------------------------------------------------------------- 3. training


def train(run: Path, student: Path, kind: str, args: argparse.Namespace, out: Path) -> tuple[float, float, str]:
    """(train_runtime, train_steps_per_second, train-student's console output)."""
    from rich.console import Console

    from cotfactory.config.train import TrainConfig
    from cotfactory.students.train import run_train

    config = TrainConfig(
        input=str(run),
        method="finetune-cot",
        student=str(student),
        out=str(out),
        lora_r=args.lora_r,
        max_steps=args.steps,
        lr=args.lr,
        batch_size=args.batch,
        seed=0,
        distill=kind,
        save_steps=10**6,
        logging_steps=args.steps,
    )
    console = Console(file=io.StringIO(), width=400)
    with contextlib.redirect_stdout(io.StringIO()):  # the Trainer prints each log dict without a terminal
        run_train(config, console)
    last = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])
    return float(last["train_runtime"]), float(last["train_steps_per_second"]), console.file.getvalue()


def load_trained(out: Path, student: Path) -> Any:
    from transformers import AutoModelForCausalLM

    if (out / "adapter_config.json").exists():
        from peft import PeftModel

        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(student), str(out))
    return AutoModelForCausalLM.from_pretrained(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", type=int, default=16, help="prompts of the capture-cost comparison")
    parser.add_argument("--capture-tokens", type=int, default=64, help="max_tokens of the capture comparison")
    parser.add_argument("--train", type=int, default=160, help="GSM8K train problems the teacher writes for")
    parser.add_argument("--heldout", type=int, default=32, help="GSM8K test problems of the held-out measure")
    parser.add_argument("--max-tokens", type=int, default=64, help="max_tokens of the teacher's rationales")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--lora-r", type=int, default=0, help="0: full fine-tuning")
    parser.add_argument("--skip-capture", action="store_true")
    args = parser.parse_args()

    import torch

    from cotfactory.model_loading import quiet_transformers, resolve_model_path
    from cotfactory.store import Store
    from cotfactory.students.models import load_student

    quiet_transformers()
    torch.manual_seed(0)
    begun = time.perf_counter()
    if not args.skip_capture:
        capture_overhead(args.prompts, args.capture_tokens, 16)

    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        train_run, heldout_run = tmp / "train-run", tmp / "heldout-run"
        seconds, tokens = teacher_run(gsm8k("train"), args.train, args.max_tokens, train_run)
        print(
            f"teacher run (train): {args.train} GSM8K train problems, {tokens} tokens in {seconds:.0f} s "
            f"({tokens / seconds:.1f} tok/s, batch 32, --logprobs {K}); every sample kept, "
            "answer = the one read from the text, else gold"
        )
        with Store.in_run(train_run) as store:
            size, covered = store.distribution_bytes()
        vocab = len(load_student(resolve_model_path(None))[1])
        per_token = size / covered
        print(
            f"  stored distributions: {size} bytes for {covered} tokens = {per_token:.1f} bytes/token "
            f"(6K+8 = {6 * K + 8}); fp32 full logits {vocab * 4} bytes/token = {vocab * 4 / per_token:.0f} x more"
        )
        seconds, tokens = teacher_run(gsm8k("test"), args.heldout, args.max_tokens, heldout_run)
        print(f"teacher run (held out): {args.heldout} GSM8K test problems, {tokens} tokens in {seconds:.0f} s")

        student = half_layer_student(tmp / "half")
        _, tokenizer, _ = load_student(str(student))
        taught = Taught(train_run, tokenizer)
        heldout = Taught(heldout_run, tokenizer)
        print(f"  held out: {heldout.coverage.line(heldout.k)}", flush=True)
        step_cost(student, taught, args.batch, args.lora_r, tmp / "steps")

        setup = f"LoRA r{args.lora_r}" if args.lora_r else "full fine-tuning"
        print(
            f"quality at equal steps: student = SmolLM2 with layers [::2] (15 of 30), finetune-cot, {args.steps} "
            f"steps x batch {args.batch}, lr {args.lr}, {setup}, seed 0; distill alpha 0.5, T 1",
            flush=True,
        )
        rows: list[tuple[str, float, float, str]] = []
        teacher, _, _ = load_student(resolve_model_path(None))
        rows.append(("teacher, student format", *heldout_scores(teacher, heldout), "–"))
        del teacher
        before, _, _ = load_student(str(student))
        rows.append(("untrained half-layer", *heldout_scores(before, heldout), "–"))
        del before
        speed: dict[str, float] = {}
        for kind in METHODS:
            out = tmp / f"student-{kind}"
            runtime, speed[kind], output = train(train_run, student, kind, args, out)
            for line in output.splitlines():
                if line.startswith("teacher distributions") and kind == "kd":
                    print(f"  train-student: {line.strip()}")
            label = "CE (--distill none)" if kind == "none" else kind
            rows.append((label, *heldout_scores(load_trained(out, student), heldout), f"{runtime:.0f} s"))
            print(f"  trained {label}: {runtime:.0f} s", flush=True)
        print(f"  {'method':<24} {'held-out NLL/token':>18} {'KL(T||S)/token':>15} {'train time':>11}")
        for label, nll, kl, runtime in rows:
            print(f"  {label:<24} {nll:>18.4f} {kl:>15.4f} {runtime:>11}")
        print(
            f"  whole train-student runs: kd {speed['none'] / speed['kd']:.2f} x, slim "
            f"{speed['none'] / speed['slim']:.2f} x the CE run's time per step (train_steps_per_second)"
        )
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(
        f"total wall time {time.perf_counter() - begun:.0f} s, process CPU {usage.ru_utime + usage.ru_stime:.0f} s "
        "(2 cores: CPU < 2 x wall means other jobs shared them)"
    )


if __name__ == "__main__":
    main()
