"""Small pieces every hand-written decoding loop needs from a transformers causal LM."""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any


def new_cache(model: Any, max_length: int | None = None) -> Any:
    """An empty KV cache shaped for ``model`` (sliding-window layers included).

    With ``max_length`` (prompt + new tokens, known before decoding) the cache is preallocated
    (``StaticCache``): a growing cache concatenates every layer's keys and values at every step, which
    measured ~13 % of a few-shot decoding step on CPU (batch 16, 900-token context).
    """
    from transformers import DynamicCache

    if max_length is not None:
        try:
            from transformers import StaticCache

            return StaticCache(config=model.config, max_cache_len=max_length)
        except (ImportError, TypeError, ValueError):  # older transformers, or a model it cannot preallocate
            pass

    try:
        return DynamicCache(config=model.config)
    except TypeError:  # transformers < 4.56
        return DynamicCache()


def cache_kwarg(model: Any, cache: Any) -> dict[str, Any]:
    """Pass ``cache`` under this model's name for it (``cache`` since transformers 5.x, else
    ``past_key_values``). The cache object is updated in place."""
    parameters = inspect.signature(model.forward).parameters
    return {"cache": cache} if "cache" in parameters else {"past_key_values": cache}


def logits_to_keep_kwarg(model: Any) -> dict[str, int]:
    """Ask a prefill for the last position's logits only, under whichever name this model uses."""
    parameters = inspect.signature(model.forward).parameters
    for name in ("logits_to_keep", "num_logits_to_keep"):
        if name in parameters:
            return {name: 1}
    return {}


def pad_id(tokenizer: Any) -> int:
    """The id to pad with: the pad token, else EOS, else 0 (padded positions are masked anyway)."""
    for candidate in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if candidate is not None:
            return int(candidate)
    return 0


def stop_string_check(tokenizer: Any, stop_strings: Sequence[str]) -> Callable[[Sequence[int]], bool]:
    """True once a row's generated tokens decode to a text holding a stop string.

    The whole text is decoded, not a token tail: a tail can lose characters at its edges (byte
    fragments, a SentencePiece leading space), and decoding a few hundred tokens costs microseconds.
    """

    def hit(token_ids: Sequence[int]) -> bool:
        text = tokenizer.decode(list(token_ids), skip_special_tokens=True)
        return any(s in text for s in stop_strings)

    return hit
