"""Bespoke Curator's `LLM` vs `cotfactory generate` against the same loopback server (fixed latency).

Both send the same chat messages (cotfactory's zero-shot-cot rendering of the same questions), the same
number of requests at the same concurrency, to tests/fake_openai_server.py. Prints, measured in this one
run, requests/s end to end (planning/preparing, sending, writing the results) of each, curator's against
cotfactory's and both against the bound concurrency / latency, and the client CPU per request.

Curator is not a dependency of cotfactory: it runs in its own virtualenv (its pins — litellm, pandas 2.2.2,
vertexai, datasets<4 — clash with the project's), given by --curator-python or $CURATOR_PYTHON; make it with

    python3 -m venv /tmp/curator-venv && /tmp/curator-venv/bin/pip install bespokelabs-curator

Offline, curator needs two shims (set up in its child process here): litellm's local model-cost map
(LITELLM_LOCAL_MODEL_COST_MAP=True, no download) and a stand-in for tiktoken's cl100k_base encoding, which
curator loads at start-up to estimate tokens for its rate limiter and tiktoken downloads from
openaipublic.blob.core.windows.net (the stand-in counts len(text) / 4; it only feeds the limiter, whose
limits are set far above what is sent). Its telemetry is off (TELEMETRY_ENABLED=false). Curator sends one
request more than asked: at start-up it probes the endpoint (empty messages) for rate-limit headers.

    python bench/generate_curator.py [--latency 0.2] [--requests 6000] [--concurrency 64,256]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from fake_openai_server import FakeServer  # noqa: E402
from generate_api import MAX_TOKENS, cotfactory_run, rendered_messages, write_questions  # noqa: E402
from helpers import write_jsonl  # noqa: E402

DEFAULT_CURATOR_PYTHON = "/tmp/curator-venv/bin/python"

# Runs inside curator's virtualenv: argv = base_url, messages.jsonl, concurrency, cache dir.
CURATOR_CHILD = """
import json, resource, sys, time
import tiktoken

class ApproxEncoding:
    name = "approx"
    def encode(self, text, **kwargs):
        return [0] * (len(text) // 4 + 1)

tiktoken.get_encoding = lambda name: ApproxEncoding()  # offline: no BPE download
from bespokelabs import curator

base_url, path, concurrency = sys.argv[1], sys.argv[2], int(sys.argv[3])

class Chat(curator.LLM):
    def prompt(self, row):
        return json.loads(row["messages"])

started = time.perf_counter()
usage = resource.getrusage(resource.RUSAGE_SELF)
cpu0 = usage.ru_utime + usage.ru_stime
llm = Chat(
    model_name="fake-teacher",
    backend="openai",
    generation_params={"temperature": 0.7, "top_p": 1.0, "seed": 0, "max_tokens": MAX_TOKENS},
    backend_params={
        "base_url": base_url,
        "api_key": "k",
        "max_concurrent_requests": concurrency,
        "max_requests_per_minute": 10**8,
        "max_tokens_per_minute": 10**11,
        "max_retries": 3,
    },
)
rows = [{"messages": line} for line in open(path).read().splitlines()]
result = llm(rows)
dataset = getattr(result, "dataset", result)
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"seconds": time.perf_counter() - started, "cpu": usage.ru_utime + usage.ru_stime - cpu0,
                  "rows": len(dataset)}))
""".replace("MAX_TOKENS", str(MAX_TOKENS))


def curator_python(given: str | None) -> tuple[str | None, str]:
    """(interpreter, why not) — the curator virtualenv's python if it can import curator."""
    python = given or os.environ.get("CURATOR_PYTHON") or DEFAULT_CURATOR_PYTHON
    if not Path(python).exists():
        return None, f"{python} not found (make the venv: see this script's docstring)"
    probe = subprocess.run([python, "-c", "import bespokelabs.curator"], capture_output=True, text=True)
    if probe.returncode != 0:
        return None, f"{python} cannot import bespokelabs.curator: {probe.stderr.strip().splitlines()[-1:]}"
    return python, ""


def curator_run(python: str, base_url: str, messages: Path, concurrency: int, tmp: Path) -> dict[str, float]:
    env = {
        **os.environ,
        "CURATOR_CACHE_DIR": tempfile.mkdtemp(dir=tmp),  # a fresh cache: every request is sent
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "TELEMETRY_ENABLED": "false",
        "CURATOR_DISABLE_RICH_DISPLAY": "1",
        "HF_DATASETS_OFFLINE": "1",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [python, "-c", CURATOR_CHILD, base_url, str(messages), str(concurrency)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"curator failed (exit {done.returncode}): {done.stderr.strip()[-1500:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--latency", type=float, default=0.2)
    parser.add_argument("--requests", type=int, default=6000)
    parser.add_argument("--concurrency", default="64,256")
    parser.add_argument("--curator-python", help=f"python of curator's virtualenv (default {DEFAULT_CURATOR_PYTHON})")
    args = parser.parse_args()

    python, why = curator_python(args.curator_python)
    if python is None:
        print(f"curator: not measured — {why}")
        return
    version = subprocess.run(
        [python, "-c", "import importlib.metadata as m; print(m.version('bespokelabs-curator'))"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    import datasets  # noqa: F401  # imported before timing, as curator's child imports it before its clock starts

    with FakeServer("--latency", str(args.latency)) as server, tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        for concurrency in (int(c) for c in args.concurrency.split(",")):
            count = max(args.requests, concurrency * 10)
            data = write_questions(tmp / f"q{concurrency}.jsonl", count)
            ours = cotfactory_run(server.base_url, data, tmp / f"run{concurrency}", concurrency)
            messages = tmp / f"messages{concurrency}.jsonl"
            write_jsonl(messages, rendered_messages(data))
            before = server.stats()["requests"]
            theirs = curator_run(python, server.base_url, messages, concurrency, tmp)
            sent = server.stats()["requests"] - before
            assert theirs["rows"] == count, f"curator returned {theirs['rows']} rows for {count} requests"
            curator_rps = count / theirs["seconds"]
            bound = concurrency / args.latency
            print(
                f"concurrency {concurrency:>4}, {count} requests, end to end: cotfactory {ours.total_rps:7.1f} req/s "
                f"= {ours.total_rps / bound:.2f} x bound, client CPU {ours.cpu_per_request * 1e3:.2f} ms/request; "
                f"curator {version} LLM {curator_rps:7.1f} req/s = {curator_rps / bound:.2f} x bound, client CPU "
                f"{theirs['cpu'] / count * 1e3:.2f} ms/request ({sent} requests sent); "
                f"cotfactory = {ours.total_rps / curator_rps:.2f} x curator"
            )


if __name__ == "__main__":
    main()
