"""Contrastive decoding (SCOTT): the batched, KV-cached decoder against a slow obvious reference."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch

from cotfactory.decoders.contrastive import (
    ContrastiveRow,
    _choose,
    _step_scores,
    contrastive_generate,
)
from cotfactory.model_loading import load_causal_lm, load_tokenizer

# (question, gold answer, perturbed answer): different lengths, so the batch is really left padded
PROBLEMS = [
    ("Where do people go to read books?", "(b) library", "(c) ocean"),
    ("Tom has 3 apples and buys 4 more. How many apples?", "7", "12"),
    ("yes or no: is 7 more than 3?", "yes", "no"),
    ("A box holds 6 eggs. How many eggs are in 5 boxes? Answer Choices: (a) 11 (b) 30 (c) 1", "(b) 30", "(a) 11"),
    ("1 + 1?", "2", "3"),
]
MAX_TOKENS = [5, 12, 9, 16, 7]


@pytest.fixture(scope="module")
def tiny(tiny_llama: Path) -> tuple[Any, Any]:
    """tiny_llama with its matrices x8 and its final norm x3 (a private copy: the fixture is shared).

    At its random init the model is nearly uniform and blind to its context: the answer in the prompt
    and a 0.1 plausibility bound would change no token, and the tests below would prove nothing.
    """
    model = load_causal_lm(str(tiny_llama), "cpu", "float32")
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 2:
                parameter.mul_(8.0)
        model.model.norm.weight.mul_(3.0)
    return model, load_tokenizer(str(tiny_llama))


def _prompt(tokenizer: Any, question: str, answer: str) -> list[int]:
    return tokenizer(f"Q: {question} A: The answer is {answer}. Because")["input_ids"]


def _rows(tokenizer: Any, max_tokens: list[int] = MAX_TOKENS, **setting: Any) -> list[ContrastiveRow]:
    """One greedy row per problem unless ``setting`` says otherwise."""
    setting = {"temperature": 0.0, "top_p": 1.0, "seed": 0, **setting}
    return [
        ContrastiveRow(
            target_ids=_prompt(tokenizer, question, gold),
            contrast_ids=_prompt(tokenizer, question, perturbed),
            max_tokens=limit,
            **setting,
        )
        for (question, gold, perturbed), limit in zip(PROBLEMS, max_tokens, strict=True)
    ]


def _reference(model: Any, row: ContrastiveRow, eos: list[int]) -> list[int]:
    """Greedy SCOTT, one problem, no batching, no cache: rerun both full sequences at every step."""
    generated: list[int] = []
    with torch.inference_mode():
        for _ in range(row.max_tokens):
            target = model(torch.tensor([row.target_ids + generated])).logits[0, -1].float()
            contrast = model(torch.tensor([row.contrast_ids + generated])).logits[0, -1].float()
            target_logp = torch.log_softmax(target, dim=-1)
            score = target_logp - row.weight * torch.log_softmax(contrast, dim=-1)
            if row.plausibility is not None:
                probs = target_logp.exp()
                score[probs < row.plausibility * probs.max()] = -math.inf
            token = int(torch.argmax(score))
            generated.append(token)
            if token in eos:
                break
    return generated


@pytest.mark.parametrize("weight", [0.5, 0.0])
@pytest.mark.parametrize("plausibility", [None, 0.1])
def test_greedy_batch_equals_the_unbatched_reference(
    tiny: tuple[Any, Any], weight: float, plausibility: float | None
) -> None:
    model, tokenizer = tiny
    eos = [tokenizer.eos_token_id]
    rows = _rows(tokenizer, weight=weight, plausibility=plausibility)
    assert len({len(r.target_ids) for r in rows}) == len(rows)  # all prompt lengths differ

    outputs = contrastive_generate(model, tokenizer, rows, eos)

    for row, out in zip(rows, outputs, strict=True):
        assert out.token_ids == _reference(model, row, eos)
        stopped_on_eos = bool(out.token_ids) and out.token_ids[-1] in eos
        assert out.finish_reason == ("stop" if stopped_on_eos else "length")
        if not stopped_on_eos:
            assert len(out.token_ids) == row.max_tokens


def test_weight_zero_is_plain_greedy_decoding(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    eos = [tokenizer.eos_token_id]
    rows = _rows(tokenizer, weight=0.0)

    outputs = contrastive_generate(model, tokenizer, rows, eos)

    for row, out in zip(rows, outputs, strict=True):
        ids = torch.tensor([row.target_ids])
        with torch.inference_mode():
            plain = model.generate(
                input_ids=ids,
                attention_mask=torch.ones_like(ids),
                do_sample=False,
                max_new_tokens=row.max_tokens,
                eos_token_id=eos,
                pad_token_id=tokenizer.pad_token_id,
            )
        assert out.token_ids == plain[0, ids.shape[1] :].tolist()


def test_contrast_and_bound_change_tokens_on_the_tiny_model(tiny: tuple[Any, Any]) -> None:
    """Keeps the reference comparisons above meaningful: each setting really changes the text."""
    model, tokenizer = tiny

    def decode(weight: float, plausibility: float | None) -> list[list[int]]:
        rows = _rows(tokenizer, weight=weight, plausibility=plausibility)
        return [o.token_ids for o in contrastive_generate(model, tokenizer, rows, [])]

    plain, contrasted, bounded = decode(0.0, None), decode(0.5, None), decode(0.5, 0.1)
    assert all(a != b for a, b in zip(plain, contrasted, strict=True))
    assert any(a != b for a, b in zip(contrasted, bounded, strict=True))


def test_sampled_row_is_the_same_alone_or_in_a_batch(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    rows = [
        replace(row, temperature=1.0, top_p=1.0 if i % 2 else 0.9, seed=100 + i)
        for i, row in enumerate(_rows(tokenizer, max_tokens=[16] * len(PROBLEMS))[:4])
    ]

    batched = contrastive_generate(model, tokenizer, rows, [])
    alone = [contrastive_generate(model, tokenizer, [row], [])[0] for row in rows]

    assert [o.token_ids for o in batched] == [o.token_ids for o in alone]
    assert all(len(o.token_ids) == 16 and o.finish_reason == "length" for o in batched)
    other_seeds = [contrastive_generate(model, tokenizer, [replace(row, seed=row.seed + 7)], [])[0] for row in rows]
    assert all(a.token_ids != b.token_ids for a, b in zip(batched, other_seeds, strict=True))


def test_stop_string_ends_only_its_row(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    rows = _rows(tokenizer, max_tokens=[12] * len(PROBLEMS))
    free = contrastive_generate(model, tokenizer, rows, [])
    # a stop string that first completes at the 4th token of row 1's rationale
    prefix3 = tokenizer.decode(free[1].token_ids[:3], skip_special_tokens=True)
    prefix4 = tokenizer.decode(free[1].token_ids[:4], skip_special_tokens=True)
    stop = prefix4[-4:] if prefix4[-4:] not in prefix3 else prefix4
    assert stop not in prefix3

    stopped = contrastive_generate(model, tokenizer, rows, [], stop_strings=[stop])

    assert stopped[1].token_ids == free[1].token_ids[:4]
    assert stopped[1].finish_reason == "stop"
    for before, after in zip(free, stopped, strict=True):
        text = tokenizer.decode(before.token_ids, skip_special_tokens=True)
        if stop not in text:
            assert after == before


def test_zero_max_tokens_and_no_rows(tiny: tuple[Any, Any]) -> None:
    model, tokenizer = tiny
    rows = _rows(tokenizer, max_tokens=[0, *MAX_TOKENS[1:]])
    outputs = contrastive_generate(model, tokenizer, rows, [])
    assert outputs[0].token_ids == [] and outputs[0].finish_reason == "length"
    assert [len(o.token_ids) for o in outputs[1:]] == MAX_TOKENS[1:]
    assert contrastive_generate(model, tokenizer, [], []) == []


# ---- the scoring rule on hand-made distributions (vocabulary of 5 tokens: A B C D E) ----

A, B, E = 0, 1, 4


def _logits(probs: list[float]) -> torch.Tensor:
    return torch.tensor([probs]).log()


def _scores(target: list[float], contrast: list[float], weight: float, plausibility: float | None) -> torch.Tensor:
    """The (1, 5) scores of a greedy row."""
    return _step_scores(
        _logits(target),
        _logits(contrast),
        temperatures=torch.zeros(1, 1),
        weights=torch.full((1, 1), weight),
        log_plausibility=torch.full((1, 1), math.log(plausibility) if plausibility else -math.inf),
    )


def test_contrast_prefers_the_token_the_answer_explains() -> None:
    # A is most likely under the gold context but just as likely under the perturbed one;
    # B is a bit less likely under the gold context and far less likely under the perturbed one.
    target = [0.40, 0.35, 0.10, 0.10, 0.05]
    contrast = [0.40, 0.05, 0.20, 0.20, 0.15]
    greedy = torch.zeros(1, 1), torch.ones(1, 1), [None]
    plain = _choose(_scores(target, contrast, 0.0, None), *greedy)
    contrasted = _choose(_scores(target, contrast, 0.5, None), *greedy)
    bounded = _choose(_scores(target, contrast, 0.5, 0.1), *greedy)
    assert (int(plain), int(contrasted), int(bounded)) == (A, B, B)


def test_plausibility_bound_blocks_an_implausible_token() -> None:
    # E is nearly impossible under the gold context, but far more impossible under the perturbed one
    target = [0.60, 0.30, 0.05, 0.049, 0.001]
    contrast = [0.60, 0.30, 0.05, 0.05 - 1e-8, 1e-8]
    unbounded = _scores(target, contrast, 0.5, None)
    bounded = _scores(target, contrast, 0.5, 0.1)
    assert int(unbounded.argmax()) == E
    assert int(bounded.argmax()) == A
    assert torch.isfinite(bounded[0, :2]).all()
    assert (bounded[0, 2:] == -math.inf).all()  # C, D and E have p < 0.1 * 0.6


def test_sampling_follows_the_row_generator_and_top_p() -> None:
    scores = _logits([0.6, 0.2, 0.1, 0.05, 0.05])
    temperature = torch.ones(1, 1)

    def draws(seed: int, top_p: float, n: int = 200) -> list[int]:
        generator = torch.Generator().manual_seed(seed)
        return [int(_choose(scores, temperature, torch.full((1, 1), top_p), [generator])) for _ in range(n)]

    assert draws(1, 1.0) == draws(1, 1.0)
    assert draws(1, 1.0) != draws(2, 1.0)
    assert set(draws(1, 1.0)) == {0, 1, 2, 3, 4}
    assert set(draws(1, 0.5)) == {A}  # the nucleus of 0.5 is A alone
    assert set(draws(1, 0.7)) == {A, B}
