"""`cotfactory eval` against lm-evaluation-harness, on real SmolLM2 students and real held-out problems.

1. Multiple choice, scored by log-likelihood: a label-only LoRA student (CommonsenseQA, gold labels)
   is evaluated by `cotfactory eval --lm-eval DIR`, then lm-eval runs the task it wrote
   (`--model hf`, base + PEFT adapter). Expected: the same choice on every problem, per-choice
   log-likelihoods within float noise, equal acc / acc_norm.
2. Generation: a Fine-tune-CoT LoRA student (e-SNLI, PaLM rationales) writes rationales; lm-eval
   runs the `generate_until` task (its regex reads the answer after `-->`). Every disagreement is
   listed with its cause: different text, or the same text read differently (extraction rule).

    python bench/lm_eval_agreement.py [--test 100] [--steps 30]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared" / "data"
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import cli_or_exit, read_jsonl  # noqa: E402


def rows(path: Path) -> dict[str, dict]:
    return {row["problem_id"]: row for row in read_jsonl(path)}


def lm_eval_run(tasks: Path) -> dict:
    from cotfactory.students.lm_eval_tasks import read_manifest, run_lm_eval

    manifest = read_manifest(tasks)
    output = run_lm_eval(manifest, batch_size=16)
    return {"manifest": manifest, "samples": output["samples"][manifest["task"]], "results": output["results"]}


def train(input_: str, method: str, out: Path, steps: int, *fmt: str) -> None:
    cli_or_exit(
        "train-student",
        input_,
        *fmt,
        *("--method", method, "--student", "embedded", "--out", str(out), "--lora-r", "16", "--lr", "1e-3"),
        *("--max-steps", str(steps), "--batch-size", "8", "--save-steps", "100000", "--max-source-length", "256"),
    )


def multiple_choice(folder: Path, test: int, steps: int) -> None:
    from cotfactory.students.lm_eval_tasks import shell_command

    student = folder / "cqa-label-only"
    train(
        str(SHARED / "cqa_palm" / "cqa_train.json"), "label-only", student, steps, "--format", "cqa", "--limit", "400"
    )
    tasks = folder / "cqa-lm-eval"
    cli_or_exit(
        *("eval", str(student), "--input", str(SHARED / "cqa_palm" / "cqa_test.json"), "--format", "cqa"),
        *("--limit", str(test), "--batch-size", "32", "--max-new-tokens", "16", "--lm-eval", str(tasks)),
    )
    started = time.perf_counter()
    run = lm_eval_run(tasks)
    seconds = time.perf_counter() - started
    ours = rows(student / "predictions.jsonl")
    same, worst = 0, 0.0
    for sample in run["samples"]:
        doc, prediction = sample["doc"], ours[sample["doc"]["id"]]
        logprobs = [float(ll) for ll, _ in sample["filtered_resps"]]
        worst = max(worst, max(abs(a - b) for a, b in zip(logprobs, prediction["choice_logprobs"], strict=True)))
        same += doc["choices"][max(range(len(logprobs)), key=logprobs.__getitem__)] == prediction["ranked"]
    summary = json.loads((student / "eval.json").read_text())
    numbers = run["results"][run["manifest"]["task"]]
    print(f"multiple choice: CommonsenseQA test, first {test} problems; label-only LoRA student ({steps} steps)")
    print(f"  same choice: {same}/{len(run['samples'])}; max |log-likelihood difference| {worst:.2e}")
    print(
        f"  acc: cotfactory {summary['ranked_accuracy']:.4f} vs lm-eval {numbers['acc,none']:.4f}; "
        f"acc_norm: {summary['ranked_norm_accuracy']:.4f} vs {numbers['acc_norm,none']:.4f}"
    )
    print(f"  lm-eval run {seconds:.0f} s; command: {shell_command(run['manifest'])}")


def generation(folder: Path, test: int, steps: int) -> None:
    from cotfactory import answers
    from cotfactory.problems import load_problems

    run_dir = folder / "esnli-run"
    esnli = ROOT / "data" / "esnli"
    cli_or_exit(
        *("generate", "--format", "esnli", "--input", str(esnli / "train_sample.json")),
        *("--teacher", "replay", "--replay", str(esnli / "palm_train_sample.json"), "--model", "palm-540b"),
        *("--template", "few-shot-cot-esnli", "--temperatures", "0", "--seeds", "0", "--out", str(run_dir)),
    )
    cli_or_exit("filter", str(run_dir), "--correct")
    student = folder / "esnli-finetune-cot"
    train(str(run_dir), "finetune-cot", student, steps)
    tasks = folder / "esnli-lm-eval"
    cli_or_exit(
        *("eval", str(student), "--input", str(esnli / "test_sample.json"), "--format", "esnli"),
        *("--limit", str(test), "--batch-size", "32", "--max-new-tokens", "64", "--lm-eval", str(tasks)),
    )
    run = lm_eval_run(tasks)
    ours = rows(student / "predictions.jsonl")
    problems = {p.id: p for p in load_problems("esnli", esnli / "test_sample.json", limit=test)}
    same_text = same_answer = 0
    disagreements = []
    for sample in run["samples"]:
        pid = sample["doc"]["id"]
        prediction, problem = ours[pid], problems[pid]
        text = sample["resps"][0][0].strip()
        theirs = sample["filtered_resps"][0].strip() if isinstance(sample["filtered_resps"][0], str) else ""
        same_text += text == prediction["text"]
        agree = answers.answers_match(theirs, prediction["prediction"], problem) or (
            not theirs and prediction["prediction"] is None
        )
        same_answer += agree
        if not agree:
            cause = "different text" if text != prediction["text"] else "extraction rule"
            disagreements.append(f"  {pid}: ours {prediction['prediction']!r} vs lm-eval {theirs!r} ({cause})")
    print(f"generation: e-SNLI validation, first {test} pairs; Fine-tune-CoT LoRA student ({steps} steps)")
    print(f"  same generated text: {same_text}/{len(run['samples'])}; same answer: {same_answer}/{len(run['samples'])}")
    print(*(disagreements or ["  no disagreements"]), sep="\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--test", type=int, default=100, help="held-out problems per check")
    parser.add_argument("--steps", type=int, default=30, help="training steps of each student")
    args = parser.parse_args()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        multiple_choice(Path(scratch), args.test, args.steps)
        generation(Path(scratch), args.test, args.steps)
    print(f"total {(time.perf_counter() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
