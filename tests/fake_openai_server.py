"""A scripted, fault-injecting OpenAI-compatible HTTP server for tests and benchmarks.

Run it as its own process::

    python tests/fake_openai_server.py --port 0 [--latency 0.2] [--fault-rate 0.2]
        [--faults 429,429-retry-after,500,502,503,timeout,drop,truncated,nonjson,wrong-choices]
        [--honour-n | --ignore-n] [--seed 0] [--timeout-sleep 30] [--tokens-per-reply 20]
        [--length-limit-tokens N] [--fail-marker TEXT]

It prints exactly one line ``PORT <port>`` to stdout once it listens and serves until SIGTERM/SIGINT.

Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``POST /v1/completions``,
``GET /stats`` (accounting), ``GET /stats/detail`` (the same plus per-body detail) and ``POST /reset``
(zero the accounting).

Fault kinds: the default set :data:`FAULT_KINDS` (429 with and without Retry-After, 500/502/503, a
``timeout`` that answers only after ``--timeout-sleep``, a dropped connection, a body cut in half, a
non-JSON body, no choices) and, only when named in ``--faults``, :data:`EXTRA_FAULT_KINDS`:
``extra-choices`` (one choice more than asked), ``error-200`` (status 200 with an error object as the
body) and ``stall`` (headers and half the body, then silence for ``--timeout-sleep``, then the connection
drops). ``--fail-marker TEXT`` makes every request whose prompt contains TEXT a permanent HTTP 400.

Replies are deterministic in (prompt text, request ``seed``, ``temperature``, choice index), are
``--tokens-per-reply`` words long (``--length-limit-tokens`` wins when set; 0 keeps the natural 10-17 words)
and always end with ``The answer is N.``; a reply longer than ``max_tokens`` is cut with finish_reason "length".
Fault injection is deterministic in (canonical request body, per-body attempt number, ``--seed``), so it
does not depend on the order in which concurrent requests arrive; a body is never faulted more than 5 times
in a row.

Tests start it with :class:`FakeServer`::

    with FakeServer("--fault-rate", "0.3") as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k")
        ...
        assert server.stats()["ok_by_body_max"] == 1
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import copy
import hashlib
import json
import random
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from loopback import ProcessServer, serve_aiohttp

FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429-retry-after",
    "500",
    "502",
    "503",
    "timeout",
    "drop",
    "truncated",
    "nonjson",
    "wrong-choices",
)
#: Opt-in kinds (``--faults``), outside the default set so that its meaning stays fixed.
EXTRA_FAULT_KINDS: tuple[str, ...] = ("extra-choices", "error-200", "stall")
ALL_FAULT_KINDS: tuple[str, ...] = FAULT_KINDS + EXTRA_FAULT_KINDS
MODEL_ID = "fake-teacher"
MAX_FAULTS_IN_A_ROW = 5
BAD_KEY = "bad-key"
MISSING_MODEL = "missing-model"


# --------------------------------------------------------------------------------------------- config/state


@dataclass(frozen=True)
class Config:
    latency: float = 0.0
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    honour_n: bool = True
    seed: int = 0
    timeout_sleep: float = 30.0
    tokens_per_reply: int = 20
    length_limit_tokens: int = 0
    fail_marker: str = ""


@dataclass
class Stats:
    requests: int = 0
    ok: int = 0
    client_errors: int = 0
    permanent: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    attempts_by_body: dict[str, int] = field(default_factory=dict)
    faults_in_a_row: dict[str, int] = field(default_factory=dict)
    ok_by_body: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "ok": self.ok,
            "faults": dict(sorted(self.faults.items())),
            "by_body": len(self.attempts_by_body),
            "ok_by_body_max": max(self.ok_by_body.values(), default=0),
            "client_errors": self.client_errors,
        }

    def detail_json(self) -> dict[str, Any]:
        """:meth:`as_json` plus: bodies answered more than once, permanent failures, attempts per body."""
        attempts = collections.Counter(self.attempts_by_body.values())
        return {
            **self.as_json(),
            "ok_twice": sum(count > 1 for count in self.ok_by_body.values()),
            "permanent": self.permanent,
            "attempts_histogram": {str(k): attempts[k] for k in sorted(attempts)},
        }


# --------------------------------------------------------------------------------------------- pure helpers


def _sha256_int(*parts: object) -> int:
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return int.from_bytes(hashlib.sha256(blob).digest()[:8], "big")


def body_key(body: Any) -> str:
    """Identity of a request body: sha256 of its canonical JSON."""
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def choose_fault(key: str, attempt: int, config: Config) -> str | None:
    """Decide, reproducibly and independently of arrival order, whether this attempt of this body faults."""
    if config.fault_rate <= 0 or not config.faults:
        return None
    rng = random.Random(_sha256_int("fault", key, attempt, config.seed))
    if rng.random() >= config.fault_rate:
        return None
    return rng.choice(config.faults)


def reasoning_text(prompt: str, seed: Any, temperature: Any, index: int) -> str:
    """The deterministic reply for (prompt, seed, temperature, choice index); ends with 'The answer is N.'."""
    h = _sha256_int("reply", prompt, seed, temperature, index)
    a, b, style = h % 90 + 10, (h >> 16) % 90 + 10, (h >> 32) % 3
    if style == 0:
        return f"Let me think step by step. {a} + {b} = {a + b}. The answer is {a + b}."
    if style == 1:
        return f"First, multiply the numbers. {a} * {b} = {a * b}. So the product is {a * b}. The answer is {a * b}."
    big, small = max(a, b), min(a, b)
    return f"We need the difference. {big} - {small} = {big - small}. The answer is {big - small}."


def padded_text(base: str, n_words: int) -> str:
    """A reply of exactly ``n_words`` words that still ends with the answer sentence of ``base``."""
    words = base.split()
    tail, head = words[-4:], words[:-4]  # tail is "The answer is N."
    if n_words <= len(tail):
        return " ".join(tail[len(tail) - n_words :])
    eq = words.index("=") if "=" in words else 3
    recheck = ["Checking", "again:", *words[max(eq - 3, 0) : eq + 2]]  # "Checking again: a + b = c."
    want = n_words - len(tail)
    while len(head) + len(recheck) <= want:
        head += recheck
    head += ["Hmm."] * (want - len(head))
    return " ".join(head[:want] + tail)


def prompt_text(body: dict[str, Any], chat: bool) -> str:
    if chat:
        parts: list[str] = []
        for message in body.get("messages") or []:
            content = message.get("content") if isinstance(message, dict) else None
            if isinstance(content, str):
                parts.append(content)
            elif isinstance(content, list):
                parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
        return "\n".join(parts)
    prompt = body.get("prompt", "")
    if isinstance(prompt, list):
        return "\n".join(str(p) for p in prompt)
    return str(prompt)


def error_body(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def validate(body: Any, chat: bool, authorization: str) -> tuple[int, dict[str, Any]] | None:
    """Return (status, error body) for requests a good client must not retry, else None."""
    if authorization.strip() == f"Bearer {BAD_KEY}":
        return 401, error_body(f"Incorrect API key provided: {BAD_KEY}.", "invalid_request_error", "invalid_api_key")
    if not isinstance(body, dict):
        return 400, error_body("Request body must be a JSON object.", "invalid_request_error")
    if body.get("model") == MISSING_MODEL:
        msg = f"The model `{MISSING_MODEL}` does not exist or you do not have access to it."
        return 404, error_body(msg, "invalid_request_error", "model_not_found", "model")
    if not isinstance(body.get("model"), str):
        return 400, error_body("you must provide a model parameter", "invalid_request_error", None, "model")
    if chat and not isinstance(body.get("messages"), list):
        return 400, error_body("'messages' is a required property", "invalid_request_error", None, "messages")
    if not chat and "prompt" not in body:
        return 400, error_body("'prompt' is a required property", "invalid_request_error", None, "prompt")
    temperature = body.get("temperature")
    if temperature is not None and (not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2):
        msg = f"{temperature} is greater than the maximum of 2 - 'temperature'"
        return 400, error_body(msg, "invalid_request_error", "invalid_value", "temperature")
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or n < 1 or n > 128):
        return 400, error_body(f"{n} is not a valid value for 'n'", "invalid_request_error", "invalid_value", "n")
    if body.get("stream"):
        return 400, error_body("stream=true is not supported by the fake server", "invalid_request_error")
    return None


def completion_body(body: dict[str, Any], chat: bool, config: Config) -> dict[str, Any]:
    prompt = prompt_text(body, chat)
    n = int(body.get("n") or 1) if config.honour_n else 1
    limit = body.get("max_completion_tokens") if chat else None
    if limit is None:
        limit = body.get("max_tokens")
    max_tokens = int(limit) if isinstance(limit, int) and limit > 0 else None
    choices: list[dict[str, Any]] = []
    completion_tokens = 0
    for index in range(n):
        text = reasoning_text(prompt, body.get("seed"), body.get("temperature"), index)
        target = config.length_limit_tokens or config.tokens_per_reply
        if target > 0:
            text = padded_text(text, target)
        words = text.split()
        finish_reason = "stop"
        if max_tokens is not None and len(words) > max_tokens:
            words, finish_reason = words[:max_tokens], "length"
            text = " ".join(words)
        completion_tokens += len(words)
        choice: dict[str, Any] = {"index": index, "finish_reason": finish_reason, "logprobs": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choices.append(choice)
    prompt_tokens = len(prompt.split())
    return {
        "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion" if chat else "text_completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL_ID),
        "choices": choices,
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


# --------------------------------------------------------------------------------------------- aiohttp app


def build_app(config: Config) -> Any:
    from aiohttp import web

    stats = Stats()

    def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.Response(status=status, text=json.dumps(payload), content_type="application/json", headers=headers)

    async def send(request: web.Request, response: web.StreamResponse) -> bool:
        """Write the response now; False when the client has already gone (e.g. it timed out)."""
        transport = request.transport
        if transport is None or transport.is_closing():
            return False
        try:
            await response.prepare(request)
            await response.write_eof()
        except (ConnectionError, RuntimeError):
            return False
        return True

    async def stall(request: web.Request, data: bytes) -> None:
        """Send the headers and half the body, go silent past the client's timeout, then drop the connection."""
        response = web.StreamResponse(status=200, headers={"Content-Type": "application/json"})
        response.content_length = len(data)
        try:
            await response.prepare(request)
            await response.write(data[: len(data) // 2])
            await asyncio.sleep(config.timeout_sleep)
        except (ConnectionError, RuntimeError):
            pass
        if request.transport is not None:
            request.transport.abort()

    async def models(request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "test"}]})

    async def get_stats(request: web.Request) -> web.Response:
        return json_response(stats.as_json())

    async def get_stats_detail(request: web.Request) -> web.Response:
        return json_response(stats.detail_json())

    async def reset(request: web.Request) -> web.Response:
        nonlocal stats
        stats = Stats()
        return json_response({"reset": True})

    async def completions(request: web.Request, chat: bool) -> web.StreamResponse:
        raw = await request.read()
        stats.requests += 1
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = raw.decode("utf-8", "replace")
        key = body_key(body)
        attempt = stats.attempts_by_body.get(key, 0)
        stats.attempts_by_body[key] = attempt + 1

        invalid = validate(body, chat, request.headers.get("Authorization", ""))
        if invalid is None and config.fail_marker and config.fail_marker in prompt_text(body, chat):
            stats.permanent += 1
            msg = f"The prompt contains '{config.fail_marker}', which this server always refuses."
            invalid = 400, error_body(msg, "invalid_request_error", "flagged_prompt")
        if invalid is not None:
            stats.client_errors += 1
            await asyncio.sleep(config.latency)
            return json_response(invalid[1], status=invalid[0])

        fault = None
        if stats.faults_in_a_row.get(key, 0) < MAX_FAULTS_IN_A_ROW:
            fault = choose_fault(key, attempt, config)
        if fault is None:
            stats.faults_in_a_row[key] = 0
        else:
            stats.faults_in_a_row[key] = stats.faults_in_a_row.get(key, 0) + 1
            stats.faults[fault] = stats.faults.get(fault, 0) + 1

        await asyncio.sleep(config.latency)
        payload = completion_body(body, chat, config)

        if fault in ("429", "429-retry-after"):
            headers = {"Retry-After": "1", "retry-after-ms": "1000"} if fault == "429-retry-after" else None
            msg = "Rate limit reached for fake-teacher. Please try again later."
            return json_response(error_body(msg, "requests", "rate_limit_exceeded"), 429, headers)
        if fault in ("500", "502", "503"):
            msg = f"The server had an error while processing your request (injected {fault})."
            return json_response(error_body(msg, "server_error"), int(fault))
        if fault == "drop":
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=200)  # aiohttp fails to write it and drops it quietly
        if fault == "truncated":
            text = json.dumps(payload)
            return web.Response(status=200, text=text[: len(text) // 2], content_type="application/json")
        if fault == "nonjson":
            return web.Response(status=200, text="<html>bad gateway</html>", content_type="text/html")
        if fault == "wrong-choices":
            payload["choices"] = []
            return json_response(payload)
        if fault == "extra-choices":
            extra = copy.deepcopy(payload["choices"][-1])
            extra["index"] = len(payload["choices"])
            payload["choices"].append(extra)
            return json_response(payload)
        if fault == "error-200":
            return json_response(error_body("The engine is currently overloaded.", "server_error"))
        if fault == "stall":
            await stall(request, json.dumps(payload).encode())
            return web.Response(status=200)  # the connection is gone: aiohttp drops it quietly
        if fault == "timeout":
            await asyncio.sleep(config.timeout_sleep)

        response = json_response(payload)
        if await send(request, response):
            stats.ok += 1
            stats.ok_by_body[key] = stats.ok_by_body.get(key, 0) + 1
        return response

    async def chat_completions(request: web.Request) -> web.StreamResponse:
        return await completions(request, chat=True)

    async def text_completions(request: web.Request) -> web.StreamResponse:
        return await completions(request, chat=False)

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", text_completions)
    app.router.add_get("/stats", get_stats)
    app.router.add_get("/stats/detail", get_stats_detail)
    app.router.add_post("/reset", reset)
    return app


def parse_args(argv: list[str] | None = None) -> tuple[int, Config]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before every answer")
    parser.add_argument("--fault-rate", type=float, default=0.0, help="probability that a request gets a fault")
    parser.add_argument("--faults", default=",".join(FAULT_KINDS), help="comma-separated fault kinds to draw from")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--honour-n", dest="honour_n", action="store_true", default=True, help="return n choices")
    group.add_argument("--ignore-n", dest="honour_n", action="store_false", help="return 1 choice (as llama.cpp)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the fault draws")
    parser.add_argument("--timeout-sleep", type=float, default=30.0, help="seconds a 'timeout' fault sleeps")
    parser.add_argument("--tokens-per-reply", type=int, default=20, help="words per reply (0: natural length)")
    parser.add_argument(
        "--length-limit-tokens", type=int, default=0, help="replies are N words; max_tokens < N gets 'length'"
    )
    parser.add_argument("--fail-marker", default="", help="a prompt containing this text always gets HTTP 400")
    args = parser.parse_args(argv)
    faults = tuple(f.strip() for f in args.faults.split(",") if f.strip())
    unknown = sorted(set(faults) - set(ALL_FAULT_KINDS))
    if unknown:
        parser.error(f"unknown fault kinds {unknown}; choose from {','.join(ALL_FAULT_KINDS)}")
    if not 0 <= args.fault_rate <= 1:
        parser.error("--fault-rate must be within [0, 1]")
    config = Config(
        latency=args.latency,
        fault_rate=args.fault_rate,
        faults=faults,
        honour_n=args.honour_n,
        seed=args.seed,
        timeout_sleep=args.timeout_sleep,
        tokens_per_reply=args.tokens_per_reply,
        length_limit_tokens=args.length_limit_tokens,
        fail_marker=args.fail_marker,
    )
    return args.port, config


def main(argv: list[str] | None = None) -> None:
    port, config = parse_args(argv)
    asyncio.run(serve_aiohttp(build_app(config), port))


# --------------------------------------------------------------------------------------------- test helper


class FakeServer(ProcessServer):
    """Start the fake server as a subprocess for the duration of a ``with`` block."""

    def __init__(self, *args: str) -> None:
        super().__init__([sys.executable, str(Path(__file__).resolve()), *args], name="fake server")
        self.args: tuple[str, ...] = args

    def stats(self, detail: bool = False) -> dict[str, Any]:
        """The server's accounting (``detail``: also bodies answered twice, permanent failures, attempts)."""
        result: dict[str, Any] = self.get_json("/stats/detail" if detail else "/stats")
        return result

    def reset(self) -> None:
        self.post("/reset")


if __name__ == "__main__":
    main()
