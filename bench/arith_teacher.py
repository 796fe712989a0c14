"""A scripted arithmetic teacher: an OpenAI-compatible HTTP server that solves chained sums step by step.

Run it as its own process::

    python bench/arith_teacher.py --port 0 [--seed 0] [--varied]

It prints exactly one line ``PORT <port>`` to stdout once it listens and serves until SIGTERM/SIGINT.
Endpoints: ``GET /v1/models``, ``POST /v1/chat/completions``, ``GET /stats``.

The user message holds a question "What is 37 + 48 - 25?" (inside any template, e.g. zero-shot-cot's
"Q: ..."); the reply is the step-by-step rationale "37 + 48 = 85. 85 - 25 = 60. The answer is 60.".
With probability ``p(T) = min(0.1 + 0.5 T, 0.9)`` (T = the request's temperature) one step is computed
wrongly and the error propagates to the final answer. With ``--varied`` the difficulty depends on the
problem: a hash of the expression draws d uniform in [0, 1) and the error probability is
``min(2 d p(T), 0.95)`` — some problems nearly always right, others mostly wrong, as a real teacher's are.
The reply is deterministic in (expression, request seed, temperature, ``--seed``); ``n`` is ignored (one
choice, as llama.cpp does). A prompt that states "The correct answer is N" (the rationalize template)
gets a rationale without a slip.

:class:`ArithTeacher` starts it as a subprocess for the duration of a ``with`` block::

    with ArithTeacher() as teacher:
        ...  # teacher.base_url
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import hashlib
import json
import random
import re
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from loopback import ProcessServer, serve_aiohttp  # noqa: E402

MODEL_ID = "arith-teacher"
EXPRESSION = re.compile(r"What is (\d+(?:\s*[-+]\s*\d+)+)\s*\?")
TOKEN = re.compile(r"\d+|[-+]")
ERROR_OFFSETS = (-10, -2, -1, 1, 2, 10)
GIVEN_ANSWER = re.compile(r"The correct answer is -?\d+")  # the rationalize template's hint


def error_probability(temperature: float) -> float:
    """p(T) = 0.1 + 0.5 T, capped at 0.9."""
    return min(0.1 + 0.5 * temperature, 0.9)


def difficulty(first: int, steps: list[tuple[str, int]]) -> float:
    """A problem's own difficulty d in [0, 1), from its expression alone (``--varied``)."""
    key = json.dumps(["difficulty", first, steps])
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big") / 2**64


def parse_expression(text: str) -> tuple[int, list[tuple[str, int]]] | None:
    """'What is 37 + 48 - 25?' → (37, [('+', 48), ('-', 25)]); the last question in the text wins."""
    matches = EXPRESSION.findall(text)
    if not matches:
        return None
    tokens = TOKEN.findall(matches[-1])
    first = int(tokens[0])
    return first, [(tokens[i], int(tokens[i + 1])) for i in range(1, len(tokens) - 1, 2)]


def apply(left: int, op: str, right: int) -> int:
    return left + right if op == "+" else left - right


def solve(first: int, steps: list[tuple[str, int]], wrong_step: int | None, offset: int) -> tuple[str, int]:
    """The rationale and its final answer; ``wrong_step`` (if any) is off by ``offset`` and the error carries on."""
    sentences = []
    value = first
    for index, (op, operand) in enumerate(steps):
        result = apply(value, op, operand)
        if index == wrong_step:
            result += offset
        sentences.append(f"{value} {op} {operand} = {result}.")
        value = result
    return " ".join(sentences), value


def reply_text(prompt: str, seed: Any, temperature: Any, server_seed: int, varied: bool = False) -> str:
    parsed = parse_expression(prompt)
    if parsed is None:
        return "I cannot find an arithmetic question. The answer is 0."
    first, steps = parsed
    temp = float(temperature) if isinstance(temperature, (int, float)) else 1.0
    key = json.dumps([first, steps, seed, temp, server_seed])
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    p_error = error_probability(temp)
    if varied:
        p_error = min(2 * difficulty(first, steps) * p_error, 0.95)
    if GIVEN_ANSWER.search(prompt):  # rationalization: told the answer, it works toward it without a slip
        p_error = 0.0
    wrong = rng.randrange(len(steps)) if rng.random() < p_error else None
    rationale, answer = solve(first, steps, wrong, rng.choice(ERROR_OFFSETS))
    return f"{rationale} The answer is {answer}."


def user_text(body: dict[str, Any]) -> str:
    parts = []
    for message in body.get("messages") or []:
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            parts.append(content)
        elif isinstance(content, list):
            parts.extend(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "\n".join(parts)


@dataclass
class Stats:
    requests: int = 0


def completion_body(body: dict[str, Any], server_seed: int, varied: bool = False) -> dict[str, Any]:
    prompt = user_text(body)
    text = reply_text(prompt, body.get("seed"), body.get("temperature"), server_seed, varied)
    words = text.split()
    limit = body.get("max_completion_tokens") or body.get("max_tokens")
    finish = "stop"
    if isinstance(limit, int) and 0 < limit < len(words):
        words, finish = words[:limit], "length"
        text = " ".join(words)
    prompt_tokens = len(prompt.split())
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex[:24]}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body.get("model", MODEL_ID),
        "choices": [
            {"index": 0, "finish_reason": finish, "logprobs": None, "message": {"role": "assistant", "content": text}}
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(words),
            "total_tokens": prompt_tokens + len(words),
        },
    }


def build_app(server_seed: int, varied: bool = False, reply: Any = None) -> Any:
    """The server's app; ``reply(body)`` builds a chat reply (default: ``completion_body``)."""
    from aiohttp import web

    if reply is None:
        reply = functools.partial(completion_body, server_seed=server_seed, varied=varied)

    stats = Stats()

    def json_response(payload: Any, status: int = 200) -> web.Response:
        return web.Response(status=status, text=json.dumps(payload), content_type="application/json")

    async def models(request: web.Request) -> web.Response:
        return json_response({"object": "list", "data": [{"id": MODEL_ID, "object": "model", "owned_by": "bench"}]})

    async def chat(request: web.Request) -> web.Response:
        stats.requests += 1
        try:
            body = json.loads(await request.read())
        except ValueError:
            body = None
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            error = {"message": "'messages' is a required property", "type": "invalid_request_error"}
            return json_response({"error": error}, 400)
        return json_response(reply(body))

    async def get_stats(request: web.Request) -> web.Response:
        return json_response({"requests": stats.requests})

    app = web.Application(client_max_size=16 * 1024 * 1024)
    app.router.add_get("/v1/models", models)
    app.router.add_post("/v1/chat/completions", chat)
    app.router.add_get("/stats", get_stats)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="server seed mixed into every reply's draw")
    parser.add_argument("--varied", action="store_true", help="problem-dependent difficulty (see above)")
    args = parser.parse_args(argv)
    asyncio.run(serve_aiohttp(build_app(args.seed, args.varied), args.port))


class ArithTeacher(ProcessServer):
    """Start the arithmetic teacher as a subprocess for the duration of a ``with`` block."""

    script = Path(__file__).resolve()  # the server this class starts (arith_writer.py's subclass: its own)
    label = "arith teacher"

    def __init__(self, *args: str) -> None:
        super().__init__([sys.executable, str(self.script), *args], name=self.label)
        self.args = args

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("/stats")
        return result


if __name__ == "__main__":
    main()
