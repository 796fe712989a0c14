"""Secrets never land on disk or screen; templates cannot leave Jinja's sandbox; no model's own code runs.

(a) extends tests/test_openai_teacher.py::test_the_key_never_lands_anywhere (generate through transient
faults that all recover, run directory only) with what it leaves out: permanent failures whose error
messages are stored (401, a 5xx after the last attempt) from a server that echoes the key back in
them, the filter (with an LLM judge against that server) and the report, every file of the run
directory including the SQLite store and its WAL, and stdout/stderr of every command.
"""

from __future__ import annotations

import ast
import json
import re
import secrets
import sqlite3
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import FakeServer
from helpers import read_jsonl, run_cli, write_jsonl
from loopback import ThreadServer

from cotfactory.config.filter import FilterConfig
from cotfactory.errors import TemplateError
from cotfactory.prompts import load_template
from cotfactory.records import Problem

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "cotfactory"


# --- (a) the API key ---------------------------------------------------------------------------------------


class EchoingServer(ThreadServer):
    """An OpenAI-compatible server that repeats the request's Authorization header in its error messages,
    as some proxies do. Per question: 'refuse' → 401, 'crash' → 500 (every attempt), 'long refusal N' → a
    401 whose message, shifted by N characters, is long enough to be cut by the client's 500-character
    error limit somewhere inside a copy of the key; the judge's prompt → 401; anything else → an answer."""

    def __init__(self) -> None:
        super().__init__(self._handler())

    @staticmethod
    def _handler() -> type[BaseHTTPRequestHandler]:
        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, payload: dict[str, Any]) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self) -> None:  # noqa: N802 - http.server's naming
                self._send(200, {"object": "list", "data": [{"id": "echo", "object": "model", "owned_by": "t"}]})

            def do_POST(self) -> None:  # noqa: N802
                request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                prompt = json.dumps(request.get("messages") or request.get("prompt"))
                auth = self.headers.get("Authorization", "")
                if "refuse" in prompt or "grading" in prompt:  # the judge's prompt says "grading"
                    self._send(401, _error(f"Incorrect API key provided: {auth}.", "invalid_api_key"))
                elif "crash" in prompt:
                    self._send(500, _error(f"upstream failed for {auth}", "server_error"))
                elif match := re.search(r"long refusal (\d+)", prompt):
                    pad = "." * int(match.group(1))
                    self._send(401, _error(pad + f" rejected {auth}" * 30, "invalid_api_key"))
                else:
                    self._send(200, _completion(request, "1 + 1 = 2. The answer is 2."))

        return Handler


def _error(message: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}}


def _completion(request: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-echo",
        "object": "chat.completion",
        "created": 0,
        "model": request.get("model", "echo"),
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": text}}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 8, "total_tokens": 13},
    }


@pytest.fixture()
def key(monkeypatch: pytest.MonkeyPatch) -> str:
    value = f"sk-test-SECRET-{secrets.token_hex(16)}"
    monkeypatch.setenv("OPENAI_API_KEY", value)
    return value


def _questions(path: Path, questions: list[str]) -> str:
    return str(write_jsonl(path, ({"id": f"q{i}", "question": q, "answer": "2"} for i, q in enumerate(questions))))


def _invoke(*args: str) -> tuple[int, str]:
    result = run_cli(*args)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    return result.exit_code, result.stdout + result.stderr


def _generate(data: str, base_url: str, out: Path, *extra: str) -> tuple[int, str]:
    return _invoke(
        "generate",
        "--input",
        data,
        "--answer-type",
        "number",
        "--teacher",
        "openai",
        "--model",
        "echo",
        "--base-url",
        base_url,
        "--max-attempts",
        "2",
        "--out",
        str(out),
        *extra,
    )


def _files(folder: Path) -> Iterator[Path]:
    return (path for path in sorted(folder.rglob("*")) if path.is_file())


def _windows(secret: str, size: int = 12) -> set[str]:
    """Every ``size``-character piece of the key's random part: a cut or partly masked key still shows."""
    random_part = secret.removeprefix("sk-test-SECRET-")
    return {random_part[i : i + size] for i in range(len(random_part) - size + 1)}


def _assert_nowhere(secret: str, run_dir: Path, outputs: list[str], pieces: bool = False) -> None:
    needles = {secret} | (_windows(secret) if pieces else set())
    for text in outputs:
        for needle in needles:
            assert needle not in text, f"the key (or {needle!r} of it) is in the output:\n{text}"
    files = list(_files(run_dir))
    assert any(path.name == "store.sqlite" for path in files)
    for path in files:
        data = path.read_bytes()
        for needle in needles:
            assert needle.encode() not in data, f"the key (or {needle!r} of it) is in {path}"


def test_the_key_never_lands_anywhere_even_in_errors(key: str, tmp_path: Path) -> None:
    """generate (with a 401 and a 5xx that exhausts its attempts, both echoing the key), filter with a judge
    on the same server, and report: the key is in no file of the run directory and no output."""
    out = tmp_path / "run"
    data = _questions(tmp_path / "q.jsonl", ["What is 1 + 1?", "Please refuse: 1 + 1?", "Make it crash: 1 + 1?"])
    outputs = []
    with EchoingServer() as server:
        code, output = _generate(data, server.base_url, out)
        outputs.append(output)
        assert code == 1 and "HTTP 401" in output and "HTTP 500" in output, output  # failures are listed
        rows = read_jsonl(out / "samples.jsonl")
        assert sorted(bool(r["error"]) for r in rows) == [False, True, True]
        assert any("Incorrect API key provided: Bearer ***" in (r["error"] or "") for r in rows)

        code, output = _invoke(
            "filter", str(out), "--reward", "judge", "--judge-model", "echo", "--judge-base-url", server.base_url
        )
        outputs.append(output)
        assert code == 0, output
    with sqlite3.connect(out / "store.sqlite") as db:
        (details,) = db.execute("SELECT details FROM scores").fetchone()
    assert "Incorrect API key provided: Bearer ***" in json.loads(details)["error"]  # the judge's 401, stored
    code, output = _invoke("report", str(out))
    outputs.append(output)
    assert code == 0, output
    assert (out / "report" / "report.html").exists() and (out / "funnel.json").exists()
    _assert_nowhere(key, out, outputs)
    assert "OPENAI_API_KEY" in (out / "config.json").read_text()  # the variable's name, never its value


def test_the_key_never_lands_anywhere_with_transient_faults(key: str, tmp_path: Path) -> None:
    """The loopback fake server with injected 5xx and dropped connections; some requests fail for good."""
    out = tmp_path / "run"
    data = _questions(tmp_path / "q.jsonl", [f"What is {i} + {i}?" for i in range(6)])
    with FakeServer("--fault-rate", "0.6", "--faults", "500,503,drop,nonjson") as server:
        code, output = _invoke(
            "generate",
            "--input",
            data,
            "--teacher",
            "openai",
            "--model",
            "fake-teacher",
            "--base-url",
            server.base_url,
            "--max-attempts",
            "1",
            "--out",
            str(out),
        )
    assert code == 1 and "failed" in output, output  # with one attempt each, some fail for good
    _assert_nowhere(key, out, [output])


def test_no_piece_of_the_key_survives_a_cut_error_message(key: str, tmp_path: Path) -> None:
    out = tmp_path / "run"
    data = _questions(tmp_path / "q.jsonl", [f"A long refusal {n}: 1 + 1?" for n in range(0, 64, 4)])
    with EchoingServer() as server:
        code, output = _generate(data, server.base_url, out)
    assert code == 1, output
    _assert_nowhere(key, out, [output], pieces=True)


# --- (b) the template sandbox ------------------------------------------------------------------------------

PROBLEM = Problem(id="p1", question="What is 2 + 3?", gold="5", answer_type="number", metadata={"k": "v"})

ESCAPES = {
    "str-mro-subclasses": "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "question-mro-subclasses": "{{ question.__class__.__mro__[1].__subclasses__() }}",
    "tuple-base-subclasses-loop": "{% for c in ().__class__.__base__.__subclasses__() %}{{ c }}{% endfor %}",
    "cycler-globals": "{{ cycler.__init__.__globals__ }}",
    "cycler-globals-os-popen": "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    "joiner-globals": "{{ joiner.__init__.__globals__ }}",
    "lipsum-globals": "{{ lipsum.__globals__ }}",
    "namespace-init": "{{ namespace.__init__ }}",
    "self-init": "{{ self.__init__ }}",
    "self-context": "{{ self._TemplateReference__context }}",
    "config-object": "{{ config }}",
    "request-object": "{{ request.application.__globals__ }}",
    "namespace-class": "{% set ns = namespace(q=question) %}{{ ns.__class__ }}",
    "namespace-private-attrs": "{% set ns = namespace() %}{{ ns._Namespace__attrs }}",
    "namespace-holding-metadata": "{% set ns = namespace(m=metadata) %}{{ ns.m.__class__.__subclasses__() }}",
    "attr-filter": "{{ question|attr('__class__') }}",
    "format-attribute": "{{ '{0.__class__}'.format(question) }}",
    "format-map-attribute": "{{ '{x.__class__}'.format_map({'x': question}) }}",
    "percent-format-attribute": "{{ '%s'|format(question.__class__) }}",
    "metadata-class": "{{ metadata.__class__.__base__.__subclasses__() }}",
    "metadata-mutation": "{{ metadata.update({'k': 'changed'}) }}",
    "exemplars-mutation": "{{ exemplars.append(1) }}",
    "options-item-internals": "{{ options.__getitem__ }}",
    "dict-items-self": "{{ metadata.items.__self__ }}",
    "macro-globals": "{% macro m() %}{% endmacro %}{{ m.__globals__ }}",
    "gold-doc": "{{ gold.__doc__ }}",
    "int-class": "{% set x = 1 %}{{ x.__class__.__subclasses__() }}",
    "range-too-big": "{{ range(10 ** 9) | list }}",
}


def _attack(folder: Path, name: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(f"form: completion\nprompt: {json.dumps(ESCAPES[name])}\n")
    return path


@pytest.mark.parametrize("name", ESCAPES)
def test_template_escape_is_a_one_line_template_error(tmp_path: Path, name: str) -> None:
    path = _attack(tmp_path, name)
    with pytest.raises(TemplateError) as info:
        load_template(str(path)).render(PROBLEM)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    assert PROBLEM.metadata == {"k": "v"}
    code, output = _invoke("templates", "show", str(path), "--problem", PROBLEM.model_dump_json())
    lines = output.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}"), output


def test_template_escape_through_generate_writes_nothing(tmp_path: Path) -> None:
    """generate renders every prompt before it builds a teacher or creates the run directory."""
    data = _questions(tmp_path / "q.jsonl", ["What is 1 + 1?"])
    path = _attack(tmp_path, "cycler-globals-os-popen")
    out = tmp_path / "run"
    code, output = _invoke(
        "generate", "--input", data, "--template", str(path), "--teacher", "replay", "--replay", data, "--out", str(out)
    )
    lines = output.splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith(f"error: {path}"), output
    assert not out.exists()


# --- (c) trust_remote_code ----------------------------------------------------------------------------------


def test_trust_remote_code_is_never_on_unless_the_user_asks() -> None:
    """Every ``trust_remote_code`` in the package is False, or passes on the value of the one user option
    (FilterConfig.trust_remote_code, flag --trust-remote-code, default off); no default turns it on."""
    seen = 0
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        assert not re.search(r"trust_remote_code\s*[=:]\s*True|['\"]trust_remote_code['\"]\s*:", source), path
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, ast.keyword) and node.arg == "trust_remote_code":
                seen += 1
                value = node.value
                allowed = (
                    (isinstance(value, ast.Constant) and value.value is False)
                    or (isinstance(value, ast.Name) and value.id == "trust_remote_code")
                    or (isinstance(value, ast.Attribute) and value.attr == "trust_remote_code")
                )
                assert allowed, f"{path}:{node.value.lineno}: trust_remote_code={ast.unparse(value)}"
            if isinstance(node, ast.arguments):
                names = [a.arg for a in node.posonlyargs + node.args]
                defaults = dict(zip(names[len(names) - len(node.defaults) :], node.defaults, strict=True))
                for arg, default in zip(node.kwonlyargs, node.kw_defaults, strict=True):
                    if default is not None:
                        defaults[arg.arg] = default
                default = defaults.get("trust_remote_code")
                # None: a CLI flag left unset, which means the configuration's default (False)
                assert default is None or (isinstance(default, ast.Constant) and default.value in (False, None)), path
            if isinstance(node, ast.Attribute) and node.attr == "trust_remote_code" and isinstance(node.ctx, ast.Load):
                # read from the filter configuration (the user's option) and nowhere else
                assert isinstance(node.value, ast.Name) and node.value.id == "config", f"{path}:{node.lineno}"
    assert seen > 0  # the reward-model loader passes it on explicitly
    assert FilterConfig.model_fields["trust_remote_code"].default is False
    assert FilterConfig(run_dir="r").trust_remote_code is False
