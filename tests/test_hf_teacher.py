"""The local transformers teacher: batching must not change any sample."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
import torch
from helpers import former_hf_samples, make_request

from cotfactory.decoders.per_row_sampling import RowSampling, nucleus_mask
from cotfactory.decoders.shared_prefix import SampleRow, sample_rows, shared_prefix_length
from cotfactory.records import RenderedPrompt, Request, Sample
from cotfactory.teachers.hf import HFOptions, HFTeacher

QUESTIONS = [
    "Tom has 3 apples and buys 4 more. How many apples?",
    "A box holds 6 eggs. How many eggs are in 5 boxes?",
    "Where do people read books?",
    "yes or no: is 7 more than 3?",
]


def _teacher(model: str | Path, batch_size: int = 32) -> HFTeacher:
    return HFTeacher(HFOptions(model=str(model), batch_size=batch_size))


def _requests(max_tokens: int = 24, stop: list[str] | None = None) -> list[Request]:
    return [
        make_request(
            problem_id=f"p{i}",
            teacher="hf",
            model="tiny",
            temperature=temperature,
            top_p=top_p,
            seed=seed,
            max_tokens=max_tokens,
            prompt=RenderedPrompt(messages=[{"role": "user", "content": q}], stop=stop or []),
        )
        for i, q in enumerate(QUESTIONS)
        for temperature, top_p in [(0.0, 1.0), (0.7, 0.9), (1.2, 1.0)]
        for seed in (1, 2, 3)
    ]


def _run(teacher: HFTeacher, requests: list[Request]) -> dict[str, Sample]:
    async def collect() -> dict[str, Sample]:
        out: dict[str, Sample] = {}
        async for batch in teacher.generate(iter(requests)):
            out.update({s.key: s for s in batch})
        return out

    return asyncio.run(collect())


def test_same_text_alone_or_in_a_batch_of_32(tiny_llama: Path) -> None:
    teacher = _teacher(tiny_llama, batch_size=32)
    requests = _requests()
    assert len(requests) == 36
    together = _run(teacher, requests)
    alone = {}
    for request in requests:
        alone.update(_run(teacher, [request]))
    assert set(together) == set(alone) == {r.key for r in requests}
    assert {k: s.text for k, s in together.items()} == {k: s.text for k, s in alone.items()}
    assert {k: s.completion_tokens for k, s in together.items()} == {k: s.completion_tokens for k, s in alone.items()}
    # sampling does something: seeds at temperature > 0 give different texts
    sampled = [s.text for s in together.values() if s.request.temperature > 0 and s.request.problem_id == "p0"]
    assert len(set(sampled)) > 1


def test_greedy_rows_match_plain_generate(tiny_llama: Path) -> None:
    teacher = _teacher(tiny_llama)
    request = [r for r in _requests(max_tokens=16) if r.temperature == 0.0][0]
    sample = _run(teacher, [request])[request.key]
    text = teacher.prompt_text(request.prompt)
    ids = teacher.tokenizer(text, return_tensors="pt", add_special_tokens=False)
    with torch.inference_mode():
        out = teacher.model.generate(
            **ids, max_new_tokens=16, do_sample=False, pad_token_id=teacher.tokenizer.pad_token_id
        )
    expected = teacher.tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
    assert sample.text == expected
    assert sample.prompt_tokens == ids["input_ids"].shape[1]


def test_finish_reasons_and_token_counts(tiny_llama: Path) -> None:
    teacher = _teacher(tiny_llama)
    samples = _run(teacher, _requests(max_tokens=8))
    for sample in samples.values():
        assert 1 <= sample.completion_tokens <= 8
        if sample.finish_reason == "length":
            assert sample.completion_tokens == 8
        assert sample.sent_seed == sample.request.sample_seed


def test_stop_strings_cut_the_text(tiny_llama: Path) -> None:
    teacher = _teacher(tiny_llama)
    free = _run(teacher, _requests(max_tokens=24))
    # pick a stop string that occurs in some free-running texts, then check it cuts them there
    texts = [s.text for s in free.values() if len(s.text) > 6]
    stop = texts[0][3:6]
    stopped = _run(teacher, _requests(max_tokens=24, stop=[stop]))
    cut = 0
    for sample in stopped.values():
        assert stop not in sample.text
        full = next(
            s.text
            for s in free.values()
            if (s.request.problem_id, s.request.temperature, s.request.seed)
            == (sample.request.problem_id, sample.request.temperature, sample.request.seed)
        )
        if stop in full:
            assert full.startswith(sample.text.strip()) and sample.finish_reason == "stop"
            cut += 1
    assert cut >= 1


def test_row_sampling_is_independent_of_batch_mates() -> None:
    torch.manual_seed(0)
    logits = torch.randn(3, 50)
    together = RowSampling([0.8, 0.0, 1.5], [0.9, 1.0, 1.0], [11, 12, 13])
    subset = RowSampling([0.8, 0.0, 1.5], [0.9, 1.0, 1.0], [11, 12, 13])  # rows 0 and 1 have finished
    alone = RowSampling([1.5], [1.0], [13])
    drawn = []
    for _ in range(5):  # each step draws from the row's own stream, whoever else is in the batch
        token = int(together.choose(logits)[2])
        assert token == int(alone.choose(logits[2:3])[0]) == int(subset.choose(logits[2:3], rows=[2])[0])
        drawn.append(token)
    assert len(set(drawn)) > 1  # the stream advances
    assert int(together.choose(logits)[1]) == int(logits[1].argmax())  # temperature 0 is greedy


def test_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    assert nucleus_mask(logits, torch.tensor([[0.7]])).tolist() == [[False, False, True, True]]
    assert nucleus_mask(logits, torch.tensor([[0.5]])).tolist() == [[False, True, True, True]]
    assert nucleus_mask(logits, torch.tensor([[1.0]])).tolist() == [[False, False, False, False]]


@pytest.mark.slow
def test_smollm2_writes_reasoning_and_batching_keeps_it(smollm2: str) -> None:
    teacher = _teacher(smollm2, batch_size=8)
    requests = [
        make_request(
            problem_id=f"q{i}",
            teacher="hf",
            model="smollm2",
            temperature=0.7,
            seed=seed,
            max_tokens=40,
            prompt=RenderedPrompt(messages=[{"role": "user", "content": q + " Think step by step."}]),
        )
        for i, q in enumerate(QUESTIONS[:2])
        for seed in (1, 2)
    ]
    together = _run(teacher, requests)
    alone = _run(teacher, requests[3:])
    assert together[requests[3].key].text == alone[requests[3].key].text
    words = " ".join(s.text for s in together.values()).lower()
    assert sum(w in words for w in ("apple", "egg", "box", "4", "3", "6", "5")) >= 3  # on topic, real English
    assert all(s.completion_tokens > 5 for s in together.values())


def _former_texts(teacher: HFTeacher, requests: list[Request]) -> dict[str, tuple[str, int]]:
    """Each request's text and token count by the former decoding, all in one batch."""
    return {s.key: (s.text, s.completion_tokens) for s in former_hf_samples(teacher, requests)}


def _few_shot_requests(model: str, questions: list[str], max_tokens: int) -> list[Request]:
    """A few-shot-like grid: a long exemplar preamble every prompt shares, 2 temperatures × 2 seeds."""
    exemplars = [
        {"role": "system", "content": "Solve the problem. Reason step by step, then give the answer."},
        {"role": "user", "content": "Q: Ann has 2 pens and buys 3 more. How many pens?"},
        {"role": "assistant", "content": "Ann starts with 2 pens. 2 + 3 = 5. The answer is 5."},
        {"role": "user", "content": "Q: A crate holds 4 melons. How many melons are in 3 crates?"},
        {"role": "assistant", "content": "Each crate holds 4 melons. 3 x 4 = 12. The answer is 12."},
    ]
    return [
        make_request(
            problem_id=f"p{i}",
            teacher="hf",
            model=model,
            temperature=temperature,
            seed=seed,
            max_tokens=max_tokens,
            prompt=RenderedPrompt(messages=[*exemplars, {"role": "user", "content": f"Q: {q}"}]),
        )
        for i, q in enumerate(questions)
        for temperature in (0.7, 1.2)
        for seed in (1, 2)
    ]


def test_shared_prefix_decoding_gives_the_former_texts_and_prefills_each_prompt_once(tiny_llama: Path) -> None:
    teacher = _teacher(tiny_llama, batch_size=32)
    requests = _few_shot_requests("tiny", QUESTIONS, max_tokens=20)
    now = {k: (s.text, s.completion_tokens) for k, s in _run(teacher, requests).items()}
    assert now == _former_texts(teacher, requests)  # same seeds, same texts: 16 of 16
    assert len({text for text, _ in now.values()}) > 1  # seeds draw different texts
    # the shared preamble once, then each of the 4 distinct prompts' own tokens once (not 16 prompts)
    prompts = [teacher._encode(r.prompt) for r in requests[::4]]  # type: ignore[arg-type]
    shared = shared_prefix_length(prompts)
    assert shared > 40
    assert teacher.prefilled_tokens == shared + sum(len(p) - shared for p in prompts)
    assert teacher.prompt_tokens == 4 * sum(len(p) for p in prompts)


def test_rows_that_finish_early_leave_the_batch_without_changing_the_others(tiny_llama: Path) -> None:
    teacher = _teacher(tiny_llama)
    model, eos = teacher.model, teacher._eos_ids()
    prompt = teacher._encode(_requests()[0].prompt)  # type: ignore[arg-type]
    rows = [SampleRow(prompt, 1.0, 1.0, seed, max_tokens) for seed, max_tokens in [(1, 3), (2, 12), (3, 1), (4, 12)]]
    together, _ = sample_rows(model, rows, eos, 0)
    assert [len(o.token_ids) for o in together][0] <= 3 and len(together[2].token_ids) == 1
    for row, output in zip(rows, together, strict=True):
        alone, stats = sample_rows(model, [row], eos, 0)
        assert alone[0].token_ids == output.token_ids
        assert stats.prefilled_tokens == len(prompt)


@pytest.mark.slow
def test_smollm2_shared_prefix_gives_the_former_texts(smollm2: str) -> None:
    teacher = _teacher(smollm2, batch_size=16)
    requests = _few_shot_requests("smollm2", QUESTIONS[:2], max_tokens=24)
    now = {k: (s.text, s.completion_tokens) for k, s in _run(teacher, requests).items()}
    assert now == _former_texts(teacher, requests)
    assert teacher.prefilled_tokens < teacher.prompt_tokens / 3
