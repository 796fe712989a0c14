"""`generate --logprobs K`: the teacher's top-K distribution recorded with every generated token."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import invoke, invoke_ok, read_jsonl, stored_samples

from cotfactory.distributions import TokenDistributions, bytes_per_token
from cotfactory.store import Store

ROOT = Path(__file__).resolve().parent.parent
GSM8K = ROOT / "data" / "gsm8k" / "train_sample.jsonl"


def _args(model: Path, out: Path, *extra: str) -> list[str]:
    return [
        "--input", str(GSM8K), "--format", "gsm8k", "--limit", "3", "--teacher", "hf", "--model", str(model),
        "--temperatures", "0,0.8", "--seeds", "1", "--max-tokens", "10", "--out", str(out), *extra,
    ]  # fmt: skip


def test_packed_distributions_round_trip_at_6k_plus_8_bytes_per_token() -> None:
    found = TokenDistributions.build([5, 6], [-0.5, -1.0], [[5, 1, 2], [6, 5, 0]], [[-0.5, -1.5, -2.0], [-1, -1, -3]])
    assert len(found.to_bytes()) == 2 * bytes_per_token(3) == 2 * (6 * 3 + 8)
    back = TokenDistributions.from_bytes(found.to_bytes(), 2, 3)
    assert back.top_ids.tolist() == [[5, 1, 2], [6, 5, 0]] and back.token_ids.tolist() == [5, 6]
    # the tail is what the top K leave: log(1 - Σ p)
    expected = math.log(1 - math.exp(-0.5) - math.exp(-1.5) - math.exp(-2.0))
    assert back.tail[0] == pytest.approx(expected, abs=2e-3)
    with pytest.raises(ValueError, match="cannot be"):
        TokenDistributions.from_bytes(found.to_bytes()[:-1], 2, 3)


def test_hf_capture_matches_the_models_own_distribution(tiny_llama: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    invoke_ok("generate", *_args(tiny_llama, out, "--logprobs", "4"))
    rows = read_jsonl(out / "samples.jsonl")
    with Store.in_run(out) as store:
        found = dict(store.distributions())
        samples = {s.key: s for s in store.samples()}
    assert set(found) == {r["key"] for r in rows} and len(found) == 6
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(out / "teacher_tokenizer")
    assert tokenizer.get_vocab() == AutoTokenizer.from_pretrained(tiny_llama).get_vocab()
    model = AutoModelForCausalLM.from_pretrained(tiny_llama)
    for key, dist in found.items():
        sample = samples[key]
        assert len(dist) == sample.completion_tokens and dist.k == 4
        # recomputed with one forward pass over prompt + generated tokens: the recorded values
        ids = torch.tensor([_prompt_ids(out, tiny_llama, key) + dist.token_ids.tolist()])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(ids).logits[0].float(), dim=-1)
        start = ids.shape[1] - len(dist) - 1
        for t in range(len(dist)):
            row = logprobs[start + t]
            top = row.topk(4)
            assert dist.top_ids[t].tolist() == top.indices.tolist()
            np.testing.assert_allclose(dist.top_logprobs[t].astype(np.float32), top.values.numpy(), atol=2e-2)
            assert float(dist.token_logprobs[t]) == pytest.approx(float(row[dist.token_ids[t]]), abs=2e-2)
            tail = float(torch.logsumexp(row.scatter(0, top.indices, float("-inf")), 0))
            # compared as a mass: the recorder's float32 tail of a confident step may round to zero (-inf)
            assert math.exp(float(dist.tail[t])) == pytest.approx(math.exp(tail), abs=1e-3)
            # the recorded buckets are a whole distribution
            assert np.exp(dist.top_logprobs[t].astype(np.float64)).sum() + math.exp(float(dist.tail[t])) == (
                pytest.approx(1.0, abs=1e-2)
            )
        if samples[key].request.temperature == 0:  # greedy: the chosen token is the top one
            assert dist.token_ids.tolist() == dist.top_ids[:, 0].tolist()


def _prompt_ids(out: Path, model: Path, key: str) -> list[int]:
    """The prompt exactly as the hf teacher encoded it, rebuilt from the run's plan."""
    from cotfactory.config.generate import GenerateConfig
    from cotfactory.generate import prepare

    config = GenerateConfig.model_validate(
        {k: v for k, v in json.loads((out / "config.json").read_text()).items() if k != "cotfactory_version"}
    )
    prepared = prepare(config)
    request = next(r for r in prepared.plan.requests() if r.key == key)
    return prepared.teacher._encode(request.prompt)


def test_logprobs_are_part_of_the_sample_not_of_its_key(tiny_llama: Path, tmp_path: Path) -> None:
    """A run without logprobs, then K=2, then K=4, then K=2 again: each time only what lacks the
    asked K is sent; texts of greedy samples are unchanged; nothing is held twice."""
    out = tmp_path / "run"
    invoke_ok("generate", *_args(tiny_llama, out))
    assert not (out / "distributions.parquet").exists()
    first = {r["key"]: r["text"] for r in read_jsonl(out / "samples.jsonl")}
    code, output = invoke("generate", *_args(tiny_llama, out, "--logprobs", "2"))
    assert code == 0 and "new this run                 │ 6" in output
    code, output = invoke("generate", *_args(tiny_llama, out, "--logprobs", "4"))
    assert code == 0 and "new this run                 │ 6" in output
    assert re.search(r"distributions\s+│ [\d,]+ tokens, 32 bytes/token", output)  # 6·4 + 8
    code, output = invoke("generate", *_args(tiny_llama, out, "--logprobs", "2"))
    assert code == 0 and "requests sent                │ 0" in output
    rows = read_jsonl(out / "samples.jsonl")
    assert {r["key"]: r["text"] for r in rows} == first  # per-row seeds: the same texts again
    with Store.in_run(out) as store:
        assert store.count() == 6 and {d.k for _, d in store.distributions()} == {4}
        stored, tokens = store.distribution_bytes()
    assert stored == tokens * bytes_per_token(4)
    import datasets

    exported = datasets.load_dataset("parquet", data_files=str(out / "distributions.parquet"))["train"]
    assert exported.num_rows == 6 and [r["key"] for r in exported] == [r["key"] for r in rows]
    assert all(len(r["top_ids"][0]) == 4 and len(r["tail"]) == len(r["token_ids"]) for r in exported)


def test_teachers_that_cannot_record_logprobs_are_refused_before_the_run(tmp_path: Path) -> None:
    replay = tmp_path / "replay.jsonl"
    replay.write_text('{"id": "1", "text": "The answer is 72."}\n')
    code, output = invoke(
        "generate", "--input", str(GSM8K), "--format", "gsm8k", "--limit", "1", "--teacher", "replay",
        "--replay", str(replay), "--logprobs", "5", "--out", str(tmp_path / "run"),
    )  # fmt: skip
    assert code == 2 and "cannot record token logprobs" in output
    assert not (tmp_path / "run").exists()


def test_sigkill_mid_capture_resumes_to_the_uninterrupted_distributions(tiny_llama: Path, tmp_path: Path) -> None:
    """Samples and their distributions commit in one transaction: a run killed mid-way and resumed
    holds exactly one record per sample, equal to an uninterrupted run's."""
    import os
    import signal
    import subprocess
    import sys
    import time

    extra = ["--limit", "8", "--seeds", "1,2", "--batch-size", "2", "--max-tokens", "16", "--logprobs", "3"]
    invoke_ok("generate", *_args(tiny_llama, tmp_path / "ref", *extra))
    with Store.in_run(tmp_path / "ref") as store:
        reference = dict(store.distributions())
    assert len(reference) == 32
    out = tmp_path / "killed"
    command = [sys.executable, "-m", "cotfactory", "generate", *_args(tiny_llama, out, *extra)]
    proc = subprocess.Popen(
        command, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 120
    while stored_samples(out) < 6 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert 0 < stored_samples(out) < 32
    invoke_ok("generate", *_args(tiny_llama, out, *extra))
    with Store.in_run(out) as store:
        assert store.count() == 32
        resumed = dict(store.distributions())
    assert resumed.keys() == reference.keys()
    for key, found in resumed.items():  # other batch mates after the resume: logits equal up to rounding
        assert found.token_ids.tolist() == reference[key].token_ids.tolist()
        assert found.top_ids.tolist() == reference[key].top_ids.tolist()
        np.testing.assert_allclose(found.top_logprobs, reference[key].top_logprobs, atol=1e-2)
