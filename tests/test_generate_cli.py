"""`cotfactory generate` end to end through the CLI: resume, exports, and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import invoke, invoke_ok, read_jsonl

from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
GSM8K = ROOT / "data" / "gsm8k" / "train_sample.jsonl"


def _tiny_args(tiny_llama: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--input",
        str(GSM8K),
        "--format",
        "gsm8k",
        "--limit",
        "3",
        "--teacher",
        "hf",
        "--model",
        str(tiny_llama),
        "--template",
        "zero-shot-cot",
        "--temperatures",
        "0.3,0.8",
        "--seeds",
        "1,2",
        "--max-tokens",
        "12",
        "--out",
        str(out),
        *extra,
    ]


def test_generate_then_resume_sends_nothing(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    output = invoke_ok("generate", *_tiny_args(tiny_llama, out))
    rows = read_jsonl(out / "samples.jsonl")
    assert len(rows) == 3 * 2 * 2
    required = {
        "key",
        "problem_id",
        "question",
        "gold",
        "template",
        "template_hash",
        "teacher",
        "model",
        "temperature",
        "seed",
        "sample_index",
        "text",
        "answer",
        "finish_reason",
        "prompt_tokens",
        "completion_tokens",
        "error",
    }
    assert required <= set(rows[0])
    assert rows[0]["gold"] == "72" and rows[0]["teacher"] == "hf" and rows[0]["template"] == "zero-shot-cot"
    assert len({r["key"] for r in rows}) == 12
    config = json.loads((out / "config.json").read_text())
    assert config["temperatures"] == [0.3, 0.8] and config["teacher"]["kind"] == "hf"

    import datasets

    dataset = datasets.load_from_disk(str(out / "dataset"))
    assert dataset.num_rows == 12 and dataset[0]["key"] == rows[0]["key"]

    code, output = invoke("generate", *_tiny_args(tiny_llama, out))
    assert code == 0
    assert "new this run                 │ 0" in output and "requests sent                │ 0" in output
    with Store.in_run(out) as store:
        assert store.count() == 12

    # growing the grid adds only the new requests
    code, output = invoke("generate", *_tiny_args(tiny_llama, out, "--samples-per-setting", "2"))
    assert code == 0
    assert "new this run                 │ 12" in output
    assert len((out / "samples.jsonl").read_text().splitlines()) == 24


def test_config_file_and_flag_precedence(tiny_llama: Path, tmp_path: Path) -> None:
    config = tmp_path / "gen.yaml"
    config.write_text(
        f"input: {GSM8K}\nformat: gsm8k\nlimit: 2\nteacher: hf\nmodel: {tiny_llama}\n"
        f"temperatures: [0.5]\nseeds: [3]\nmax_tokens: 8\nout: {tmp_path / 'fromfile'}\n"
    )
    invoke_ok("generate", "--config", str(config), "--limit", "1")
    rows = read_jsonl(tmp_path / "fromfile" / "samples.jsonl")
    assert len(rows) == 1 and rows[0]["seed"] == 3 and rows[0]["temperature"] == 0.5


def test_token_budget_stops_cleanly(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "budget"
    code, output = invoke("generate", *_tiny_args(tiny_llama, out, "--max-total-tokens", "700"))
    assert code == 3, output
    assert "stopped at the token budget" in output
    with Store.in_run(out) as store:
        used = sum(store.token_totals())
        assert 0 < store.count() < 12 and used <= 700
    code, output = invoke("generate", *_tiny_args(tiny_llama, out))  # no budget: finishes the rest
    assert code == 0 and len((out / "samples.jsonl").read_text().splitlines()) == 12


BAD_INPUTS = [
    (["--input", "nope.jsonl", "--format", "gsm8k"], "nope.jsonl"),
    (["--input", str(GSM8K), "--format", "gsm9k"], "unknown format 'gsm9k'"),
    (["--input", str(GSM8K), "--format", "gsm8k", "--template", "zero-shot-cto"], "unknown template 'zero-shot-cto'"),
    (["--input", str(GSM8K), "--format", "gsm8k", "--temperatures", "hot"], "--temperatures"),
    (["--input", str(GSM8K), "--format", "gsm8k", "--temperatures", "9"], "temperature 9.0 is outside"),
    (["--input", str(GSM8K), "--format", "gsm8k", "--shard", "3/2"], "field 'shard'"),
    (["--input", str(GSM8K), "--format", "gsm8k", "--teacher", "openai"], "needs 'model'"),
    (
        [
            "--input",
            str(GSM8K),
            "--format",
            "gsm8k",
            "--teacher",
            "openai",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--api-key-env",
            "",
        ],
        "cannot reach base URL http://127.0.0.1:9/v1",
    ),
    (
        [
            "--input",
            str(GSM8K),
            "--format",
            "gsm8k",
            "--teacher",
            "openai",
            "--model",
            "m",
            "--base-url",
            "http://127.0.0.1:9/v1",
            "--api-key-env",
            "COTFACTORY_TEST_UNSET_KEY",
        ],
        "COTFACTORY_TEST_UNSET_KEY is not set",
    ),
    (
        ["--input", str(GSM8K), "--format", "gsm8k", "--teacher", "hf", "--model", "/nonexistent/model"],
        "/nonexistent/model: not a model folder",
    ),
    (
        ["--input", str(GSM8K), "--format", "gsm8k", "--teacher", "hf", "--model", "/nonexistent/m.gguf"],
        "GGUF file not found",
    ),
    (
        ["--input", str(GSM8K), "--format", "gsm8k", "--template", "few-shot-cot-cqa"],
        "template 'few-shot-cot-cqa' is for choice",
    ),
]


@pytest.mark.parametrize(("args", "message"), BAD_INPUTS, ids=[m for _, m in BAD_INPUTS])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path: Path, args: list[str], message: str) -> None:
    out = tmp_path / "run"
    code, output = invoke("generate", *args, "--out", str(out))
    assert code == 2, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], output
    assert not out.exists()


def test_bad_config_file_keys(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("input: x.jsonl\nout: r\ntemperatur: [0.3]\n")
    code, output = invoke("generate", "--config", str(config))
    assert code == 2 and f"error: {config}: unknown key 'temperatur' (did you mean 'temperatures'?)" in output
    config.write_text("input: x.jsonl\nout: r\ntemperatures: [0.3\n")
    code, output = invoke("generate", "--config", str(config))
    assert code == 2 and f"{config}:" in output and "invalid YAML" in output


def test_malformed_jsonl_names_the_line(tmp_path: Path) -> None:
    data = tmp_path / "q.jsonl"
    data.write_text('{"id": "a", "question": "ok?", "answer": "1"}\n{"id": "b", "question": \n')
    code, output = invoke("generate", "--input", str(data), "--out", str(tmp_path / "run"))
    assert code == 2 and f"{data}:2: not valid JSON" in output
    assert not (tmp_path / "run").exists()


def test_console_script_exit_codes(tmp_path: Path) -> None:
    env = {**os.environ, "COLUMNS": "200"}
    bad = subprocess.run(
        [sys.executable, "-m", "cotfactory", "generate", "--input", "missing.jsonl", "--out", str(tmp_path / "r")],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1 and "missing.jsonl" in bad.stderr
    usage = subprocess.run(
        [sys.executable, "-m", "cotfactory", "generate", "--no-such-flag"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
    )
    assert usage.returncode == 2


def test_a_teacher_flag_of_the_same_kind_keeps_the_files_teacher_options() -> None:
    from cotfactory.config.files import build_config
    from cotfactory.config.generate import GenerateConfig

    file_values = {
        "input": "q.jsonl",
        "out": "run",
        "teacher": {"kind": "openai", "model": "m-file", "base_url": ["http://a/v1"], "concurrency": 4},
    }
    same = build_config(GenerateConfig, file_values, {"teacher": "openai", "model": "m2"})
    assert (same.teacher.model, same.teacher.base_url, same.teacher.concurrency) == ("m2", ["http://a/v1"], 4)
    other = build_config(GenerateConfig, file_values, {"teacher": "hf"})  # another kind: a new section
    assert other.teacher.kind == "hf" and other.teacher.model is None
