"""Activation-based importance of a LLaMA-family model's parts, from one forward pass over calibration text.

Width, as in Minitron (Muralidharan et al. 2024, "Compact Language Models via Pruning and Knowledge
Distillation", §2.2) and NVIDIA ModelOpt's implementation of it — forward activations only, no gradients:

- a query head: the L2 norm of its attention output (the head's slice of ``o_proj``'s input);
- an MLP neuron: the magnitude of its intermediate activation ``act(gate(x)) * up(x)`` (``down_proj``'s input);
- a hidden (embedding) channel: the magnitude of that channel at the output of every RMSNorm of the model
  (both norms of every block and the final one; the norms count as more samples in the L2 below).

Each is aggregated over a sample's tokens by the **mean** (padding excluded) and over samples by the **L2
norm** — the paper's best (batch, sequence) aggregation, and ModelOpt's: a mean over tokens does not favour
long samples, and the L2 over samples lets a part that matters strongly for some samples outrank one that
is mildly active everywhere.

Depth: ShortGPT's block importance (Men et al. 2024), BI = 1 − mean cos(block input, block output) over all
tokens: a block that leaves its input unchanged (BI ≈ 0) can go. All blocks are scored by the same single
pass that scores width, so depth costs nothing extra; the alternative Minitron also uses, the loss increase
when each block is dropped, costs one more pass over the calibration set per block (30 for SmolLM2).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


@dataclass
class Importance:
    """Scores of one model, higher = more important."""

    blocks: torch.Tensor  # [layers] block importance, 1 − mean cos(input, output)
    heads: torch.Tensor  # [layers, query heads]
    neurons: torch.Tensor  # [layers, intermediate]
    channels: torch.Tensor  # [hidden]
    samples: int
    tokens: int


@dataclass
class Batch:
    """Right-padded token ids and their mask."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.input_ids.shape[0])


def calibration_batches(token_ids: Sequence[Sequence[int]], batch_size: int, pad_id: int = 0) -> Iterator[Batch]:
    """Batches of similar length (sorted by length: little padding, which on a CPU is wasted work).

    The statistics are sums over samples, so the order changes nothing but speed.
    """
    ordered = sorted((ids for ids in token_ids if len(ids) > 0), key=len)
    for start in range(0, len(ordered), batch_size):
        chunk = ordered[start : start + batch_size]
        width = max(len(ids) for ids in chunk)
        input_ids = torch.full((len(chunk), width), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chunk), width), dtype=torch.long)
        for row, ids in enumerate(chunk):
            input_ids[row, : len(ids)] = torch.tensor(ids, dtype=torch.long)
            mask[row, : len(ids)] = 1
        yield Batch(input_ids, mask)


def decoder_layers(model: Any) -> Sequence[Any]:
    """The decoder blocks of a ``*ForCausalLM`` (``model.model.layers``)."""
    return model.base_model.layers  # type: ignore[no-any-return]


def _first_tensor(value: Any) -> torch.Tensor:
    return value[0] if isinstance(value, tuple | list) else value


class _Collector:
    """Forward hooks that add each batch's statistics to running sums of squares (for the L2 over samples)."""

    def __init__(self, model: Any):
        config = model.config
        layers = decoder_layers(model)
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.mask: torch.Tensor | None = None  # [batch, seq] float, set before each forward
        count = len(layers)
        self.heads = torch.zeros(count, config.num_attention_heads, dtype=torch.float64)
        self.neurons = torch.zeros(count, config.intermediate_size, dtype=torch.float64)
        self.channels = torch.zeros(config.hidden_size, dtype=torch.float64)
        self.cos_sum = torch.zeros(count, dtype=torch.float64)
        self.tokens = 0
        self.handles: list[Any] = []
        for index, layer in enumerate(layers):
            self._hook_input(layer.self_attn.o_proj, self._head_hook(index))
            self._hook_input(layer.mlp.down_proj, self._neuron_hook(index))
            for norm in (layer.input_layernorm, layer.post_attention_layernorm):
                self.handles.append(norm.register_forward_hook(self._channel_hook))
            self.handles.append(layer.register_forward_hook(self._block_hook(index), with_kwargs=True))
        self.handles.append(model.base_model.norm.register_forward_hook(self._channel_hook))

    def _hook_input(self, module: Any, record: Callable[[torch.Tensor], None]) -> None:
        self.handles.append(module.register_forward_pre_hook(lambda _m, args: record(args[0])))

    def _seq_mean_squares(self, values: torch.Tensor) -> torch.Tensor:
        """[batch, seq, C] → [C]: the mean over each sample's real tokens, squared and summed over samples."""
        assert self.mask is not None
        mask = self.mask.to(values.device)
        per_sample = (values.float() * mask[..., None]).sum(1) / mask.sum(1).clamp(min=1)[:, None]
        return per_sample.pow(2).sum(0).double().cpu()

    def _head_hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def record(attn_output: torch.Tensor) -> None:
            batch, seq, _ = attn_output.shape
            per_head = attn_output.float().view(batch, seq, -1, self.head_dim).norm(dim=-1)
            self.heads[index] += self._seq_mean_squares(per_head)

        return record

    def _neuron_hook(self, index: int) -> Callable[[torch.Tensor], None]:
        def record(activation: torch.Tensor) -> None:
            self.neurons[index] += self._seq_mean_squares(activation.abs())

        return record

    def _channel_hook(self, _module: Any, _args: Any, output: Any) -> None:
        self.channels += self._seq_mean_squares(_first_tensor(output).abs())

    def _block_hook(self, index: int) -> Callable[..., None]:
        def record(_module: Any, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> None:
            inputs = args[0] if args else kwargs["hidden_states"]
            cos = F.cosine_similarity(inputs.float(), _first_tensor(output).float(), dim=-1)
            assert self.mask is not None
            self.cos_sum[index] += float((cos * self.mask.to(cos.device)).sum())

        return record

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


@torch.no_grad()
def collect_importance(
    model: Any, batches: Iterable[Batch], on_batch: Callable[[Batch], None] | None = None
) -> Importance:
    """One pass over ``batches`` through the decoder (no LM head: its logits are not needed) scoring
    every block, query head, MLP neuron and hidden channel of ``model``."""
    collector = _Collector(model)
    device = next(model.parameters()).device
    samples = 0
    try:
        for batch in batches:
            collector.mask = batch.attention_mask.float()
            model.base_model(
                input_ids=batch.input_ids.to(device), attention_mask=batch.attention_mask.to(device), use_cache=False
            )
            collector.tokens += int(batch.attention_mask.sum())
            samples += batch.size
            if on_batch is not None:
                on_batch(batch)
    finally:
        collector.remove()
    if samples == 0:
        raise ValueError("no calibration tokens")
    return Importance(
        blocks=(1.0 - collector.cos_sum / collector.tokens).float(),
        heads=collector.heads.sqrt().float(),
        neurons=collector.neurons.sqrt().float(),
        channels=collector.channels.sqrt().float(),
        samples=samples,
        tokens=collector.tokens,
    )
