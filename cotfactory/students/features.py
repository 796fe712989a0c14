"""Training examples → token ids with loss masks, and the collator that pads a batch.

Causal students read ``source + context + target + EOS`` with labels only on ``target + EOS``;
seq2seq students read ``source`` and write ``context + target + EOS`` (the decoder is fed the whole
sequence; labels mask the context). Prompt tokens never carry loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from cotfactory.students.methods.base import TrainingExample

IGNORE = -100


def encode_example(
    example: TrainingExample, tokenizer: Any, causal: bool, task_ids: dict[str, int], max_source: int, max_target: int
) -> dict[str, Any]:
    source = tokenizer(example.source, add_special_tokens=True)["input_ids"]
    if not causal and source and source[-1] != tokenizer.eos_token_id:
        source = source + [tokenizer.eos_token_id]
    if causal and source and source[-1] == tokenizer.eos_token_id:
        source = source[:-1]  # a tokenizer that appends EOS to every text must not end the prompt
    context = tokenizer(example.context, add_special_tokens=False)["input_ids"] if example.context else []
    target = tokenizer(example.target, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]
    uncut = {"source_tokens": len(source), "written_tokens": len(context) + len(target)}  # for the preflight
    source = source[-max_source:]  # keep the end of a long prompt: the question is there
    written = (context + target)[:max_target]
    labels = ([IGNORE] * len(context) + target)[:max_target]
    feature = {"task_id": task_ids[example.task], "weight": example.weight, **uncut}
    if causal:
        feature["input_ids"] = source + written
        feature["labels"] = [IGNORE] * len(source) + labels
    else:
        feature["input_ids"] = source
        feature["decoder_target"] = written
        feature["labels"] = labels
    feature["length"] = len(feature["input_ids"]) + len(feature.get("decoder_target", []))
    return feature


@dataclass
class MultitaskCollator:
    """Pads to the longest in the batch (dynamic padding) and carries each example's task and weight,
    and with ``teacher`` (one entry per example, by ``example_index``) the teacher's distributions
    aligned with the labels."""

    pad_id: int
    causal: bool
    decoder_start_id: int = 0
    teacher: list[Any] | None = None
    teacher_k: int = 0

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch: dict[str, torch.Tensor] = {
            "input_ids": _pad([f["input_ids"] for f in features], self.pad_id),
            "attention_mask": _pad([[1] * len(f["input_ids"]) for f in features], 0),
            "labels": _pad([f["labels"] for f in features], IGNORE),
            "task_ids": torch.tensor([f["task_id"] for f in features]),
            "weights": torch.tensor([f["weight"] for f in features], dtype=torch.float32),
        }
        if not self.causal:  # decoder input: the written sequence shifted right, start token first
            shifted = [[self.decoder_start_id] + f["decoder_target"][:-1] for f in features]
            batch["decoder_input_ids"] = _pad(shifted, self.pad_id)
        if self.teacher is not None:
            from cotfactory.students.teacher_targets import collate_teacher

            found = [self.teacher[f["example_index"]] for f in features]
            batch.update(collate_teacher(found, batch["labels"].shape[1], self.teacher_k))
        return batch


def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([r + [value] * (width - len(r)) for r in rows], dtype=torch.long)
