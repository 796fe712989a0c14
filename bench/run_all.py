"""Run every benchmark and write BENCHMARKS.md: each figure with its command and this machine.

python bench/run_all.py [--only generate_api,contrastive] [--out BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ["generate_api", "generate_local", "contrastive", "filter", "train", "quality_synthetic"]


def machine() -> str:
    import torch

    return (
        f"{platform.node() or 'host'}: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} threads), "
        f"CUDA {'yes' if torch.cuda.is_available() else 'no'}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", default=",".join(SCRIPTS))
    parser.add_argument("--out", default=str(ROOT / "BENCHMARKS.md"))
    args = parser.parse_args()
    sections = [
        f"# Benchmarks\n\nMeasured {date.today()} on {machine()}.\n"
        "Every figure is a ratio against a baseline measured in the same run; rerun with `make bench`.\n"
    ]
    for name in args.only.split(","):
        command = [sys.executable, f"bench/{name}.py"]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
        seconds = time.perf_counter() - started
        lines = [line for line in done.stdout.splitlines() if line.strip()]
        status = (
            "" if done.returncode == 0 else f"\n**failed (exit {done.returncode})**: {done.stderr.strip()[-500:]}\n"
        )
        sections.append(
            f"## {name}\n\n`python bench/{name}.py` ({seconds:.0f} s)\n\n```\n" + "\n".join(lines) + f"\n```\n{status}"
        )
        print(f"{name}: {seconds:.0f} s, exit {done.returncode}", flush=True)
    Path(args.out).write_text("\n".join(sections))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
