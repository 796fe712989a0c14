"""The scripted arithmetic teacher that also writes new problems (hard-problem rounds' ``problem_template``).

Run it as its own process, like bench/arith_teacher.py, whose replies it gives to everything else::

    python bench/arith_writer.py --port 0 [--seed 0] [--varied] [--unparseable 0.2]

A prompt that asks to "Write one new question" (the bundled new-problem template) like "What is 30 + 40 -
20?" gets "New question: What is 50 + 20 - 40?": the same operations on new operands of the same kind
(as many digits as the original's longest; for two digits, multiples of 10 where the original's are all
multiples of 10, of 5 likewise), drawn until every partial result stays in [0, 9] or [0, 99] by that digit
count (widened to hold the original's own) and the question differs from the original. With probability
``--unparseable`` it replies out of that form instead. The reply is deterministic in (expression, request
seed, ``--seed``); its usage counts words, as the arithmetic teacher's does.

:class:`ArithWriter` starts it as a subprocess for the duration of a ``with`` block.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import random
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import arith_teacher  # noqa: E402
from arith_teacher import apply, completion_body, parse_expression, user_text  # noqa: E402
from loopback import serve_aiohttp  # noqa: E402

WRITE = re.compile(r"write one new question", re.I)
REFUSAL = "Here is a question of the same kind, testing the same skill; I leave the numbers to you."


def new_operands(first: int, steps: list[tuple[str, int]], rng: random.Random) -> tuple[int, list[tuple[str, int]]]:
    """A new (first, steps): the same operations, operands of the same kind, partial results in range (after
    200 draws without one, the original with its first operand one larger)."""
    operands = [first, *(n for _, n in steps)]
    digits = max(len(str(abs(n))) for n in operands)
    multiple = next(m for m in (10, 5, 1) if all(n % m == 0 for n in operands)) if digits == 2 else 1
    pool = [n for n in range(10 ** (digits - 1), 10**digits) if n % multiple == 0]
    low = min(0, *_partials(first, steps))
    high = max(10**digits - 1, *_partials(first, steps))
    for _ in range(200):
        new_first, new_steps = rng.choice(pool), [(op, rng.choice(pool)) for op, _ in steps]
        if (new_first, new_steps) != (first, steps) and all(low <= v <= high for v in _partials(new_first, new_steps)):
            return new_first, new_steps
    return first + 1, steps


def _partials(first: int, steps: list[tuple[str, int]]) -> list[int]:
    values, value = [], first
    for op, operand in steps:
        value = apply(value, op, operand)
        values.append(value)
    return values


def write_reply(prompt: str, seed: Any, server_seed: int, unparseable: float) -> str:
    parsed = parse_expression(prompt)
    if parsed is None:
        return REFUSAL
    first, steps = parsed
    key = json.dumps(["write", first, steps, seed, server_seed])
    rng = random.Random(int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big"))
    if rng.random() < unparseable:
        return REFUSAL
    new_first, new_steps = new_operands(first, steps, rng)
    expression = str(new_first) + "".join(f" {op} {n}" for op, n in new_steps)
    return f"New question: What is {expression}?"


def writer_body(body: dict[str, Any], server_seed: int, varied: bool, unparseable: float) -> dict[str, Any]:
    """The arithmetic teacher's reply, or for a write prompt the same envelope around a new question."""
    reply = completion_body(body, server_seed, varied)
    prompt = user_text(body)
    if WRITE.search(prompt):
        text = write_reply(prompt, body.get("seed"), server_seed, unparseable)
        words = len(text.split())
        reply["choices"][0] |= {"finish_reason": "stop", "message": {"role": "assistant", "content": text}}
        reply["usage"] |= {"completion_tokens": words, "total_tokens": reply["usage"]["prompt_tokens"] + words}
    return reply


def build_app(server_seed: int, varied: bool, unparseable: float) -> Any:
    """arith_teacher's server, its replies from ``writer_body``."""
    return arith_teacher.build_app(
        server_seed, varied, reply=lambda body: writer_body(body, server_seed, varied, unparseable)
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--seed", type=int, default=0, help="server seed mixed into every reply's draw")
    parser.add_argument("--varied", action="store_true", help="problem-dependent difficulty (arith_teacher.py)")
    parser.add_argument("--unparseable", type=float, default=0.2, help="share of write replies out of form")
    args = parser.parse_args(argv)
    asyncio.run(serve_aiohttp(build_app(args.seed, args.varied, args.unparseable), args.port))


class ArithWriter(arith_teacher.ArithTeacher):
    """Start the writing arithmetic teacher as a subprocess for the duration of a ``with`` block."""

    script = Path(__file__).resolve()
    label = "arith writer"


if __name__ == "__main__":
    main()
