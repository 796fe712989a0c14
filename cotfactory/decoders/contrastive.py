"""Contrastive decoding for rationales (SCOTT, Wang et al., ACL 2023): batched, KV-cached, per-row seeds.

Each problem has two prompts that differ only in the answer they state: the *target* context (the
gold answer a*, or the perturbed one when writing counterfactual rationales) and the *contrast*
context. At every step each candidate token t is scored by

    score(t) = log_softmax(target_logits / T)[t] - weight * log_softmax(contrast_logits)[t]

so tokens that the stated answer makes more likely are preferred over tokens that any answer would
produce. The chosen token is appended to both contexts: the rationale is shared, only the prompts
differ. An optional plausibility bound (Li et al. 2023) keeps only tokens with
p(t | target) >= plausibility * max p(t | target), so a token the target context finds absurd cannot win
just because the contrast context finds it even more absurd.

One step is one forward pass over 2·B sequences (the B target contexts stacked over the B contrast
contexts) on one KV cache (``shared_prefix.SharedBatch``: what the prompts share, and each distinct
prompt — a problem's samples repeat theirs — is prefilled once); explicit position ids make every row
equal its unpadded single-row run. Sampling reuses ``per_row_sampling``'s idea: Gumbel-max with noise
from the row's own generator, so a row's text does not depend on its batch mates.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from cotfactory.decoders.model_calls import pad_id as pad_id_of
from cotfactory.decoders.model_calls import stop_string_check
from cotfactory.decoders.per_row_sampling import nucleus_mask
from cotfactory.decoders.shared_prefix import SharedBatch


@dataclass(frozen=True)
class ContrastiveRow:
    """One problem to decode: two prompts (token ids) and its sampling setting."""

    target_ids: list[int]  # the context to follow (gold answer, or the perturbed one for counterfactuals)
    contrast_ids: list[int]  # the context contrasted against
    temperature: float  # 0 = greedy
    top_p: float
    seed: int
    max_tokens: int
    weight: float = 0.5  # λ: SCOTT's default
    plausibility: float | None = None  # α; None = no bound


@dataclass
class ContrastiveOutput:
    token_ids: list[int]  # up to and including EOS if it stopped on EOS; stop-string text is cut by the caller
    finish_reason: str  # "stop" (EOS or stop string) or "length"


@dataclass
class _RowSettings:
    """Per-row settings as (B, 1) float32 tensors on the model's device, plus the row generators."""

    temperatures: torch.Tensor
    top_ps: torch.Tensor
    weights: torch.Tensor
    log_plausibility: torch.Tensor  # log α; -inf = no bound
    generators: list[torch.Generator | None]  # None for greedy rows

    @classmethod
    def of(cls, rows: Sequence[ContrastiveRow], device: torch.device) -> _RowSettings:
        def column(values: list[float]) -> torch.Tensor:
            return torch.tensor(values, dtype=torch.float32, device=device).unsqueeze(1)

        return cls(
            temperatures=column([r.temperature for r in rows]),
            top_ps=column([r.top_p for r in rows]),
            weights=column([r.weight for r in rows]),
            log_plausibility=column([math.log(r.plausibility) if r.plausibility else -math.inf for r in rows]),
            generators=[
                torch.Generator(device="cpu").manual_seed(int(r.seed)) if r.temperature > 0 else None for r in rows
            ],
        )


def contrastive_generate(
    model: Any,
    tokenizer: Any,
    rows: list[ContrastiveRow],
    eos_token_ids: list[int],
    stop_strings: list[str] | None = None,
) -> list[ContrastiveOutput]:
    """Decode every row's rationale contrastively, all rows in one batch; outputs are in row order."""
    if not rows:
        return []
    if any(not r.target_ids or not r.contrast_ids for r in rows):
        raise ValueError("contrastive_generate: every row needs non-empty target_ids and contrast_ids")
    device = model.device
    count = len(rows)
    max_tokens = torch.tensor([max(r.max_tokens, 0) for r in rows], device=device)
    steps = int(max_tokens.max())
    if steps == 0:
        return [ContrastiveOutput(token_ids=[], finish_reason="length") for _ in rows]
    done = max_tokens == 0
    generated = torch.zeros(count, steps, dtype=torch.long, device=device)
    lengths = torch.zeros(count, dtype=torch.long, device=device)
    stopped = torch.zeros(count, dtype=torch.bool, device=device)  # EOS or stop string (vs length)

    settings = _RowSettings.of(rows, device)
    eos = torch.tensor(eos_token_ids, dtype=torch.long, device=device)
    pad_id = pad_id_of(tokenizer)
    prompts = [r.target_ids for r in rows] + [r.contrast_ids for r in rows]
    stop_check = stop_string_check(tokenizer, stop_strings) if stop_strings else None
    with torch.inference_mode():
        decoder = SharedBatch(model, prompts, pad_id, steps)
        logits = decoder.logits
        for step in range(steps):
            scores = _step_scores(
                logits[:count], logits[count:], settings.temperatures, settings.weights, settings.log_plausibility
            )
            chosen = torch.where(
                done, pad_id, _choose(scores, settings.temperatures, settings.top_ps, settings.generators)
            )
            active = ~done
            generated[:, step] = chosen
            lengths += active.long()
            hit_eos = active & torch.isin(chosen, eos)
            stopped |= hit_eos
            done = done | hit_eos | (lengths >= max_tokens)
            if stop_check is not None:
                hit_stop = _hits_stop_string(stop_check, generated, lengths, active & ~hit_eos)
                stopped |= hit_stop
                done |= hit_stop
            if bool(done.all()):
                break
            logits = decoder.step(chosen.repeat(2))
    return _outputs(generated, lengths, stopped)


def _step_scores(
    target_logits: torch.Tensor,
    contrast_logits: torch.Tensor,
    temperatures: torch.Tensor,
    weights: torch.Tensor,
    log_plausibility: torch.Tensor,
) -> torch.Tensor:
    """SCOTT's score per (row, token), float32; tokens outside the plausibility bound get -inf.

    Logits are (B, vocab); the settings are (B, 1). A greedy row (temperature 0) scores at temperature
    1. The bound compares target probabilities at temperature 1: p(t) >= α·max p  <=>  logit(t) >=
    max logit + log α, which needs no softmax.
    """
    target_logits = target_logits.float()
    contrast_logits = contrast_logits.float()
    scale = torch.where(temperatures > 0, temperatures, torch.ones_like(temperatures))
    scores = torch.log_softmax(target_logits / scale, dim=-1) - weights * torch.log_softmax(contrast_logits, dim=-1)
    threshold = target_logits.max(dim=-1, keepdim=True).values + log_plausibility
    return scores.masked_fill(target_logits < threshold, float("-inf"))


def _choose(
    scores: torch.Tensor, temperatures: torch.Tensor, top_ps: torch.Tensor, generators: list[torch.Generator | None]
) -> torch.Tensor:
    """The next token per row: argmax of the scores (greedy rows) or a draw from softmax(scores).

    Sampling is Gumbel-max, after the top_p nucleus of softmax(scores) is applied, with one vector of
    uniforms per step from the row's own generator: the t-th token of a row sees the same noise whatever
    batch it is in. Greedy rows have no generator.
    """
    greedy = torch.argmax(scores, dim=-1)
    sampled_rows = temperatures.squeeze(1) > 0
    if not bool(sampled_rows.any()):
        return greedy
    masked = scores
    if bool((top_ps < 1.0).any()):
        masked = scores.masked_fill(nucleus_mask(scores, top_ps), float("-inf"))
    noise = _gumbel(generators, scores.shape[-1]).to(scores.device)
    sampled = torch.argmax(masked + noise, dim=-1)
    return torch.where(sampled_rows, sampled, greedy)


def _gumbel(generators: list[torch.Generator | None], vocab: int) -> torch.Tensor:
    """(B, vocab) Gumbel noise on the CPU; zeros for rows without a generator."""
    noise = torch.zeros(len(generators), vocab)
    for row, generator in enumerate(generators):
        if generator is not None:
            uniform = torch.rand(vocab, generator=generator).clamp(1e-20, 1.0)
            noise[row] = -torch.log(-torch.log(uniform))
    return noise


def _hits_stop_string(
    hit: Callable[[Sequence[int]], bool], generated: torch.Tensor, lengths: torch.Tensor, candidates: torch.Tensor
) -> torch.Tensor:
    """True for candidate rows whose decoded text now contains a stop string (``hit``)."""
    hits = torch.zeros_like(candidates)
    for row in torch.nonzero(candidates).flatten().tolist():
        hits[row] = hit(generated[row, : int(lengths[row])].tolist())
    return hits


def _outputs(generated: torch.Tensor, lengths: torch.Tensor, stopped: torch.Tensor) -> list[ContrastiveOutput]:
    tokens, counts, stops = generated.tolist(), lengths.tolist(), stopped.tolist()
    return [
        ContrastiveOutput(token_ids=row[:n], finish_reason="stop" if stop else "length")
        for row, n, stop in zip(tokens, counts, stops, strict=True)
    ]
