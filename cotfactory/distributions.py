"""The teacher's token distributions recorded with a rationale: per generated token, its id and
log-probability, the top-K (id, log-probability) of the teacher's distribution, and the log of the
mass outside those K (the tail bucket, so a truncated distribution is never read as a full one).

Recorded at temperature 1, before top-p: that is the model's own distribution, whatever sampling
setting drew the text (a grid mixes several); a distillation loss applies its own temperature.

Stored as one packed blob per sample (``to_bytes``): int32 ids and float16 log-probabilities,
6·K + 8 bytes per token — 128 bytes at K = 20 — kept in the store's ``distributions`` table beside
(not inside) the sample rows, and exported to ``distributions.parquet``.

Ids belong to the teacher's tokenizer, saved with the run. An API teacher given no tokenizer returns
token strings only: its ids then index ``strings``, the reply's own list, and the store turns them into
ids of the run's string vocabulary (its ``token_strings`` table) in the transaction that keeps the
sample, so a student is later aligned to those strings by text (``--align``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MAX_K = 100  # a sanity bound: the literature uses 5-64, OpenAI allows 20


@dataclass(frozen=True)
class TokenDistributions:
    """One sample's recorded distributions; ids are in the teacher tokenizer's vocabulary."""

    token_ids: np.ndarray  # (n,) int32: the generated tokens
    token_logprobs: np.ndarray  # (n,) float16: each generated token's log-probability
    top_ids: np.ndarray  # (n, K) int32: the K most likely tokens at each position, most likely first
    top_logprobs: np.ndarray  # (n, K) float16
    tail: np.ndarray  # (n,) float16: log of the probability mass outside the top K (-inf: none)
    strings: tuple[str, ...] | None = None  # set: ids index these token strings, not a tokenizer's vocabulary

    @property
    def k(self) -> int:
        return int(self.top_ids.shape[1])

    def __len__(self) -> int:
        return int(self.token_ids.shape[0])

    @classmethod
    def build(
        cls,
        token_ids: list[int] | np.ndarray,
        token_logprobs: list[float] | np.ndarray,
        top_ids: list[list[int]] | np.ndarray,
        top_logprobs: list[list[float]] | np.ndarray,
        tail: list[float] | np.ndarray | None = None,
        strings: tuple[str, ...] | None = None,
    ) -> TokenDistributions:
        """From plain lists; ``tail`` defaults to log(1 − Σ top probabilities), computed in float64."""
        k = len(top_ids[0]) if len(top_ids) else 0
        top_lp = np.asarray(top_logprobs, dtype=np.float64).reshape(-1, k)
        if tail is None:
            mass = np.exp(top_lp).sum(axis=1) if k else np.zeros(len(top_lp))
            with np.errstate(divide="ignore"):
                tail = np.log(np.clip(1.0 - mass, 0.0, 1.0))
        return cls(
            np.asarray(token_ids, dtype=np.int32),
            np.asarray(token_logprobs, dtype=np.float16),
            np.asarray(top_ids, dtype=np.int32).reshape(-1, k),
            top_lp.astype(np.float16),
            np.asarray(tail, dtype=np.float16),
            strings,
        )

    def with_ids(self, ids: np.ndarray) -> TokenDistributions:
        """The same distributions with every id ``i`` ≥ 0 replaced by ``ids[i]`` (-1 stays), ``strings`` dropped."""

        def remap(a: np.ndarray) -> np.ndarray:
            return np.where(a >= 0, ids[np.clip(a, 0, None)], -1).astype(np.int32)

        return TokenDistributions(
            remap(self.token_ids), self.token_logprobs, remap(self.top_ids), self.top_logprobs, self.tail
        )

    def to_bytes(self) -> bytes:
        assert self.strings is None, "ids of a reply's own strings are stored only as run-wide ids"
        return b"".join(
            np.ascontiguousarray(a).tobytes()
            for a in (self.token_ids, self.top_ids, self.token_logprobs, self.top_logprobs, self.tail)
        )

    @classmethod
    def from_bytes(cls, blob: bytes, tokens: int, k: int) -> TokenDistributions:
        if len(blob) != bytes_per_token(k) * tokens:
            raise ValueError(f"a distribution blob of {tokens} tokens at K={k} cannot be {len(blob)} bytes")
        sizes = [(np.int32, tokens), (np.int32, tokens * k), (np.float16, tokens), (np.float16, tokens * k)]
        parts, offset = [], 0
        for dtype, count in sizes:
            parts.append(np.frombuffer(blob, dtype=dtype, count=count, offset=offset))
            offset += np.dtype(dtype).itemsize * count
        tail = np.frombuffer(blob, dtype=np.float16, count=tokens, offset=offset)
        ids, top_ids, logprobs, top_logprobs = parts
        return cls(ids, logprobs, top_ids.reshape(tokens, k), top_logprobs.reshape(tokens, k), tail)

    def head(self, tokens: int) -> TokenDistributions:
        """The first ``tokens`` positions (a reply cut at a stop string keeps its own tokens only)."""
        return TokenDistributions(
            self.token_ids[:tokens],
            self.token_logprobs[:tokens],
            self.top_ids[:tokens],
            self.top_logprobs[:tokens],
            self.tail[:tokens],
        )


def bytes_per_token(k: int) -> int:
    """int32 token id + int32 ids of the top K + float16 logprob of the token, of the top K, of the tail."""
    return 4 + 4 * k + 2 + 2 * k + 2
