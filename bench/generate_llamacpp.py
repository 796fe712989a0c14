"""`cotfactory generate` against a real llama.cpp server, vs the server's best throughput with direct calls.

Starts llama-cpp-python's OpenAI-compatible server (`python -m llama_cpp.server`, 1 thread by default) on the embedded
SmolLM2-135M GGUF, then sends the same requests — zero-shot-cot over 24 GSM8K problems, cotfactory's exact
rendered messages, temperature 0.7, seed 1, max_tokens 64 — two ways:
- directly: `openai.AsyncOpenAI` + `asyncio.gather`, at the fastest of concurrency 1, 2 and 4 (tried on the
  first 8 requests); this is the baseline;
- `cotfactory generate` (`--length-retry-tokens 0`, so that it sends exactly the same requests).
Prints completion tokens/s (from the server's usage) of both and their ratio (target >= 0.95 x), and how
many texts came out identical (same seeds, so the two ways should match).

llama-cpp-python's server decodes one request at a time (a global lock around its one `Llama`; it has no
parallel-slots option, unlike llama.cpp's own `llama-server --parallel`): extra concurrency only queues.
On a 2-core machine that other processes also use, 2 llama.cpp threads can run 10 x slower than 1 (each
decoding step waits at a barrier for a thread that is not scheduled): use --threads 1 there.

    python bench/generate_llamacpp.py [--problems 24] [--max-tokens 64] [--passes 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from helpers import read_jsonl  # noqa: E402
from loopback import ProcessServer  # noqa: E402

MODEL = "smollm2"
TEMPERATURE = 0.7
SEED = 1


def parallel_option() -> str | None:
    """The server's parallel-slots setting, if this llama-cpp-python has one."""
    from llama_cpp.server.settings import ModelSettings

    return next((name for name in ("n_parallel", "parallel") if name in ModelSettings.model_fields), None)


def llama_server(threads: int, slots: int) -> ProcessServer:
    """llama-cpp-python's server on the embedded GGUF, started by a ``with`` block."""
    from cotfactory.model_loading import embedded_gguf

    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_gguf()),
        "--model_alias",
        MODEL,
        "--n_threads",
        str(threads),
        "--n_threads_batch",
        str(threads),
        "--logits_all",  # on by default in llama-cpp-python: logits of every prompt token, unused here
        "False",
        "--n_ctx",
        "2048",
        "--host",
        "127.0.0.1",
        "--verbose",
        "False",
    ]
    option = parallel_option()
    if option:
        command += [f"--{option}", str(slots)]
    return ProcessServer(command, ready="/v1/models", name="llama.cpp server", start_timeout=120, stop_timeout=20)


def write_problems(path: Path, count: int) -> Path:
    """The first ``count`` bundled GSM8K problems (train sample, then test sample), as one gsm8k file."""
    lines: list[str] = []
    for name in ("train_sample.jsonl", "test_sample.jsonl"):
        lines += (ROOT / "data" / "gsm8k" / name).read_text().splitlines()
    path.write_text("\n".join(lines[:count]) + "\n")
    return path


def planned_requests(data: Path, max_tokens: int) -> list[Any]:
    """cotfactory's own plan for the run: rendered messages and per-sample seeds, in plan order."""
    from cotfactory.plan import Plan, SamplingGrid
    from cotfactory.problems import load_problems
    from cotfactory.prompts import load_template

    problems = load_problems("gsm8k", data)
    grid = SamplingGrid([TEMPERATURE], [SEED], 1, 1.0, max_tokens)
    return list(Plan(problems, [load_template("zero-shot-cot")], grid, "openai", MODEL).requests())


async def direct(base_url: str, requests: list[Any], concurrency: int) -> tuple[float, int, dict[str, str]]:
    """(seconds, completion tokens, texts by request key): the same bodies as cotfactory, via the SDK."""
    import openai

    client = openai.AsyncOpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=600)
    gate = asyncio.Semaphore(concurrency)
    texts: dict[str, str] = {}

    async def one(request: Any) -> int:
        async with gate:
            response = await client.chat.completions.create(
                model=MODEL,
                messages=request.prompt.messages,
                temperature=request.temperature,
                top_p=request.top_p,
                seed=request.sample_seed,
                max_tokens=request.max_tokens,
            )
        texts[request.key] = response.choices[0].message.content or ""
        return response.usage.completion_tokens if response.usage else 0

    started = time.perf_counter()
    tokens = await asyncio.gather(*(one(r) for r in requests))
    seconds = time.perf_counter() - started
    await client.close()
    return seconds, sum(tokens), texts


def cotfactory_run(base_url: str, data: Path, out: Path, max_tokens: int, concurrency: int) -> tuple[float, float, int]:
    """(seconds of the sending phase, seconds end to end, completion tokens) of `cotfactory generate`."""
    from rich.console import Console

    from cotfactory.config.generate import GenerateConfig
    from cotfactory.generate import run_generate

    config = GenerateConfig(
        input=str(data),
        format="gsm8k",
        teacher="openai",
        model=MODEL,
        base_url=[base_url],
        api_key_env=None,
        templates=["zero-shot-cot"],
        temperatures=[TEMPERATURE],
        seeds=[SEED],
        max_tokens=max_tokens,
        length_retry_tokens=0,
        concurrency=concurrency,
        out=str(out),
    )
    started = time.perf_counter()
    result = run_generate(config, Console(file=open("/dev/null", "w")))  # noqa: SIM115
    seconds = time.perf_counter() - started
    assert result.new == result.planned and not result.failed, "every request must be answered"
    return result.send_elapsed_s, seconds, result.completion_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--problems", type=int, default=24)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--concurrency", default="1,2,4", help="direct-call concurrencies tried")
    parser.add_argument("--scan", type=int, default=8, help="requests of each concurrency tried")
    parser.add_argument("--passes", type=int, default=2, help="measurements of each side, alternated (best kept)")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads (2 on an idle 2-core machine)")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]

    option = parallel_option()
    if option is None:
        print(
            "llama-cpp-python server: no parallel-slots option (it decodes one request at a time behind a lock); "
            "compared at the same concurrency anyway"
        )
    with llama_server(args.threads, max(levels)) as server, tempfile.TemporaryDirectory() as tmp:
        base_url = server.base_url
        data = write_problems(Path(tmp) / "gsm8k.jsonl", args.problems)
        requests = planned_requests(data, args.max_tokens)
        asyncio.run(direct(base_url, requests[:1], 1))  # warm-up: pages the weights in
        scan = {c: asyncio.run(direct(base_url, requests[: args.scan], c)) for c in levels}
        fastest = max(levels, key=lambda c: scan[c][1] / scan[c][0])
        best = (0.0, 0)  # tokens/s, tokens of the direct calls at the fastest concurrency
        ours = (0.0, 0.0, 0)  # tokens/s of the sending phase, end to end, tokens
        texts: dict[str, str] = {}
        for attempt in range(args.passes):  # alternated, so that a change of machine load hits both
            seconds, tokens, texts = asyncio.run(direct(base_url, requests, fastest))
            best = max(best, (tokens / seconds, tokens))
            out = Path(tmp) / f"run{attempt}"
            send_s, total_s, tokens = cotfactory_run(base_url, data, out, args.max_tokens, fastest)
            ours = max(ours, (tokens / send_s, tokens / total_s, tokens))
        rows = read_jsonl(out / "samples.jsonl")
        same = sum(texts.get(row["key"]) == row["text"] for row in rows)

    print(
        f"direct AsyncOpenAI calls at the fastest of concurrency {args.concurrency} ({fastest}): {best[0]:6.1f} "
        f"completion tok/s ({len(requests)} requests, {best[1]} tokens, {args.threads} llama.cpp threads)"
    )
    print(
        f"cotfactory generate (concurrency {fastest}): {ours[0]:6.1f} completion tok/s = {ours[0] / best[0]:.2f} x "
        f"direct calls (target >= 0.95 x); end to end incl. planning and export {ours[1]:6.1f} tok/s "
        f"= {ours[1] / best[0]:.2f} x"
    )
    print(f"identical texts (same prompts and seeds): {same}/{len(rows)}; completion tokens {ours[2]} vs {best[1]}")


if __name__ == "__main__":
    main()
