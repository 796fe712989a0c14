"""`cotfactory generate` and `cotfactory filter` at 100k problems: time, requests/s and peak memory.

Generates one sample per problem for 10k and then 100k synthetic arithmetic problems against the scripted
arithmetic teacher (bench/arith_teacher.py, a loopback server with no latency, so the client's own cost
is what is measured), each run in its own process. Prints, measured in this one run:
- wall time and requests/s of each run, and the 100k run's peak RSS against the 10k run's: flat memory
  (~1 x) means a run's memory does not grow with its size; 10 x means it holds the whole run;
- the re-run of the finished 100k run: seconds, and the requests the server saw (must be 0);
- `cotfactory filter --consistency 0.5 --dedup 0.9` on the 100k run against the 10k run: time and
  peak RSS ratio.

    python bench/scale.py [--problems 100000] [--concurrency 256] [--keep DIR]

(~7 minutes on 2 shared cores: the 100k generate alone sends 100k requests at the client's ~350 requests/s.)
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

from arith_teacher import ArithTeacher  # noqa: E402


def write_problems(path: Path, count: int, seed: int = 0) -> Path:
    """``count`` chained sums in the generic JSONL format, e.g. 'What is 37 + 48 - 25?' → 60."""
    rng = random.Random(seed)
    with path.open("w") as handle:
        for i in range(count):
            terms = [rng.randint(1, 99) for _ in range(rng.randint(2, 4))]
            ops = [rng.choice("+-") for _ in terms[1:]]
            value, text = terms[0], str(terms[0])
            for op, term in zip(ops, terms[1:], strict=True):
                value = value + term if op == "+" else value - term
                text += f" {op} {term}"
            handle.write(json.dumps({"id": f"p{i}", "question": f"What is {text}?", "answer": str(value)}) + "\n")
    return path


def run_measured(args: list[str], log: Path) -> tuple[float, float, int]:
    """(seconds, peak RSS in MB, exit code) of `cotfactory ARGS` in its own process."""
    command = [sys.executable, "-m", "cotfactory", *args]
    started = time.perf_counter()
    with log.open("w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        _, status, usage = os.wait4(proc.pid, 0)  # this one child's rusage (ru_maxrss in KB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, proc.returncode


def generate_args(data: Path, out: Path, base_url: str, concurrency: int) -> list[str]:
    return [
        "generate",
        "--input",
        str(data),
        "--format",
        "jsonl",
        "--answer-type",
        "number",
        "--teacher",
        "openai",
        "--model",
        "arith-teacher",
        "--base-url",
        base_url,
        "--api-key-env",
        "",
        "--template",
        "zero-shot-cot",
        "--max-tokens",
        "64",
        "--concurrency",
        str(concurrency),
        "--out",
        str(out),
    ]


def check(code: int, what: str, log: Path) -> None:
    if code != 0:
        tail = log.read_text()[-2000:]
        raise SystemExit(f"{what} exited {code}:\n{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=100_000)
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--keep", help="keep the run directories in this folder instead of a temporary one")
    args = parser.parse_args()
    small_count, big_count = args.problems // 10, args.problems

    with tempfile.TemporaryDirectory() as scratch, ArithTeacher() as teacher:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        runs: dict[int, tuple[Path, float, float]] = {}
        for count in (small_count, big_count):
            data = write_problems(tmp / f"problems_{count}.jsonl", count)
            out = tmp / f"run_{count}"
            before = teacher.stats()["requests"]
            seconds, peak, code = run_measured(
                generate_args(data, out, teacher.base_url, args.concurrency), tmp / f"generate_{count}.log"
            )
            check(code, f"generate {count}", tmp / f"generate_{count}.log")
            sent = teacher.stats()["requests"] - before
            runs[count] = (out, seconds, peak)
            line = (
                f"generate {count:>7} problems: {seconds:6.1f} s, {sent / seconds:6.0f} requests/s, "
                f"peak RSS {peak:5.0f} MB"
            )
            if count == big_count:
                line += f" = {peak / runs[small_count][2]:.2f} x the 10x smaller run (flat: ~1 x)"
            print(line, flush=True)

        big_out = runs[big_count][0]
        before = teacher.stats()["requests"]
        seconds, peak, code = run_measured(
            generate_args(tmp / f"problems_{big_count}.jsonl", big_out, teacher.base_url, args.concurrency),
            tmp / "rerun.log",
        )
        check(code, "re-run", tmp / "rerun.log")
        sent = teacher.stats()["requests"] - before
        print(
            f"re-run of the finished {big_count} run: {seconds:5.1f} s ({seconds / runs[big_count][1]:.3f} x the "
            f"first run), {sent} requests sent, peak RSS {peak:.0f} MB",
            flush=True,
        )

        filtered: dict[int, tuple[float, float]] = {}
        for count in (small_count, big_count):
            log = tmp / f"filter_{count}.log"
            seconds, peak, code = run_measured(
                ["filter", str(runs[count][0]), "--consistency", "0.5", "--dedup", "0.9"], log
            )
            check(code, f"filter {count}", log)
            filtered[count] = (seconds, peak)
            line = (
                f"filter   {count:>7} samples:  {seconds:6.1f} s, {count / seconds:6.0f} samples/s,  "
                f"peak RSS {peak:5.0f} MB"
            )
            if count == big_count:
                line += f" = {peak / filtered[small_count][1]:.2f} x the 10x smaller run (flat: ~1 x)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
