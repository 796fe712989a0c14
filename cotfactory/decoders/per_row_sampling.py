"""Per-row sampling for batched decoding: each row has its own temperature, top_p and random stream,
so a request's text does not depend on which batch it ran in.

``transformers``' own sampling draws every row from one global generator, so a row's tokens change
with its batch mates. Here each row draws Gumbel noise from its own ``torch.Generator`` — exactly one
vector of uniforms per step — and takes the argmax of its scaled logits plus that noise (Gumbel-max:
a draw from softmax(logits / T), inside the top-p nucleus). Temperature 0 means greedy.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def nucleus_mask(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    """True for tokens outside each row's smallest set whose probability reaches its ``top_p``.

    ``logits`` is (rows, vocab), ``top_p`` is (rows, 1). The token that crosses ``top_p`` is kept.
    """
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits, dim=-1)
    remove_sorted = (probs.cumsum(dim=-1) - probs) >= top_p
    return torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)


class RowSampling:
    """The sampling settings and generators of a batch's rows; ``choose`` draws one token per row.

    Row ``i`` draws exactly one vector of uniforms from its generator per step (greedy rows too), so
    the t-th token of a request sees the same noise whatever batch it is in.
    """

    def __init__(self, temperatures: Sequence[float], top_ps: Sequence[float], seeds: Sequence[int]):
        self.temperatures = torch.tensor(list(temperatures), dtype=torch.float32).unsqueeze(1)
        self.top_ps = torch.tensor(list(top_ps), dtype=torch.float32).unsqueeze(1)
        self.generators = [torch.Generator(device="cpu").manual_seed(int(seed)) for seed in seeds]

    def choose(self, logits: torch.Tensor, rows: Sequence[int] | None = None) -> torch.Tensor:
        """The next token of each of ``rows`` (default: all), from their logits (len(rows), vocab)."""
        rows = list(range(len(self.generators))) if rows is None else list(rows)
        logits = logits.float()
        device = logits.device
        index = torch.tensor(rows)
        temperatures = self.temperatures[index].to(device)
        top_ps = self.top_ps[index]
        scaled = logits / temperatures.clamp_min(1e-6)
        if bool((top_ps < 1.0).any()):
            scaled = scaled.masked_fill(nucleus_mask(scaled, top_ps.to(device)), float("-inf"))
        vocab = logits.shape[-1]
        uniform = torch.stack([torch.rand(vocab, generator=self.generators[row]) for row in rows]).to(device)
        gumbel = -torch.log(-torch.log(uniform.clamp(1e-20, 1.0)))
        sampled = torch.argmax(scaled + gumbel, dim=-1)
        greedy = torch.argmax(logits, dim=-1)
        return torch.where(temperatures.squeeze(1) <= 0.0, greedy, sampled)
