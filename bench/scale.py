"""`cotfactory generate` and `cotfactory filter` at 100k problems: time, requests/s and peak memory.

Generates one sample per problem for 10k and then 100k synthetic arithmetic problems against the scripted
arithmetic teacher (bench/arith_teacher.py, a loopback server with no latency, so the client's own cost
is what is measured), each run in its own process. Prints, measured in this one run:
- wall time and requests/s of each run, and the 100k run's peak RSS against the 10k run's: flat memory
  (~1 x) means a run's memory does not grow with its size; 10 x means it holds the whole run. Peak RSS
  counts file pages mapped in (the export reads its Arrow file through a memory map: page cache the
  kernel can drop), so the peak anonymous memory (the heap: RssAnon, sampled every 0.2 s) is printed too;
- the re-run of the finished 100k run: seconds, and the requests the server saw (must be 0);
- `cotfactory filter --consistency 0.5 --dedup 0.9` on the 100k run against the 10k run: time and
  peak RSS ratio.

    python bench/scale.py [--problems 100000] [--concurrency 256] [--keep DIR]
    python bench/scale.py --sizes 1000000 --generate-only     # the million-problem run alone

(~7 minutes on 2 shared cores: the 100k generate alone sends 100k requests at the client's ~350 requests/s;
the million-problem run about 50 minutes.)
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
from dataclasses import dataclass
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


@dataclass
class Measured:
    seconds: float
    peak_mb: float  # peak RSS (ru_maxrss): heap and mapped file pages
    anon_mb: float  # peak anonymous memory (RssAnon, sampled)
    code: int


def run_measured(args: list[str], log: Path) -> Measured:
    """Time, peak RSS, peak anonymous memory and exit code of `cotfactory ARGS` in its own process."""
    command = [sys.executable, "-m", "cotfactory", *args]
    started = time.perf_counter()
    anon = 0
    with log.open("w") as err:
        proc = subprocess.Popen(command, cwd=ROOT, stdout=err, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)  # this one child's rusage (ru_maxrss in KB)
            if pid:
                break
            anon = max(anon, _rss_anon_kb(proc.pid))
            time.sleep(0.2)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Measured(time.perf_counter() - started, usage.ru_maxrss / 1024, anon / 1024, proc.returncode)


def _rss_anon_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("RssAnon:")), 0)
    except OSError:
        return 0


def memory(run: Measured, base: Measured | None) -> str:
    line = f"peak RSS {run.peak_mb:5.0f} MB, anonymous {run.anon_mb:4.0f} MB"
    if base is not None:
        line += (
            f" = {run.peak_mb / base.peak_mb:.2f} x / {run.anon_mb / base.anon_mb:.2f} x the smaller run's (flat: ~1 x)"
        )
    return line


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
    parser.add_argument("--problems", type=int, default=100_000, help="the larger run; the smaller is a tenth")
    parser.add_argument("--sizes", help="comma-separated run sizes instead (e.g. 1000000)")
    parser.add_argument("--generate-only", action="store_true", help="skip the re-run and the filter runs")
    parser.add_argument("--concurrency", type=int, default=256)
    parser.add_argument("--keep", help="keep the run directories in this folder instead of a temporary one")
    args = parser.parse_args()
    sizes = [int(n) for n in args.sizes.split(",")] if args.sizes else [args.problems // 10, args.problems]

    with tempfile.TemporaryDirectory() as scratch, ArithTeacher() as teacher:
        tmp = Path(args.keep or scratch)
        tmp.mkdir(parents=True, exist_ok=True)
        runs: dict[int, tuple[Path, Measured]] = {}
        for count in sizes:
            data = write_problems(tmp / f"problems_{count}.jsonl", count)
            out = tmp / f"run_{count}"
            before = teacher.stats()["requests"]
            log = tmp / f"generate_{count}.log"
            run = run_measured(generate_args(data, out, teacher.base_url, args.concurrency), log)
            check(run.code, f"generate {count}", log)
            sent = teacher.stats()["requests"] - before
            base = runs[sizes[0]][1] if runs else None
            runs[count] = (out, run)
            line = f"generate {count:>7} problems: {run.seconds:6.1f} s, {sent / run.seconds:6.0f} requests/s, "
            print(line + memory(run, base), flush=True)
        if args.generate_only:
            return

        big_count = sizes[-1]
        before = teacher.stats()["requests"]
        rerun = run_measured(
            generate_args(tmp / f"problems_{big_count}.jsonl", runs[big_count][0], teacher.base_url, args.concurrency),
            tmp / "rerun.log",
        )
        check(rerun.code, "re-run", tmp / "rerun.log")
        sent = teacher.stats()["requests"] - before
        print(
            f"re-run of the finished {big_count} run: {rerun.seconds:5.1f} s "
            f"({rerun.seconds / runs[big_count][1].seconds:.3f} x the first run), {sent} requests sent, "
            f"peak RSS {rerun.peak_mb:.0f} MB",
            flush=True,
        )

        filtered: dict[int, Measured] = {}
        for count in sizes:
            log = tmp / f"filter_{count}.log"
            run = run_measured(["filter", str(runs[count][0]), "--consistency", "0.5", "--dedup", "0.9"], log)
            check(run.code, f"filter {count}", log)
            base = filtered[sizes[0]] if filtered else None
            filtered[count] = run
            line = f"filter   {count:>7} samples:  {run.seconds:6.1f} s, {count / run.seconds:6.0f} samples/s,  "
            print(line + memory(run, base), flush=True)


if __name__ == "__main__":
    main()
