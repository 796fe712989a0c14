"""Rationalized failures with a real local teacher: how many problems gain a rationale.

The embedded SmolLM2-135M (hf teacher) answers GSM8K test problems with zero-shot chain of thought,
2 samples each (T = 0.7, seeds 1-2); `--rationalize-failures rationalize` then asks it once, for each
problem none of whose samples reached the gold answer, to explain the gold answer it is given.
Printed: problems solved by sampling, problems every sample missed, and of those the ones whose
rationalization reached the gold answer (rescued: they gain a usable rationale).

    python bench/rationalize_real.py [--problems 40] [--max-tokens 160]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import invoke_ok  # noqa: E402

from cotfactory.answers import answers_match  # noqa: E402
from cotfactory.store import Store  # noqa: E402

GSM8K = ROOT.parent / "shared" / "data" / "gsm8k" / "test.jsonl"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=40)
    parser.add_argument("--max-tokens", type=int, default=160)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        started = time.perf_counter()
        invoke_ok(
            "generate", "--input", str(GSM8K), "--format", "gsm8k", "--limit", str(args.problems),
            "--teacher", "hf", "--template", "zero-shot-cot", "--temperatures", "0.7", "--seeds", "1,2",
            "--max-tokens", str(args.max_tokens), "--length-retry-tokens", "0",
            "--rationalize-failures", "rationalize", "--out", str(out),
        )  # fmt: skip
        seconds = time.perf_counter() - started
        solved = missed = rescued = 0
        tokens = {"sample": 0, "rationalized": 0}
        with Store.in_run(out) as store:
            problems = store.problems()
            by_problem: dict[str, list] = {}
            for sample in store.samples():
                by_problem.setdefault(sample.request.problem_id, []).append(sample)
                tokens[sample.request.mode] += sample.prompt_tokens + sample.completion_tokens
        for problem_id, samples in by_problem.items():
            problem = problems[problem_id]
            sampled = [s for s in samples if s.request.mode == "sample"]
            extra = [s for s in samples if s.request.mode == "rationalized"]
            if any(answers_match(s.answer, problem.gold, problem) for s in sampled):
                solved += 1
            else:
                missed += 1
                rescued += any(answers_match(s.answer, problem.gold, problem) for s in extra)
        count = len(by_problem)
        print(f"SmolLM2-135M, {count} GSM8K test problems, 2 zero-shot CoT samples each (T=0.7): {seconds:.0f} s")
        print(f"solved by sampling (a sample reached gold): {solved}")
        print(f"every sample missed: {missed}; rationalized; rescued (the rationalization reached gold): {rescued}")
        sampled, extra = tokens["sample"], tokens["rationalized"]
        print(f"teacher tokens: sampling {sampled:,}, rationalization {extra:,} ({extra / max(sampled, 1):.2f} x)")


if __name__ == "__main__":
    main()
