"""One end-to-end `generate` against a real llama.cpp server (llama-cpp-python[server]) serving
the embedded SmolLM2 GGUF. llama.cpp honours `seed` and ignores `n>1`: the teacher must notice."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import invoke, read_jsonl
from loopback import ProcessServer

from cotfactory.model_loading import embedded_gguf

pytestmark = pytest.mark.llamacpp
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def llama_server() -> Iterator[str]:
    pytest.importorskip("llama_cpp.server", reason="llama-cpp-python[server] is installed by `make setup`")
    command = [
        sys.executable,
        "-m",
        "llama_cpp.server",
        "--model",
        str(embedded_gguf()),
        "--n_threads",
        "2",
        "--host",
        "127.0.0.1",
        "--n_ctx",
        "2048",
    ]
    server = ProcessServer(command, ready="/v1/models", name="llama.cpp server", start_timeout=120, stop_timeout=20)
    with server:
        yield server.base_url


def _generate(base_url: str, out: Path) -> tuple[int, str]:
    args = [
        "generate",
        "--input",
        str(ROOT / "data" / "gsm8k" / "test_sample.jsonl"),
        "--format",
        "gsm8k",
        "--limit",
        "3",
        "--teacher",
        "openai",
        "--model",
        "smollm2",
        "--base-url",
        base_url,
        "--api-key-env",
        "",
        "--template",
        "zero-shot-cot",
        "--temperatures",
        "0.7",
        "--seeds",
        "1",
        "--samples-per-setting",
        "2",
        "--max-tokens",
        "48",
        "--length-retry-tokens",
        "0",
        "--concurrency",
        "2",
        "--out",
        str(out),
    ]
    return invoke(*args)


def test_generate_against_real_llama_cpp(llama_server: str, tmp_path: Path) -> None:
    code, output = _generate(llama_server, tmp_path / "a")
    assert code == 0, output
    rows = read_jsonl(tmp_path / "a" / "samples.jsonl")
    assert len(rows) == 6 and all(r["error"] is None for r in rows)
    assert all(r["completion_tokens"] > 0 and r["prompt_tokens"] > 20 for r in rows)
    # n>1 was asked for once per problem, answered with one choice, then the rest fanned out, each
    # with its own seed: the two samples of a problem differ
    for problem in {r["problem_id"] for r in rows}:
        texts = [r["text"] for r in rows if r["problem_id"] == problem]
        assert len(texts) == 2 and texts[0] != texts[1]
    # llama.cpp honours seeds: a second run in a fresh directory writes the same texts
    code, _ = _generate(llama_server, tmp_path / "b")
    again = read_jsonl(tmp_path / "b" / "samples.jsonl")
    assert code == 0 and [r["text"] for r in again] == [r["text"] for r in rows]
    # and a rerun of the first sends nothing
    code, output = _generate(llama_server, tmp_path / "a")
    assert code == 0 and "requests sent                │ 0" in output


def test_logprobs_recorded_through_the_openai_api(llama_server: str, tmp_path: Path) -> None:
    """llama.cpp returns top_logprobs as token strings: the teacher maps them back to the GGUF's ids,
    and the recorded tokens decode to the sample's text."""
    from transformers import AutoTokenizer

    from cotfactory.store import Store

    out = tmp_path / "lp"
    args = [
        "generate", "--input", str(ROOT / "data" / "gsm8k" / "test_sample.jsonl"), "--format", "gsm8k",
        "--limit", "2", "--teacher", "openai", "--model", "smollm2", "--base-url", llama_server,
        "--api-key-env", "", "--temperatures", "0.7", "--seeds", "1", "--max-tokens", "24",
        "--length-retry-tokens", "0", "--logprobs", "5", "--tokenizer", str(embedded_gguf()), "--out", str(out),
    ]  # fmt: skip
    code, output = invoke(*args)
    assert code == 0, output
    tokenizer = AutoTokenizer.from_pretrained(out / "teacher_tokenizer")
    with Store.in_run(out) as store:
        found = dict(store.distributions())
        samples = {s.key: s for s in store.samples()}
    assert len(found) == 2
    for key, dist in found.items():
        assert dist.k == 5 and len(dist) == samples[key].completion_tokens
        assert (dist.token_ids >= 0).all()
        assert tokenizer.decode(dist.token_ids.tolist()).strip() == samples[key].text.strip()
        # most likely first, and the chosen token's logprob is at most the top one's
        assert (dist.top_logprobs[:, :-1] >= dist.top_logprobs[:, 1:]).all()
        assert (dist.token_logprobs <= dist.top_logprobs[:, 0] + 1e-3).all()


def test_logprobs_without_a_tokenizer_keep_the_token_strings(llama_server: str, tmp_path: Path) -> None:
    """No --tokenizer: the server's token strings are kept in the run's string vocabulary (numbered in the
    sample's own transaction), they rebuild each sample's text, a second run sends nothing and adds no
    string, and a student of another vocabulary distils from them with --align (refused without)."""
    import json

    from cotfactory.store import Store

    out = tmp_path / "strings"
    args = [
        "generate", "--input", str(ROOT / "data" / "gsm8k" / "test_sample.jsonl"), "--format", "gsm8k",
        "--limit", "2", "--teacher", "openai", "--model", "smollm2", "--base-url", llama_server,
        "--api-key-env", "", "--temperatures", "0.7", "--seeds", "1", "--max-tokens", "24",
        "--length-retry-tokens", "0", "--logprobs", "4", "--template", "zero-shot-cot", "--out", str(out),
    ]  # fmt: skip
    code, output = invoke(*args)
    assert code == 0, output
    assert "token strings" in output and "--align" in output
    assert not (out / "teacher_tokenizer").exists()
    with Store.in_run(out) as store:
        strings = store.token_strings()
        found = dict(store.distributions())
        samples = {s.key: s for s in store.samples()}
    assert len(found) == 2 and len(strings) == len(set(strings)) > 10
    assert json.loads((out / "teacher_token_strings.json").read_text()) == strings
    for key, dist in found.items():
        assert dist.k == 4 and (dist.token_ids >= 0).all() and dist.top_ids.max() < len(strings)
        assert "".join(strings[i] for i in dist.token_ids).strip() == samples[key].text.strip()
    code, output = invoke(*args)
    assert code == 0 and "requests sent                │ 0" in output
    with Store.in_run(out) as store:
        assert store.token_strings() == strings
    code, output = invoke(*args, "--tokenizer", str(embedded_gguf()))  # ids of two vocabularies in one run: no
    assert code == 2 and "recorded as token strings" in output

    from helpers import write_jsonl

    from cotfactory.run_dir import RunDir

    rows = read_jsonl(out / "samples.jsonl")  # every sample a teaching record: 24 tokens state no answer
    write_jsonl(RunDir(out).filtered, [{**r, "rationale": r["text"].strip(), "answer": r["gold"]} for r in rows])
    student = ["train-student", str(out), "--method", "finetune-cot", "--student", "scratch:t5-tiny"]
    student += ["--max-steps", "1", "--distill", "kd", "--out", str(tmp_path / "t5")]
    code, output = invoke(*student)
    assert code == 2 and "the token strings of" in output and "--align" in output
    code, output = invoke(*student, "--align")
    assert code == 0, output
    assert "teacher distributions (K=4): 2/2 examples" in output


def test_tree_search_over_the_completions_api(llama_server: str, tmp_path: Path) -> None:
    """`--search tree` against the completions endpoint: each step a completion of the prompt and the path,
    with logprobs; candidates stored with their tree position; llama.cpp honours seeds, so a fresh run grows
    the same tree (one request at a time: its prompt cache makes logits depend on the order requests
    arrive in), and a rerun sends nothing."""
    import json

    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "steps.yaml").write_text(
        "name: steps\nversion: 1\nform: completion\nanswer_types: [number]\n"
        'prompt: "Question: {{ question }}\\nAnswer step by step, one step per line.\\n"\n'
    )

    def run(out: Path) -> tuple[int, str]:
        return invoke(
            "generate", "--input", str(ROOT / "data" / "gsm8k" / "test_sample.jsonl"), "--format", "gsm8k",
            "--limit", "1", "--teacher", "openai", "--model", "smollm2", "--base-url", llama_server,
            "--api-key-env", "", "--prompts-dir", str(prompts), "--template", "steps", "--temperatures", "0.8",
            "--seeds", "1", "--max-tokens", "24", "--search", "tree", "--beam", "2", "--branch", "2",
            "--max-depth", "2", "--step-tokens", "12", "--concurrency", "1", "--out", str(out),
        )  # fmt: skip

    code, output = run(tmp_path / "a")
    assert code in (0, 1), output  # 1: the tree kept fewer than 2 candidates (listed as failed)
    rows = read_jsonl(tmp_path / "a" / "samples.jsonl")
    assert len(rows) == 2 and all(r["mode"] == "tree" for r in rows)
    trees = [json.loads(r["metadata"])["tree"] for r in rows]
    assert trees[0]["draws"] >= 2 and trees[0]["tree_tokens"] == sum(r["completion_tokens"] for r in rows)
    kept = [r for r, t in zip(rows, trees, strict=True) if "position" in t]
    assert kept and all(r["text"] for r in kept)
    assert all(0 < t["path_tokens"] <= 24 for t in trees if "position" in t)
    code, _ = run(tmp_path / "b")
    assert [r["text"] for r in read_jsonl(tmp_path / "b" / "samples.jsonl")] == [r["text"] for r in rows]
    code, output = run(tmp_path / "a")
    assert "requests sent                │ 0" in output
