"""Per-row sampling for batched ``model.generate``: each row has its own temperature, top_p and
random stream, so a request's text does not depend on which batch it ran in.

``transformers``' own sampling draws every row from one global generator, so a row's tokens change
with its batch mates. Here a logits processor does the sampling itself — Gumbel-max with noise from
the row's own ``torch.Generator`` — and leaves only the chosen token finite; ``generate`` then runs
greedy, keeping its KV cache, padding, EOS and stop-string handling.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from transformers import LogitsProcessor


def nucleus_mask(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """True for tokens outside each row's smallest set whose probability reaches its ``top_p``.

    ``logits`` is (rows, vocab), ``top_p`` is (rows, 1). The token that crosses ``top_p`` is kept.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    remove_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
    return torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)


class PerRowSampler(LogitsProcessor):
    """Samples each row from its own generator; returns scores with only the chosen token finite.

    Row ``i`` draws exactly one vector of uniforms from its generator per step, so the t-th token of
    a request sees the same noise whatever batch it is in. Temperature 0 means greedy.
    """

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]):
        self.temperatures = torch.tensor(list(temperatures), dtype=torch.float32).unsqueeze(1)
        self.top_ps = torch.tensor(list(top_ps), dtype=torch.float32).unsqueeze(1)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        logits = scores.float()
        device = logits.device
        temperatures = self.temperatures.to(device)
        scaled = logits / temperatures.clamp_min(1e-6)
        if bool((self.top_ps < 1.0).any()):
            scaled = scaled.masked_fill(nucleus_mask(scaled, self.top_ps.to(device)), float("-inf"))
        vocab = logits.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=g) for g in self.generators]).to(device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0)))
        sampled = torch.argmax(scaled + gumbel, dim=-1)
        greedy = torch.argmax(logits, dim=-1)
        chosen = torch.where(temperatures.squeeze(1) <= 0.0, greedy, sampled)
        out = torch.full_like(scores, float("-inf"))
        out.scatter_(1, chosen.unsqueeze(1), 0.0)
        return out
