"""Run the benchmarks and write BENCHMARKS.md: each figure with its command and this machine.

python bench/run_all.py [--only generate_api,contrastive] [--out BENCHMARKS.md]

With --only, the other scripts' sections already in the file are kept, so one figure can be
re-measured without re-running everything (each section says when and on what it was measured).
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = [
    "generate_api",
    "generate_curator",
    "generate_llamacpp",
    "generate_local",
    "contrastive",
    "filter",
    "scale",
    "train",
    "quality_synthetic",
    "quality_real",
    "lm_eval_agreement",
    "answer_extraction",
    "distill_k",
    "distill_real",
    "distill_synthetic",
    "adaptive",
    "prune",
    "gkd",
    "rationalize_real",
    "augment",
    "tree_search",
    "rounds",
]
HEADER = (
    "# Benchmarks\n\nEvery figure is a ratio against a baseline measured in the same run of the same script; "
    "`make bench` re-measures all of them, `python bench/run_all.py --only NAME` one of them.\n"
)


def machine() -> str:
    import torch

    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), CUDA {'yes' if torch.cuda.is_available() else 'no'}, "
        f"load average {load:.1f} at start"
    )


def read_sections(path: Path) -> dict[str, str]:
    """The '## name' sections of an existing BENCHMARKS.md."""
    if not path.exists():
        return {}
    parts = re.split(r"^## ", path.read_text(), flags=re.MULTILINE)[1:]
    return {part.split("\n", 1)[0].strip(): "## " + part.rstrip() + "\n" for part in parts}


def run(name: str) -> str:
    command = [sys.executable, f"bench/{name}.py"]
    measured = f"{date.today()} on {machine()}"
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    status = "" if done.returncode == 0 else f"\n**failed (exit {done.returncode})**: {done.stderr.strip()[-500:]}\n"
    print(f"{name}: {seconds:.0f} s, exit {done.returncode}", flush=True)
    return (
        f"## {name}\n\n`python bench/{name}.py` ({seconds:.0f} s; measured {measured})\n\n```\n"
        + "\n".join(lines)
        + f"\n```\n{status}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(SCRIPTS))
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    out = Path(args.out)
    for name in args.only.split(","):
        measured = run(name)
        sections = read_sections(out)  # read again: another run_all may have written meanwhile
        sections[name] = measured
        ordered = [sections[n] for n in SCRIPTS if n in sections] + [
            text for n, text in sections.items() if n not in SCRIPTS
        ]
        out.write_text(HEADER + "\n" + "\n".join(ordered))  # after every script: a long run keeps what it measured
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
