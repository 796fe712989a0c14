"""Batched sampling that prefills each distinct prompt once: the factory's workload repeats prompts.

A grid samples every prompt several times (temperatures × seeds × samples), and a few-shot template
puts the same exemplars before every problem. A general engine prefills each row on its own; here a
batch is decoded in three moves, all on one KV cache:

1. the prefix every prompt of the batch shares (a template's exemplars; the chat preamble) is run
   once, as a batch of one;
2. that cache is copied to each *distinct* prompt, and only their differing suffixes are run
   (left-padded after the shared prefix: the attention mask has a hole, positions skip it);
3. the cache is copied to each *row* (a sample) and decoding starts, one token per row per step.
   Rows that finish are dropped from the batch (and from the cache), so the long ones do not drag the
   finished ones along.

Sampling is per row (``per_row_sampling.choose``: the row's own generator, one vector of uniforms
per step), so a request gives the same text alone, in a batch, shared or not — up to float rounding
of a differently shaped batch, as with any batched decoding. With ``logprobs_k`` the top K of the
model's own distribution (temperature 1, before top-p) and the tail mass are recorded at every step,
and the chosen token's log-probability.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cotfactory.decoders.model_calls import cache_kwarg, logits_to_keep_kwarg, new_cache
from cotfactory.decoders.per_row_sampling import RowSampling
from cotfactory.distributions import TokenDistributions


@dataclass(frozen=True)
class SampleRow:
    """One sample to draw: its prompt (token ids) and sampling setting."""

    prompt_ids: list[int]
    temperature: float  # 0 = greedy
    top_p: float
    seed: int
    max_tokens: int


@dataclass
class RowOutput:
    token_ids: list[int]  # up to and including EOS if it stopped on EOS; stop-string text is cut by the caller
    distributions: TokenDistributions | None = None  # one position per token, when logprobs_k > 0


@dataclass(frozen=True)
class SharingStats:
    """What the prefill ran, against what a batch of unshared rows would have run."""

    prompt_tokens: int  # Σ prompt lengths over rows: the unshared prefill
    prefilled_tokens: int  # tokens actually run: shared prefix once + each distinct suffix once


def shared_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Tokens every prompt starts with, leaving each at least one token of its own (whose logits start
    the decoding)."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    length = 0
    while length < shortest - 1 and all(p[length] == first[length] for p in prompts):
        length += 1
    return length


def sample_rows(
    model: Any,
    rows: Sequence[SampleRow],
    eos_token_ids: Sequence[int],
    pad_id: int,
    stop_check: Any = None,
    logprobs_k: int = 0,
) -> tuple[list[RowOutput], SharingStats]:
    """Decode every row; outputs in row order. ``stop_check(token_ids) -> bool`` ends a row early (a
    stop string in its text)."""
    if not rows:
        return [], SharingStats(0, 0)
    steps = max(r.max_tokens for r in rows)
    with torch.inference_mode():
        batch = SharedBatch(model, [r.prompt_ids for r in rows], pad_id, steps)
        outputs = _decode(batch, rows, steps, eos_token_ids, stop_check, logprobs_k)
    return outputs, batch.stats


class SharedBatch:
    """Rows decoding together on one KV cache, their prompts prefilled with what they share run once.

    ``logits`` holds each live row's next-token logits (float32, (rows, vocab)); ``step`` feeds one
    token per live row; ``keep`` drops the other rows from the batch. Call under ``inference_mode``.
    """

    def __init__(self, model: Any, prompts: Sequence[Sequence[int]], pad_id: int, steps: int):
        self.model = model
        device = model.device
        distinct: dict[tuple[int, ...], int] = {}
        row_prompt = [distinct.setdefault(tuple(p), len(distinct)) for p in prompts]
        unique = [list(p) for p in distinct]
        shared = shared_prefix_length(unique) if len(unique) > 1 else len(unique[0]) - 1
        suffixes = [p[shared:] for p in unique]
        width = max(len(s) for s in suffixes)
        self.cache = new_cache(model, shared + width + steps)
        keep_last = logits_to_keep_kwarg(model)
        if shared:  # 1. the prefix every prompt shares, once
            prefix = torch.tensor([unique[0][:shared]], dtype=torch.long, device=device)
            model(input_ids=prefix, use_cache=True, **cache_kwarg(model, self.cache), **keep_last)
            if len(unique) > 1:
                self.cache.reorder_cache(torch.zeros(len(unique), dtype=torch.long, device=device))
        # 2. each distinct prompt's own tokens, left-padded after the shared prefix: a hole in the mask
        input_ids = torch.full((len(unique), width), pad_id, dtype=torch.long, device=device)
        mask = torch.zeros(len(unique), shared + width, dtype=torch.long, device=device)
        mask[:, :shared] = 1
        for row, suffix in enumerate(suffixes):
            input_ids[row, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long, device=device)
            mask[row, shared + width - len(suffix) :] = 1
        out = model(
            input_ids=input_ids,
            attention_mask=mask,
            position_ids=(mask.cumsum(-1) - 1).clamp_min(0)[:, shared:],
            use_cache=True,
            **cache_kwarg(model, self.cache),
            **keep_last,
        )
        # 3. the cache forked to every row
        expand = torch.tensor(row_prompt, device=device)
        if row_prompt != list(range(len(unique))):
            self.cache.reorder_cache(expand)
        self.mask = mask[expand]
        self.positions = mask.sum(-1, keepdim=True)[expand]  # (rows, 1): the position of the next token
        self.logits = out.logits[:, -1, :].float()[expand]
        self.stats = SharingStats(sum(len(p) for p in prompts), shared + sum(len(s) for s in suffixes))

    def keep(self, rows: list[int]) -> None:
        """Keep only these batch rows (positions in the current batch), in this order."""
        index = torch.tensor(rows, device=self.mask.device)
        self.cache.reorder_cache(index)
        self.mask, self.positions, self.logits = self.mask[index], self.positions[index], self.logits[index]

    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one token per row ((rows,) ids); the next logits, float32 (rows, vocab)."""
        self.mask = torch.cat([self.mask, self.mask.new_ones(len(self.mask), 1)], dim=1)
        out = self.model(
            input_ids=tokens.unsqueeze(1),
            attention_mask=self.mask,
            position_ids=self.positions,
            use_cache=True,
            **cache_kwarg(self.model, self.cache),
        )
        self.positions = self.positions + 1
        self.logits = out.logits[:, -1, :].float()
        return self.logits


def _decode(
    batch: SharedBatch,
    rows: Sequence[SampleRow],
    steps: int,
    eos_token_ids: Sequence[int],
    stop_check: Any,
    logprobs_k: int,
) -> list[RowOutput]:
    """The decoding loop; finished rows leave the batch."""
    device = batch.logits.device
    sampling = RowSampling([r.temperature for r in rows], [r.top_p for r in rows], [r.seed for r in rows])
    recorder = _Recorder(len(rows), steps, logprobs_k) if logprobs_k else None
    eos = torch.tensor(list(eos_token_ids), dtype=torch.long, device=device)
    limits = [r.max_tokens for r in rows]
    generated: list[list[int]] = [[] for _ in rows]
    active = list(range(len(rows)))  # original row index of each batch row
    for step in range(steps):
        chosen = sampling.choose(batch.logits, active)
        if recorder is not None:
            recorder.record(step, active, batch.logits, chosen)
        hit_eos = torch.isin(chosen, eos).tolist()
        keep: list[int] = []
        for position, (row, token) in enumerate(zip(active, chosen.tolist(), strict=True)):
            generated[row].append(token)
            finished = hit_eos[position] or len(generated[row]) >= limits[row]
            if not finished and stop_check is not None and stop_check(generated[row]):
                finished = True
            if not finished:
                keep.append(position)
        if not keep:
            break
        if len(keep) < len(active):
            batch.keep(keep)
            chosen = chosen[torch.tensor(keep, device=device)]
            active = [active[p] for p in keep]
        batch.step(chosen)
    return [
        RowOutput(tokens, recorder.row(i, tokens) if recorder is not None else None)
        for i, tokens in enumerate(generated)
    ]


class _Recorder:
    """Top K of the model's own distribution (log-softmax of the raw logits: temperature 1, before
    top-p), the log-mass outside it, and the chosen token's log-probability, per row and step."""

    def __init__(self, rows: int, steps: int, k: int):
        self.k = k
        self.top_ids = np.zeros((rows, steps, k), dtype=np.int32)
        self.top_logprobs = np.zeros((rows, steps, k), dtype=np.float32)
        self.tails = np.zeros((rows, steps), dtype=np.float32)
        self.chosen = np.zeros((rows, steps), dtype=np.float32)

    def record(self, step: int, active: list[int], logits: torch.Tensor, chosen: torch.Tensor) -> None:
        normalizer = torch.logsumexp(logits, dim=-1, keepdim=True)  # two passes over the vocabulary, no copy
        top = logits.topk(self.k, dim=-1)
        top_logprobs = top.values - normalizer
        # the tail: log(1 - mass of the top K); float16 storage makes the lost precision of a tiny tail moot
        tail = torch.log1p(-torch.exp(torch.logsumexp(top_logprobs, dim=-1)).clamp(max=1.0))
        chosen_logprob = logits.gather(1, chosen.unsqueeze(1)).squeeze(1) - normalizer.squeeze(1)
        rows = np.asarray(active)
        self.top_ids[rows, step] = top.indices.int().cpu().numpy()
        self.top_logprobs[rows, step] = top_logprobs.cpu().numpy()
        self.tails[rows, step] = tail.cpu().numpy()
        self.chosen[rows, step] = chosen_logprob.cpu().numpy()

    def row(self, row: int, tokens: list[int]) -> TokenDistributions:
        n = len(tokens)
        return TokenDistributions.build(
            tokens, self.chosen[row, :n], self.top_ids[row, :n], self.top_logprobs[row, :n], self.tails[row, :n]
        )
