"""Preflight before the first training step: what truncation would do to the examples.

A Fine-tune-CoT target whose end is cut loses the answer after its separator — the student then learns to
ramble and never answer, and nothing says so until eval, an hour later. So the tokenized lengths are
measured against ``max_source_length`` / ``max_target_length`` and the student's context first, the
cuts are reported, and training is refused when too many examples would lose their answer.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from cotfactory.errors import ConfigError
from cotfactory.students.methods.base import TrainingExample


@dataclass
class Preflight:
    examples: int = 0
    source_cut: int = 0
    target_cut: int = 0
    answer_lost: Counter[str] = field(default_factory=Counter)  # task → examples that lose their answer
    longest_source: int = 0
    longest_target: int = 0
    context_limit: int | None = None
    over_context: int = 0

    @property
    def answer_lost_total(self) -> int:
        return sum(self.answer_lost.values())

    def lines(self, max_source: int, max_target: int) -> list[str]:
        def share(n: int) -> str:
            return f"{n} ({n / self.examples:.1%})" if self.examples else "0"

        out = [
            f"preflight: {self.examples} examples; longest source {self.longest_source} tokens "
            f"(max_source_length {max_source}), longest target {self.longest_target} (max_target_length {max_target})"
        ]
        if self.source_cut:
            out.append(f"  sources cut at the front (the question's start is lost): {share(self.source_cut)}")
        if self.target_cut:
            lost = ", ".join(f"{task} {n}" for task, n in sorted(self.answer_lost.items())) or "none"
            out.append(f"  targets cut at the end: {share(self.target_cut)}; losing their answer: {lost}")
        if self.over_context:
            out.append(f"  longer than the student's context ({self.context_limit}): {share(self.over_context)}")
        return out


def measure(
    examples: list[TrainingExample],
    features: list[dict[str, Any]],
    max_source: int,
    max_target: int,
    context_limit: int | None,
    answer_at_end: Collection[str],
) -> Preflight:
    """Cuts, from the lengths ``encode_example`` recorded before cutting (``source_tokens``,
    ``written_tokens``) and after (``length``). ``answer_at_end``: the tasks whose target ends with the
    answer (the method's ``Method.answer_at_end``): cutting such a target's end removes the answer."""
    report = Preflight(examples=len(examples), context_limit=context_limit)
    for example, feature in zip(examples, features, strict=True):
        source, written = feature["source_tokens"], feature["written_tokens"]
        report.longest_source = max(report.longest_source, source)
        report.longest_target = max(report.longest_target, written)
        report.source_cut += source > max_source
        if written > max_target:
            report.target_cut += 1
            if example.task in answer_at_end:
                report.answer_lost[example.task] += 1
        if context_limit is not None and feature["length"] > context_limit:
            report.over_context += 1
    return report


def check(report: Preflight, max_answer_cut: float, max_target: int, context_limit: int | None) -> None:
    """Refuse (one line, before anything is written) when too many examples would lose their answer or
    overflow the student's context."""
    if report.examples and report.answer_lost_total / report.examples > max_answer_cut:
        tasks = ", ".join(f"{task} {n}" for task, n in sorted(report.answer_lost.items()))
        raise ConfigError(
            f"max_target_length {max_target}: {report.answer_lost_total}/{report.examples} examples "
            f"({report.answer_lost_total / report.examples:.1%}, over max_answer_cut {max_answer_cut:.0%}) would lose "
            f"their answer ({tasks}; longest target {report.longest_target} tokens); raise --max-target-length"
        )
    if report.over_context:
        raise ConfigError(
            f"max_source_length + max_target_length: {report.over_context} examples are longer than the student's "
            f"context of {context_limit} tokens; lower --max-source-length or --max-target-length"
        )


def context_limit_of(model: Any, causal: bool) -> int | None:
    """The longest sequence the student's positions allow (None: relative positions, as T5's)."""
    if not causal:
        return None
    value = getattr(model.config, "max_position_embeddings", None)
    return int(value) if isinstance(value, int) and value > 0 else None
