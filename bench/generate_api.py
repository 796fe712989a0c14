"""API generation throughput against a loopback server with a fixed latency.

Prints, measured in this one run:
- cotfactory's requests/s vs the bound concurrency / latency (target >= 0.9 x at concurrency 64),
- vs a naive sequential loop of the `openai` SDK,
- client CPU per request (the server is another process, so this is cotfactory's own cost).

    python bench/generate_api.py [--latency 0.2] [--requests 3000] [--concurrency 64,256]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai_server import FakeServer  # noqa: E402


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def write_questions(path: Path, count: int) -> Path:
    with path.open("w") as handle:
        for i in range(count):
            handle.write(
                json.dumps({"id": f"q{i}", "question": f"What is {i} plus {i + 1}?", "answer": str(2 * i + 1)})
            )
            handle.write("\n")
    return path


def sequential_openai(base_url: str, count: int) -> float:
    """The baseline: a plain loop of blocking SDK calls. Returns requests/s."""
    import openai

    client = openai.OpenAI(base_url=base_url, api_key="k", max_retries=0)
    started = time.perf_counter()
    for i in range(count):
        client.chat.completions.create(
            model="fake-teacher",
            messages=[{"role": "user", "content": f"What is {i} plus {i + 1}?"}],
            temperature=0.7,
            seed=i,
            max_tokens=64,
        )
    return count / (time.perf_counter() - started)


def cotfactory_run(base_url: str, data: Path, out: Path, concurrency: int) -> tuple[float, float, int]:
    """(requests/s of the sending phase, client CPU seconds per request, requests)."""
    from rich.console import Console

    from cotfactory.config import GenerateConfig
    from cotfactory.generate import run_generate

    config = GenerateConfig(
        input=str(data),
        answer_type="number",
        teacher="openai",
        model="fake-teacher",
        base_url=[base_url],
        api_key_env=None,
        templates=["zero-shot-cot"],
        concurrency=concurrency,
        max_tokens=64,
        out=str(out),
        use_n="never",
    )
    cpu0 = cpu_seconds()
    result = run_generate(config, Console(file=open("/dev/null", "w")))  # noqa: SIM115
    cpu = cpu_seconds() - cpu0
    assert result.new == result.planned and not result.failed, "every request must be answered"
    return result.new / result.send_elapsed_s, cpu / result.new, result.new


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--sequential", type=int, default=25, help="requests of the sequential baseline")
    args = parser.parse_args()

    with FakeServer("--latency", str(args.latency)) as server, tempfile.TemporaryDirectory() as tmp:
        seq = sequential_openai(server.base_url, args.sequential)
        print(f"sequential openai loop: {seq:.2f} req/s (bound 1/latency = {1 / args.latency:.2f})")
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            count = max(args.requests, concurrency * 10)
            data = write_questions(Path(tmp) / f"q{concurrency}.jsonl", count)
            rps, cpu_per_request, sent = cotfactory_run(
                server.base_url, data, Path(tmp) / f"run{concurrency}", concurrency
            )
            bound = concurrency / args.latency
            print(
                f"concurrency {concurrency:>4}: {sent} requests, {rps:7.1f} req/s = {rps / bound:.2f} x bound "
                f"({bound:.0f} req/s), {rps / seq:6.1f} x sequential loop, "
                f"client CPU {cpu_per_request * 1e3:.2f} ms/request"
            )


if __name__ == "__main__":
    main()
