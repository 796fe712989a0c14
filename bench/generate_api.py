"""API generation throughput against a loopback server with a fixed latency.

Prints, measured in this one run:
- cotfactory's requests/s vs the bound concurrency / latency (target >= 0.9 x at concurrency 64 and 256),
- vs a naive sequential loop of the `openai` SDK,
- vs a minimal asyncio + aiohttp client sending the same bodies at the same concurrency (no SDK, no
  retries, no store): the most this machine gets from the same server, and its client CPU per request,
- client CPU per request (the server is another process, so this is cotfactory's own cost), after a
  first small run that pays the one-time imports (printed apart: a run of N requests adds it / N).

    python bench/generate_api.py [--latency 0.2] [--requests 6000] [--concurrency 64,256]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai_server import FakeServer  # noqa: E402

MAX_TOKENS = 64


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


def rendered_messages(data: Path) -> list[list[dict[str, str]]]:
    """The chat messages cotfactory sends for ``data`` (zero-shot-cot), in plan order."""
    from cotfactory.problems import load_problems
    from cotfactory.prompts import load_template

    template = load_template("zero-shot-cot")
    return [template.render(p).messages or [] for p in load_problems("jsonl", data, answer_type="number")]


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
            max_tokens=MAX_TOKENS,
        )
    return count / (time.perf_counter() - started)


def minimal_client(base_url: str, messages: list[list[dict[str, str]]], concurrency: int) -> tuple[float, float]:
    """(requests/s, client CPU seconds per request) of a bare aiohttp client sending the same bodies."""
    import aiohttp

    async def run() -> None:
        connector = aiohttp.TCPConnector(limit=concurrency)
        async with aiohttp.ClientSession(connector=connector) as session:
            bodies = iter(messages)

            async def worker() -> None:
                for chat in bodies:
                    body = {
                        "model": "fake-teacher",
                        "temperature": 0.7,
                        "top_p": 1.0,
                        "seed": 0,
                        "max_tokens": MAX_TOKENS,
                        "messages": chat,
                    }
                    async with session.post(f"{base_url}/chat/completions", json=body) as response:
                        response.raise_for_status()
                        reply = json.loads(await response.read())
                        assert reply["choices"][0]["message"]["content"]

            await asyncio.gather(*(worker() for _ in range(concurrency)))

    cpu0, started = cpu_seconds(), time.perf_counter()
    asyncio.run(run())
    return len(messages) / (time.perf_counter() - started), (cpu_seconds() - cpu0) / len(messages)


@dataclass
class CotfactoryRun:
    requests: int
    send_rps: float  # requests/s of the sending phase
    total_rps: float  # requests/s end to end: planning, sending, export
    cpu_per_request: float  # client CPU seconds per request, end to end


def cotfactory_run(base_url: str, data: Path, out: Path, concurrency: int) -> CotfactoryRun:
    from rich.console import Console

    from cotfactory.config.generate import GenerateConfig
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
        max_tokens=MAX_TOKENS,
        out=str(out),
        use_n="never",
    )
    cpu0, started = cpu_seconds(), time.perf_counter()
    result = run_generate(config, Console(file=open("/dev/null", "w")))  # noqa: SIM115
    total = time.perf_counter() - started
    cpu = cpu_seconds() - cpu0
    assert result.new == result.planned and not result.failed, "every request must be answered"
    return CotfactoryRun(result.new, result.new / result.send_elapsed_s, result.new / total, cpu / result.new)


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
        warm = cotfactory_run(server.base_url, write_questions(Path(tmp) / "warm.jsonl", 64), Path(tmp) / "warm", 64)
        print(
            f"start-up, paid once per process (imports, first run of {warm.requests} requests): client CPU "
            f"{warm.cpu_per_request * warm.requests:.2f} s; the runs below are measured after it"
        )
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            count = max(args.requests, concurrency * 10)
            data = write_questions(Path(tmp) / f"q{concurrency}.jsonl", count)
            run = cotfactory_run(server.base_url, data, Path(tmp) / f"run{concurrency}", concurrency)
            floor_rps, floor_cpu = minimal_client(server.base_url, rendered_messages(data), concurrency)
            bound = concurrency / args.latency
            print(
                f"concurrency {concurrency:>4}: {run.requests} requests, {run.send_rps:7.1f} req/s = "
                f"{run.send_rps / bound:.2f} x bound ({bound:.0f} req/s), {run.send_rps / seq:6.1f} x sequential "
                f"loop, {run.send_rps / floor_rps:.2f} x minimal aiohttp client; client CPU "
                f"{run.cpu_per_request * 1e3:.2f} ms/request"
            )
            print(
                f"  minimal aiohttp client at {concurrency:>4}: {floor_rps:7.1f} req/s = "
                f"{floor_rps / bound:.2f} x bound, client CPU {floor_cpu * 1e3:.2f} ms/request "
                f"(cotfactory: {run.cpu_per_request / floor_cpu:.1f} x)"
            )


if __name__ == "__main__":
    main()
