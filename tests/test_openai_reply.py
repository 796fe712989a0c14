"""The openai teacher reads raw reply bodies (no SDK model objects): it must read exactly what the SDK's
own ``create`` reads — texts, finish reasons, usage, logprobs — for chat and completions, n=1 and n>1."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import openai
import pytest
from fake_openai_server import FakeServer
from helpers import fake_teacher_args, invoke, write_sums

from cotfactory.prompts import load_template
from cotfactory.store import Store
from cotfactory.teachers.openai_api import MalformedResponse, _json_bytes, _logprob_entries, read_reply


def _chat_body(choices: list[dict[str, Any]], usage: dict[str, int] | None) -> bytes:
    body: dict[str, Any] = {"id": "c", "object": "chat.completion", "created": 1, "model": "m", "choices": choices}
    if usage is not None:
        body["usage"] = usage
    return json.dumps(body).encode()


def _top(token: str, logprob: float) -> dict[str, Any]:
    return {"token": token, "logprob": logprob, "bytes": None}


CHAT_LOGPROBS = {
    "content": [
        {**_top("The", -0.1), "top_logprobs": [_top("The", -0.1), _top("A", -2.5)]},
        {**_top(" answer", -0.01), "top_logprobs": [_top(" answer", -0.01)]},
        {**_top(" é", -1.0), "top_logprobs": None},
    ]
}
COMPLETION_LOGPROBS = {
    "tokens": ["The", " answer"],
    "token_logprobs": [-0.1, -0.2],
    "top_logprobs": [{"The": -0.1, "A": -2.0}, None],
    "text_offset": [0, 3],
}


def _sdk_entries(logprobs: Any) -> list[tuple[str, float, dict[str, float]]] | None:
    """What the teacher read from the SDK's objects before it read raw bodies."""
    if logprobs is None:
        return None
    if getattr(logprobs, "content", None) is not None:
        return [(e.token, e.logprob, {t.token: t.logprob for t in e.top_logprobs or []}) for e in logprobs.content]
    tops = logprobs.top_logprobs or [{}] * len(logprobs.tokens)
    return [
        (t, lp, dict(top or {})) for t, lp, top in zip(logprobs.tokens, logprobs.token_logprobs, tops, strict=False)
    ]


@pytest.mark.parametrize(
    "raw",
    [
        _chat_body(
            [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "Hi."},
                    "finish_reason": "stop",
                    "logprobs": None,
                }
            ],
            {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9},
        ),
        _chat_body(  # n=3 out of order, a null content, a length finish, logprobs; no usage
            [
                {"index": 2, "message": {"role": "assistant", "content": "two"}, "finish_reason": "length"},
                {"index": 0, "message": {"role": "assistant", "content": None}, "finish_reason": "stop"},
                {
                    "index": 1,
                    "message": {"role": "assistant", "content": "one ✓"},
                    "finish_reason": "stop",
                    "logprobs": CHAT_LOGPROBS,
                },
            ],
            None,
        ),
    ],
)
def test_chat_replies_read_as_the_sdk_reads_them(raw: bytes) -> None:
    sdk = openai.types.chat.ChatCompletion.construct(**json.loads(raw))  # as the SDK builds a reply
    reply = read_reply(raw, n=3)
    assert [(c.index, c.text, c.finish_reason) for c in reply.choices] == [
        (c.index, c.message.content or "", c.finish_reason) for c in sdk.choices
    ]
    assert [_logprob_entries(c.logprobs) for c in reply.choices] == [_sdk_entries(c.logprobs) for c in sdk.choices]
    usage = sdk.usage
    assert (reply.prompt_tokens, reply.completion_tokens) == (
        (usage.prompt_tokens, usage.completion_tokens) if usage else (0, 0)
    )


def test_completion_replies_read_as_the_sdk_reads_them() -> None:
    body = {
        "id": "c",
        "object": "text_completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "text": " The answer is 3.", "finish_reason": "stop", "logprobs": COMPLETION_LOGPROBS},
            {"index": 1, "text": "", "finish_reason": "length", "logprobs": None},
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11},
    }
    raw = json.dumps(body).encode()
    sdk = openai.types.Completion.construct(**body)
    reply = read_reply(raw, n=2)
    assert [(c.index, c.text, c.finish_reason) for c in reply.choices] == [
        (c.index, c.text, c.finish_reason) for c in sdk.choices
    ]
    assert [_logprob_entries(c.logprobs) for c in reply.choices] == [_sdk_entries(c.logprobs) for c in sdk.choices]
    assert (reply.prompt_tokens, reply.completion_tokens) == (5, 6)


@pytest.mark.parametrize(
    ("raw", "n", "error"),
    [
        (b'{"choices": []}', 1, MalformedResponse),
        (_chat_body([{"index": i, "message": {"content": "x"}} for i in range(3)], None), 2, MalformedResponse),
        (b'{"error": {"message": "overloaded", "type": "server_error"}}', 1, MalformedResponse),  # a 200 error
        (b'{"choices": [{"index": 0, "finish_reason": "stop"}]}', 1, MalformedResponse),  # no text
        (b'{"choices": [{"index": 0, "text": 3}]}', 1, MalformedResponse),
        (b'["not", "an", "object"]', 1, MalformedResponse),
        (b'{"choices": [{"index": 0, "text": "cut', 1, json.JSONDecodeError),  # truncated: transient
        (b"<html>busy</html>", 1, json.JSONDecodeError),
    ],
)
def test_unusable_replies_are_refused(raw: bytes, n: int, error: type[Exception]) -> None:
    with pytest.raises(error):
        read_reply(raw, n)


def test_request_bodies_are_the_bytes_the_sdk_would_send() -> None:
    body = {
        "model": "m",
        "temperature": 0.7,
        "top_p": 1.0,
        "seed": 2147483647,
        "max_tokens": 64,
        "stop": ["\n\nQ:"],
        "messages": [{"role": "user", "content": 'Wie viel ist 2 + 3? "Schritt für Schritt" ✓ \u2028 \x01'}],
    }
    sdk_dumps = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
    assert _json_bytes(body) == sdk_dumps  # the SDK's own serialisation (openai._utils._json.openapi_dumps)
    huge = {**body, "seed": 2**70}  # beyond orjson's range: still sent (the server decides)
    assert json.loads(_json_bytes(huge))["seed"] == 2**70


@pytest.mark.parametrize(
    ("template", "extra"),
    [
        ("zero-shot-cot", ("--honour-n",)),  # chat, n>1 calls
        ("few-shot-cot-gsm8k-completion", ("--ignore-n",)),  # /completions with stop, n fanned out
    ],
)
def test_samples_are_what_the_sdk_create_returns_for_the_same_request(
    tmp_path: Path, template: str, extra: tuple[str, ...]
) -> None:
    """Every stored sample's text, finish reason and token counts equal those of the SDK's own
    ``create`` sent the same request (the fake server's replies are deterministic in prompt, seed,
    temperature and choice index)."""
    data = write_sums(tmp_path / "q.jsonl", 4)
    with FakeServer(*extra) as server:
        args = fake_teacher_args(server.base_url, data, tmp_path / "run", "")
        args[args.index("zero-shot-cot")] = template
        code, output = invoke(
            *args, "--temperatures", "0.3,0.9", "--seeds", "1,2", "--samples-per-setting", "2", "--max-tokens", "24"
        )
        assert code == 0, output
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        rendered = load_template(template)
        with Store.in_run(tmp_path / "run") as store:
            problems = store.problems()
            samples = list(store.samples())
        assert len(samples) == 4 * 2 * 2 * 2 and not any(s.failed for s in samples)
        for sample in samples:
            request = sample.request
            prompt = rendered.render(problems[request.problem_id])
            n = sample.metadata.get("n", 1)
            args_: dict[str, Any] = {
                "model": request.model,
                "temperature": request.temperature,
                "top_p": request.top_p,
                "seed": sample.sent_seed,
                "max_tokens": sample.sent_max_tokens,
                **({"n": n} if n > 1 else {}),
                **({"stop": prompt.stop[:4]} if prompt.stop else {}),
            }
            if prompt.messages is not None:
                reply = client.chat.completions.create(messages=prompt.messages, **args_)
                choice = reply.choices[request.sample_index if n > 1 else 0]
                text = choice.message.content
            else:
                reply = client.completions.create(prompt=prompt.text, **args_)
                choice = reply.choices[request.sample_index if n > 1 else 0]
                text = choice.text
            assert sample.text == text and sample.finish_reason == choice.finish_reason
            if n == 1:
                assert (sample.prompt_tokens, sample.completion_tokens) == (
                    reply.usage.prompt_tokens,
                    reply.usage.completion_tokens,
                )
        assert {s.metadata.get("n", 1) for s in samples} == ({2} if "--honour-n" in extra else {1})
