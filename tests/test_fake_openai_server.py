"""The fake OpenAI-compatible server behaves as scripted, as seen through the real `openai` SDK."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import openai
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fake_openai_server import FakeServer  # noqa: E402

ANSWER = re.compile(r"The answer is (-?\d+)\.$")
MESSAGES: list[Any] = [{"role": "user", "content": "What is seventeen plus twenty five?"}]


def client(server: FakeServer, timeout: float = 10.0, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0, timeout=timeout, **kwargs)


def chat(server: FakeServer, content: str = "What is 2 + 2?", timeout: float = 10.0, **kwargs: Any) -> Any:
    messages = [{"role": "user", "content": content}]
    return client(server, timeout).chat.completions.create(model="fake-teacher", messages=messages, **kwargs)


@pytest.fixture(scope="module")
def server() -> Iterator[FakeServer]:
    with FakeServer() as s:
        yield s


@pytest.fixture
def fresh(server: FakeServer) -> FakeServer:
    server.reset()
    return server


# ------------------------------------------------------------------------------------------- normal answers


def test_models(server: FakeServer) -> None:
    models = client(server).models.list()
    assert [m.id for m in models.data] == ["fake-teacher"]
    assert models.data[0].owned_by == "test"


def test_chat_is_deterministic_and_openai_shaped(fresh: FakeServer) -> None:
    c = client(fresh)
    first = c.chat.completions.create(model="fake-teacher", messages=MESSAGES, temperature=0.7, seed=3)
    again = c.chat.completions.create(model="fake-teacher", messages=MESSAGES, temperature=0.7, seed=3)
    text = first.choices[0].message.content
    assert text is not None and ANSWER.search(text), text
    assert again.choices[0].message.content == text
    assert first.object == "chat.completion" and first.model == "fake-teacher"
    assert first.id.startswith("chatcmpl-") and first.created > 0
    choice = first.choices[0]
    assert (choice.index, choice.finish_reason, choice.logprobs, choice.message.role) == (0, "stop", None, "assistant")
    assert first.usage is not None
    assert first.usage.prompt_tokens == len(MESSAGES[0]["content"].split())
    assert first.usage.completion_tokens == len(text.split()) == 20  # --tokens-per-reply default
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens

    texts = {
        c.chat.completions.create(model="fake-teacher", messages=MESSAGES, temperature=0.7, seed=s)
        .choices[0]
        .message.content
        for s in range(10, 16)
    }
    assert len(texts) >= 3  # a different seed usually changes the text
    other_temperature = c.chat.completions.create(model="fake-teacher", messages=MESSAGES, temperature=0.2, seed=3)
    assert other_temperature.choices[0].message.content != text

    stats = fresh.stats()
    assert stats["requests"] == stats["ok"] == 9
    assert stats["by_body"] == 8 and stats["ok_by_body_max"] == 2 and stats["faults"] == {}


def test_text_completions(server: FakeServer) -> None:
    done = client(server).completions.create(model="fake-teacher", prompt="Add 3 and 4 please", max_tokens=64)
    assert done.object == "text_completion"
    assert ANSWER.search(done.choices[0].text)
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.prompt_tokens == 5


def test_max_tokens_cuts_with_length(server: FakeServer) -> None:
    done = chat(server, max_tokens=5)
    text = done.choices[0].message.content
    assert done.choices[0].finish_reason == "length"
    assert len(text.split()) == 5 and done.usage.completion_tokens == 5
    assert not ANSWER.search(text)
    newer = chat(server, max_completion_tokens=7)  # the newer parameter name is honoured too
    assert newer.choices[0].finish_reason == "length" and len(newer.choices[0].message.content.split()) == 7


def test_length_limit_tokens() -> None:
    with FakeServer("--length-limit-tokens", "40") as s:
        short = chat(s, max_tokens=20)
        assert short.choices[0].finish_reason == "length"
        assert len(short.choices[0].message.content.split()) == 20
        full = chat(s, max_tokens=40)
        text = full.choices[0].message.content
        assert full.choices[0].finish_reason == "stop" and len(text.split()) == 40 and ANSWER.search(text)
        assert full.usage.completion_tokens == 40
        # the answer is the same one the 20-word reply was heading for
        unlimited = chat(s)
        assert unlimited.choices[0].message.content == text


def test_n_honoured(server: FakeServer) -> None:
    done = chat(server, n=3, temperature=1.0)
    assert [c.index for c in done.choices] == [0, 1, 2]
    texts = [c.message.content for c in done.choices]
    assert all(ANSWER.search(t) for t in texts)
    assert len(set(texts)) >= 2
    assert done.usage.completion_tokens == sum(len(t.split()) for t in texts)


def test_n_ignored_like_llama_cpp() -> None:
    with FakeServer("--ignore-n") as s:
        done = chat(s, n=3, temperature=1.0)
        assert [c.index for c in done.choices] == [0]


def test_latency_allows_many_concurrent_requests() -> None:
    async def run(base_url: str) -> list[Any]:
        c = openai.AsyncOpenAI(base_url=base_url, api_key="k", max_retries=0, timeout=20)
        calls = [
            c.chat.completions.create(model="fake-teacher", messages=[{"role": "user", "content": f"q {i}"}])
            for i in range(200)
        ]
        try:
            return await asyncio.gather(*calls)
        finally:
            await c.close()

    with FakeServer("--latency", "0.3") as s:
        start = time.monotonic()
        results = asyncio.run(run(s.base_url))
        elapsed = time.monotonic() - start
        assert len(results) == 200 and elapsed < 5, elapsed
        assert s.stats() == {
            "requests": 200,
            "ok": 200,
            "faults": {},
            "by_body": 200,
            "ok_by_body_max": 1,
            "client_errors": 0,
        }


# ------------------------------------------------------------------------------------------- client errors


def test_client_errors_are_not_faults() -> None:
    with FakeServer("--fault-rate", "1") as s:
        with pytest.raises(openai.AuthenticationError) as auth:
            openai.OpenAI(base_url=s.base_url, api_key="bad-key", max_retries=0).chat.completions.create(
                model="fake-teacher", messages=MESSAGES
            )
        assert auth.value.status_code == 401 and auth.value.code == "invalid_api_key"
        with pytest.raises(openai.NotFoundError) as missing:
            client(s).chat.completions.create(model="missing-model", messages=MESSAGES)
        assert missing.value.status_code == 404 and missing.value.code == "model_not_found"
        with pytest.raises(openai.BadRequestError) as bad:
            client(s).chat.completions.create(model="fake-teacher", messages=MESSAGES, temperature=2.5)
        assert bad.value.status_code == 400 and bad.value.param == "temperature"
        stats = s.stats()
        assert (stats["requests"], stats["ok"], stats["faults"], stats["client_errors"]) == (3, 0, {}, 3)


# ------------------------------------------------------------------------------------------- faults


@pytest.mark.parametrize("kind", ["429", "429-retry-after"])
def test_fault_429(kind: str) -> None:
    with FakeServer("--fault-rate", "1", "--faults", kind) as s:
        with pytest.raises(openai.RateLimitError) as err:
            chat(s)
        headers = err.value.response.headers
        if kind == "429":
            assert "retry-after" not in headers and "retry-after-ms" not in headers
        else:
            assert headers["retry-after"] == "1" and headers["retry-after-ms"] == "1000"
        assert err.value.code == "rate_limit_exceeded"
        assert s.stats()["faults"] == {kind: 1}


@pytest.mark.parametrize("status", [500, 502, 503])
def test_fault_5xx(status: int) -> None:
    with FakeServer("--fault-rate", "1", "--faults", str(status)) as s:
        with pytest.raises(openai.InternalServerError) as err:
            chat(s)
        assert err.value.status_code == status
        assert s.stats()["faults"] == {str(status): 1}


def test_fault_timeout() -> None:
    with FakeServer("--fault-rate", "1", "--faults", "timeout", "--timeout-sleep", "3") as s:
        start = time.monotonic()
        with pytest.raises(openai.APITimeoutError, match="Request timed out."):
            chat(s, timeout=0.5)
        assert time.monotonic() - start < 2
        time.sleep(3)  # the server finishes its sleep and finds the client gone: no valid answer was given
        stats = s.stats()
        assert (stats["faults"], stats["ok"], stats["ok_by_body_max"]) == ({"timeout": 1}, 0, 0)


def test_fault_timeout_answers_a_patient_client() -> None:
    with FakeServer("--fault-rate", "1", "--faults", "timeout", "--timeout-sleep", "0.5") as s:
        assert ANSWER.search(chat(s, timeout=10).choices[0].message.content)
        stats = s.stats()
        assert (stats["faults"], stats["ok"]) == ({"timeout": 1}, 1)


def test_fault_drop() -> None:
    with FakeServer("--fault-rate", "1", "--faults", "drop") as s:
        with pytest.raises(openai.APIConnectionError, match="Connection error.") as err:
            chat(s)
        assert not isinstance(err.value, openai.APITimeoutError)
        assert isinstance(err.value.__cause__, httpx2.RemoteProtocolError)
        assert s.stats()["faults"] == {"drop": 1}


def test_fault_truncated() -> None:
    """The SDK does not wrap this: a bare json.JSONDecodeError (a ValueError, not an OpenAIError) escapes."""
    with FakeServer("--fault-rate", "1", "--faults", "truncated") as s:
        with pytest.raises(json.JSONDecodeError) as err:
            chat(s)
        assert not isinstance(err.value, openai.OpenAIError)
        assert s.stats()["faults"] == {"truncated": 1}


def test_fault_nonjson() -> None:
    """The SDK returns the body as a plain str; strict validation makes it APIResponseValidationError."""
    with FakeServer("--fault-rate", "1", "--faults", "nonjson") as s:
        assert chat(s) == "<html>bad gateway</html>"
        strict = client(s, _strict_response_validation=True)
        with pytest.raises(openai.APIResponseValidationError, match="Expected Content-Type"):
            strict.chat.completions.create(model="fake-teacher", messages=[{"role": "user", "content": "other"}])
        assert s.stats()["faults"] == {"nonjson": 2}


def test_fault_wrong_choices() -> None:
    """The SDK returns a normal ChatCompletion whose choices list is empty (usage is still filled in)."""
    with FakeServer("--fault-rate", "1", "--faults", "wrong-choices") as s:
        done = chat(s)
        assert isinstance(done, openai.types.chat.ChatCompletion)
        assert done.choices == [] and done.usage is not None and done.usage.completion_tokens > 0
        stats = s.stats()
        assert (stats["faults"], stats["ok"]) == ({"wrong-choices": 1}, 0)


def test_never_more_than_five_faults_in_a_row() -> None:
    with FakeServer("--fault-rate", "1", "--faults", "500") as s:
        for _ in range(5):
            with pytest.raises(openai.InternalServerError):
                chat(s)
        assert ANSWER.search(chat(s).choices[0].message.content)
        assert s.stats() == {
            "requests": 6,
            "ok": 1,
            "faults": {"500": 5},
            "by_body": 1,
            "ok_by_body_max": 1,
            "client_errors": 0,
        }


def _faulted(s: FakeServer, order: list[int]) -> set[int]:
    faulted = set()
    for i in order:
        try:
            chat(s, content=f"question {i}")
        except openai.InternalServerError:
            faulted.add(i)
    return faulted


def test_fault_draws_are_reproducible_and_order_independent() -> None:
    args = ("--fault-rate", "0.5", "--faults", "500,502")
    with FakeServer(*args, "--seed", "1") as s:
        forward = _faulted(s, list(range(30)))
        s.reset()
        backward = _faulted(s, list(range(29, -1, -1)))
        assert forward == backward and 5 < len(forward) < 25
        stats = s.stats()
        assert stats["ok"] == 30 - len(backward) and sum(stats["faults"].values()) == len(backward)
        # the retry of a faulted body is a fresh draw: eventually everything gets through
        pending = backward
        for _ in range(5):
            pending = _faulted(s, sorted(pending))
        assert pending == set()
        assert s.stats()["ok"] == 30 and s.stats()["ok_by_body_max"] == 1
    with FakeServer(*args, "--seed", "2") as s:
        assert _faulted(s, list(range(30))) != forward


def test_reset_zeroes_the_counters(server: FakeServer) -> None:
    chat(server, content="to be forgotten")
    server.reset()
    assert server.stats() == {
        "requests": 0,
        "ok": 0,
        "faults": {},
        "by_body": 0,
        "ok_by_body_max": 0,
        "client_errors": 0,
    }


# ------------------------------------------------------------------------------------------- process


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_prints_one_port_line_and_exits_cleanly(sig: signal.Signals) -> None:
    script = Path(__file__).resolve().parent / "fake_openai_server.py"
    proc = subprocess.Popen([sys.executable, str(script), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert re.fullmatch(r"PORT \d+\n", line), line
        proc.send_signal(sig)
        rest, _ = proc.communicate(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0 and rest == ""
