"""Causal students built from the teacher's layers, and the cosine between matched hidden states.

DistilBERT (Sanh et al. 2019) initialises the student from the teacher by "taking one layer out of
two" and adds a cosine loss between the student's and the teacher's hidden states. Here, for
LLaMA-family causal LMs:

* ``--init-from-teacher every-other``: student layer i takes teacher layer i·s with s = ⌈L_t / L_s⌉
  (0, 2, 4, … for a student half as deep), or evenly spread layers ⌊i·L_t / L_s⌋ when that stride
  would run past the teacher's last layer; ``importance``: the L_s blocks with the highest block
  importance (ShortGPT's 1 − cos(block input, block output), cotfactory.students.importance) on the
  training examples, kept in depth order. The embeddings, the final norm and the LM head are copied
  too: every tensor of the student comes from the teacher, so every shape must match (same widths).
* A student as deep as the teacher (``--student`` naming the teacher itself, say) is first rebuilt
  with ⌈L_t / 2⌉ layers: DistilBERT's half.
* ``--hidden-cosine w``: w · mean(1 − cos) between each student layer's output and the output of the
  teacher layer it came from (or, without ``--init-from-teacher``, the every-other layer), on the
  positions whose logits carry loss; layer outputs are read by forward hooks, before the final norm
  (``output_hidden_states`` normalises the last one only, which would pair a normed student state
  with an un-normed teacher state).
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from cotfactory.errors import ConfigError
from cotfactory.students.features import IGNORE

STRATEGIES = ("every-other", "importance")
CALIBRATION_SAMPLES = 256  # training examples scored for block importance (Minitron uses ~1k; blocks settle sooner)


@dataclass(frozen=True)
class LayerMap:
    """Student layer i came from (or is matched with) teacher layer ``teacher_layers[i]``."""

    teacher_layers: list[int]
    teacher_depth: int
    strategy: str

    def line(self) -> str:
        layers = ", ".join(map(str, self.teacher_layers))
        return (
            f"student built from the teacher ({self.strategy}): layers [{layers}] of {self.teacher_depth}; "
            "embeddings, final norm and head copied"
        )


def base_of(model: Any) -> Any:
    """The transformers model inside a PEFT wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def decoder_layers(model: Any) -> torch.nn.ModuleList:
    """A LLaMA-family causal LM's decoder blocks (``model.model.layers``), through a PEFT wrapper."""
    base = base_of(model)
    layers = getattr(getattr(base, "model", None), "layers", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ConfigError(
            f"'{type(base).__name__}' keeps no decoder layers at model.layers: building from or matching the "
            "teacher's layers needs LLaMA-family causal LMs"
        )
    return layers


def every_other_layers(teacher_depth: int, student_depth: int) -> list[int]:
    """Teacher layers 0, s, 2s, … with s = ⌈L_t / L_s⌉; evenly spread ⌊i·L_t / L_s⌋ where that runs out."""
    _check_depths(teacher_depth, student_depth)
    stride = math.ceil(teacher_depth / student_depth)
    if (student_depth - 1) * stride < teacher_depth:
        return [i * stride for i in range(student_depth)]
    return [i * teacher_depth // student_depth for i in range(student_depth)]


def important_layers(block_importance: Sequence[float], student_depth: int) -> list[int]:
    """The ``student_depth`` most important blocks, in depth order (ties: the shallower block)."""
    _check_depths(len(block_importance), student_depth)
    ranked = sorted(range(len(block_importance)), key=lambda i: (-float(block_importance[i]), i))
    return sorted(ranked[:student_depth])


def _check_depths(teacher_depth: int, student_depth: int) -> None:
    if not 0 < student_depth <= teacher_depth:
        raise ConfigError(
            f"the student has {student_depth} layers and the teacher {teacher_depth}: a student built from or "
            "matched with the teacher's layers needs at least 1 and at most as many"
        )


def init_from_teacher(
    student: Any, teacher: Any, strategy: str, calibration: Sequence[Sequence[int]] = (), pad_id: int = 0
) -> tuple[Any, LayerMap]:
    """(the student with every tensor taken from the teacher, which teacher layer each student layer is).

    ``student`` gives the architecture (rebuilt at half the teacher's depth when it is as deep);
    ``calibration`` (token ids) is what ``importance`` scores the teacher's blocks on."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown --init-from-teacher '{strategy}'; available: {', '.join(STRATEGIES)}")
    teacher_depth, depth = len(decoder_layers(teacher)), len(decoder_layers(student))
    if depth == teacher_depth:
        depth = math.ceil(teacher_depth / 2)
        student = with_depth(student, depth)
    if strategy == "every-other":
        chosen = every_other_layers(teacher_depth, depth)
    else:
        chosen = important_layers(block_importance(teacher, calibration, pad_id), depth)
    copy_teacher_weights(student, teacher, chosen)
    return student, LayerMap(chosen, teacher_depth, strategy)


def with_depth(model: Any, depth: int) -> Any:
    """A fresh model of ``model``'s class and config with ``depth`` decoder layers (weights to be copied in)."""
    config = copy.deepcopy(model.config)
    config.num_hidden_layers = depth
    if getattr(config, "layer_types", None):
        config.layer_types = list(config.layer_types)[:depth]
    dtype = next(model.parameters()).dtype
    return type(model)(config).to(dtype)


def block_importance(teacher: Any, calibration: Sequence[Sequence[int]], pad_id: int) -> list[float]:
    """ShortGPT block importance of each teacher layer on up to ``CALIBRATION_SAMPLES`` token sequences."""
    from cotfactory.students.importance import calibration_batches, collect_importance

    samples = [list(ids) for ids in calibration[:CALIBRATION_SAMPLES] if len(ids) > 1]
    if not samples:
        raise ConfigError("--init-from-teacher importance: no training example to score the teacher's blocks on")
    found = collect_importance(teacher, calibration_batches(samples, batch_size=8, pad_id=pad_id))
    return [float(value) for value in found.blocks]


def copy_teacher_weights(student: Any, teacher: Any, chosen: Sequence[int]) -> None:
    """Every student tensor from the teacher: layer i from teacher layer ``chosen[i]``, the rest by name.
    Checked whole before anything is copied; a missing tensor or another shape is one ConfigError."""
    prefix = _layers_prefix(student)
    pattern = re.compile(rf"^{re.escape(prefix)}\.(\d+)\.(.+)$")
    source = teacher.state_dict()
    copied = {}
    for name, tensor in student.state_dict().items():
        match = pattern.match(name)
        origin = f"{prefix}.{chosen[int(match.group(1))]}.{match.group(2)}" if match else name
        found = source.get(origin)
        if found is None:
            raise ConfigError(f"--init-from-teacher: the teacher has no tensor '{origin}' for the student's '{name}'")
        if found.shape != tensor.shape:
            raise ConfigError(
                f"--init-from-teacher: student tensor '{name}' has shape {tuple(tensor.shape)}, the teacher's "
                f"'{origin}' {tuple(found.shape)}: building from the teacher's layers needs the same widths"
            )
        copied[name] = found.detach().to(dtype=tensor.dtype, device=tensor.device)
    student.load_state_dict(copied)


def _layers_prefix(model: Any) -> str:
    layers = decoder_layers(model)
    return next(name for name, module in model.named_modules() if module is layers)


# ------------------------------------------------------------------------------------------- hidden cosine


@dataclass(frozen=True)
class HiddenCosine:
    """``--hidden-cosine``: the weight and, per student layer, the teacher layer its output is matched with."""

    weight: float
    teacher_layers: list[int]

    @classmethod
    def between(cls, student: Any, teacher: Any, weight: float, layers: LayerMap | None) -> HiddenCosine:
        """Refused (one line) when the widths differ; the layers are ``layers``' or the every-other ones."""
        widths = (base_of(student).config.hidden_size, base_of(teacher).config.hidden_size)
        if widths[0] != widths[1]:
            raise ConfigError(
                f"--hidden-cosine: the student's hidden size {widths[0]} and the teacher's {widths[1]} differ: the "
                "cosine between hidden states needs equal widths (drop --hidden-cosine, or build the student from "
                "the teacher with --init-from-teacher)"
            )
        if layers is not None:
            return cls(weight, list(layers.teacher_layers))
        depths = len(decoder_layers(teacher)), len(decoder_layers(student))
        return cls(weight, every_other_layers(*depths))

    def example_losses(
        self, student_states: list[torch.Tensor], teacher_states: list[torch.Tensor], labels: torch.Tensor
    ) -> torch.Tensor:
        """Each example's weight · mean over layers and loss positions of (1 − cos): shape (batch,).

        Loss positions are those whose logits predict a label (causal: labels[t + 1] is set), as for the
        token losses, so prompts carry no loss here either."""
        predicting = torch.zeros_like(labels, dtype=torch.bool)
        predicting[:, :-1] = labels[:, 1:] != IGNORE
        mask = predicting.float()
        per_layer = [
            1.0 - F.cosine_similarity(s.float(), t.to(s.device).float(), dim=-1)
            for s, t in zip(student_states, teacher_states, strict=True)
        ]
        distance = torch.stack(per_layer).mean(dim=0)  # (batch, seq)
        return self.weight * (distance * mask).sum(dim=1) / mask.sum(dim=1).clamp_min(1.0)


@contextmanager
def layer_outputs(model: Any, indices: Sequence[int]) -> Iterator[list[torch.Tensor]]:
    """Inside the block, each forward of ``model`` fills the yielded list with the outputs of its decoder
    layers ``indices``, in that order (the list is emptied at each forward's first layer)."""
    layers = decoder_layers(model)
    captured: dict[int, torch.Tensor] = {}
    found: list[torch.Tensor] = []
    deepest = max(indices)  # hooks fire in depth order: the list is complete after this layer

    def hook(index: int) -> Any:
        def record(_module: Any, _args: Any, output: Any) -> None:
            captured[index] = output[0] if isinstance(output, tuple) else output
            if index == deepest:
                found[:] = [captured[i] for i in indices]
                captured.clear()

        return record

    handles = [layers[i].register_forward_hook(hook(i)) for i in sorted(set(indices))]
    try:
        yield found
    finally:
        for handle in handles:
            handle.remove()
