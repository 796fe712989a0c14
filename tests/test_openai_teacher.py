"""The openai teacher against a real HTTP server on 127.0.0.1 that misbehaves on purpose."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_openai_server import FakeServer
from helpers import fake_teacher_args, invoke, read_jsonl, stored_samples, write_sums

from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
KEY = "sk-test-0123456789abcdefSECRET"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTFACTORY_TEST_KEY", KEY)


def _args(server: FakeServer, data: Path, out: Path, *extra: str) -> list[str]:
    return fake_teacher_args(server.base_url, data, out, "COTFACTORY_TEST_KEY", *extra)


def test_every_request_answered_exactly_once_through_every_fault(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 60)
    with FakeServer("--latency", "0.01", "--fault-rate", "0.35", "--timeout-sleep", "3", "--seed", "7") as server:
        code, output = invoke(
            *_args(
                server,
                data,
                tmp_path / "run",
                "--temperatures",
                "0.2,0.9",
                "--seeds",
                "1,2,3",
                "--use-n",
                "never",
                "--concurrency",
                "32",
                "--timeout",
                "1",
                "--max-attempts",
                "10",
            )
        )
        stats = server.stats()
    assert code == 0, output
    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert len(rows) == 60 * 2 * 3 and len({r["key"] for r in rows}) == len(rows)
    assert all(r["error"] is None and r["answer"] is not None for r in rows)
    assert all(r["text"].endswith(f"The answer is {r['answer']}.") for r in rows)
    # every fault kind really happened, and the retries are visible per sample
    assert set(stats["faults"]) == {
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
    }
    assert sum(r["attempts"] for r in rows) == stats["requests"]
    assert sum(r["attempts"] > 1 for r in rows) >= 0.2 * len(rows)
    # the server never had to answer one request twice (a timed-out reply is sent to nobody)
    assert stats["ok_by_body_max"] == 1 and stats["ok"] == len(rows)
    with Store.in_run(tmp_path / "run") as store:
        assert store.count() == len(rows)


def test_retry_after_is_honoured_and_attempts_are_bounded(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 1)
    with FakeServer("--latency", "0", "--fault-rate", "1", "--faults", "429-retry-after") as server:
        started = time.monotonic()
        code, output = invoke(*_args(server, data, tmp_path / "run", "--max-attempts", "3"))
        elapsed = time.monotonic() - started
        assert server.stats()["requests"] == 3
    assert code == 1 and "HTTP 429" in output and "(after 3 attempts)" in output
    assert elapsed >= 2.0  # two waits of the server's Retry-After: 1
    row = read_jsonl(tmp_path / "run" / "samples.jsonl")[0]
    assert row["attempts"] == 3 and row["finish_reason"] == "error"


@pytest.mark.parametrize(
    ("extra", "status"), [(("--model", "missing-model"), "HTTP 404"), (("--temperatures", "2.5"), "HTTP 400")]
)
def test_permanent_errors_fail_at_once_and_are_listed(tmp_path: Path, extra: tuple[str, ...], status: str) -> None:
    data = write_sums(tmp_path / "q.jsonl", 3)
    with FakeServer("--latency", "0") as server:
        code, output = invoke(*_args(server, data, tmp_path / "run"), *extra)
        assert server.stats()["requests"] == 3  # not retried
    assert code == 1
    assert output.count("failed") >= 3 and status in output
    rows = read_jsonl(tmp_path / "run" / "samples.jsonl")
    assert all(r["attempts"] == 1 and r["error"].startswith(status) for r in rows)


def test_bad_key_is_a_permanent_401(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COTFACTORY_TEST_KEY", "bad-key")
    data = write_sums(tmp_path / "q.jsonl", 2)
    with FakeServer("--latency", "0") as server:
        code, output = invoke(*_args(server, data, tmp_path / "run"))
    assert code == 1 and "HTTP 401" in output


def test_n_is_used_when_honoured_and_fanned_out_when_ignored(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 4)
    with FakeServer("--latency", "0", "--honour-n") as server:
        code, _ = invoke(*_args(server, data, tmp_path / "honour", "--samples-per-setting", "4"))
        assert code == 0 and server.stats()["requests"] == 4  # one n=4 call per problem
    honoured = read_jsonl(tmp_path / "honour" / "samples.jsonl")
    assert len(honoured) == 16 and len({r["text"] for r in honoured}) > 4
    with FakeServer("--latency", "0", "--ignore-n") as server:
        code, _ = invoke(*_args(server, data, tmp_path / "ignore", "--samples-per-setting", "4", "--concurrency", "1"))
        assert code == 0 and server.stats()["requests"] == 4 + 4 * 3  # first n=4 call gives 1; then 1 per sample
    ignored = read_jsonl(tmp_path / "ignore" / "samples.jsonl")
    assert len(ignored) == 16
    for problem in range(4):
        texts = {r["text"] for r in ignored if r["problem_id"] == f"q{problem}"}
        assert len(texts) >= 3  # each fanned-out sample had its own seed


def test_length_finish_is_retried_once_with_more_tokens(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 2)
    with FakeServer("--latency", "0", "--length-limit-tokens", "30") as server:
        code, _ = invoke(*_args(server, data, tmp_path / "retry", "--max-tokens", "20"))
        assert code == 0 and server.stats()["requests"] == 4
        code, _ = invoke(*_args(server, data, tmp_path / "noretry", "--max-tokens", "20", "--length-retry-tokens", "0"))
    retried = read_jsonl(tmp_path / "retry" / "samples.jsonl")
    assert all(r["finish_reason"] == "stop" and r["attempts"] == 2 and r["answer"] is not None for r in retried)
    assert all(json.loads(r["metadata"])["length_retried"] for r in retried)
    kept = read_jsonl(tmp_path / "noretry" / "samples.jsonl")
    assert all(r["finish_reason"] == "length" and r["completion_tokens"] == 20 for r in kept)


def test_requests_spread_across_replicas(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 20)
    with FakeServer("--latency", "0.05") as one, FakeServer("--latency", "0.05") as two:
        args = _args(one, data, tmp_path / "run", "--base-url", two.base_url, "--concurrency", "8")
        code, output = invoke(*args)
        counts = one.stats()["requests"], two.stats()["requests"]
    assert code == 0, output
    assert sum(counts) == 20 and min(counts) >= 6


def test_rpm_limit_spaces_requests(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 32)
    with FakeServer("--latency", "0") as server:
        started = time.monotonic()
        code, _ = invoke(*_args(server, data, tmp_path / "run", "--rpm", "30", "--concurrency", "32"))
        elapsed = time.monotonic() - started
    assert code == 0 and elapsed >= 3.0  # a bucket of 30, then one every 2 s


def test_the_key_never_lands_anywhere(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 3)
    with FakeServer("--latency", "0", "--fault-rate", "0.5") as server:
        code, output = invoke(*_args(server, data, tmp_path / "run"))
    assert code == 0 and KEY not in output
    for path in (tmp_path / "run").rglob("*"):
        if path.is_file():
            assert KEY.encode() not in path.read_bytes(), path
    assert "COTFACTORY_TEST_KEY" in (tmp_path / "run" / "config.json").read_text()  # the name, not the value


def test_sigkill_mid_run_then_resume_gives_the_uninterrupted_result(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "q.jsonl", 50)
    with FakeServer("--latency", "0.1") as server:
        base = _args(server, data, tmp_path / "ref", "--temperatures", "0.5,1.0", "--seeds", "1,2", "--use-n", "never")
        code, _ = invoke(*base)
        assert code == 0
        reference = {r["key"]: r["text"] for r in read_jsonl(tmp_path / "ref" / "samples.jsonl")}
        assert len(reference) == 200

        out = tmp_path / "killed"
        command = [
            sys.executable,
            "-m",
            "cotfactory",
            *_args(
                server,
                data,
                out,
                "--temperatures",
                "0.5,1.0",
                "--seeds",
                "1,2",
                "--use-n",
                "never",
                "--concurrency",
                "4",
            ),
        ]
        env = {**os.environ, "COTFACTORY_TEST_KEY": KEY}
        for _kill in range(2):
            proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 60
            before = stored_samples(out)
            while stored_samples(out) < before + 30 and time.monotonic() < deadline:
                time.sleep(0.05)
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        killed_count = stored_samples(out)
        assert 60 <= killed_count < 200
        finished = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
        assert finished.returncode == 0, finished.stderr
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 200 and {r["key"]: r["text"] for r in rows} == reference
    with Store.in_run(out) as store:
        assert store.count() == 200


def test_a_server_without_logprobs_is_refused_before_the_run(tmp_path: Path) -> None:
    """--logprobs asks the server for top logprobs in a one-token probe first: one that returns none
    (this one, like many proxies) is refused with exit 2, and no run directory is made."""
    data = write_sums(tmp_path / "sums.jsonl", 3)
    out = tmp_path / "run"
    with FakeServer() as server:
        for tokenizer in (["--tokenizer", "x"], []):  # with or without one (token strings are kept then)
            code, output = invoke(*_args(server, data, out, "--logprobs", "5", *tokenizer))
            assert code == 2 and "returned no top logprobs for top_logprobs=5" in output
            assert not out.exists()


def test_requests_go_through_the_proxy_the_environment_names(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """HTTP_PROXY is honoured (and NO_PROXY), as the SDK's httpx honours it: the base URL names a host that
    does not exist, and the fake server, named as the proxy, answers every request sent through it."""
    from cotfactory.teachers.openai_transport import env_proxy

    data = write_sums(tmp_path / "q.jsonl", 3)
    nowhere = "http://no-such-host.invalid:9/v1"
    with FakeServer("--latency", "0") as server:
        proxy = server.base_url.removesuffix("/v1")
        for name in ("HTTP_PROXY", "http_proxy"):
            monkeypatch.setenv(name, proxy)
        for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
            monkeypatch.delenv(name, raising=False)
        assert env_proxy(nowhere) == proxy
        code, output = invoke(*fake_teacher_args(nowhere, data, tmp_path / "run", "COTFACTORY_TEST_KEY"))
        assert code == 0, output
        assert server.stats()["requests"] == 3
        monkeypatch.setenv("NO_PROXY", "no-such-host.invalid")
        assert env_proxy(nowhere) is None
    assert len(read_jsonl(tmp_path / "run" / "samples.jsonl")) == 3
