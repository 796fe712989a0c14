"""e-SNLI as released with Distilling Step-by-Step (JSON Lines): premise, hypothesis, label 0/1/2."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

from cotfactory.loaders.common import Entry, LoadOptions, entry, field, iter_jsonl, split_from_name

ESNLI_LABELS = ["entailment", "neutral", "contradiction"]


def load_esnli(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """The question is "Premise: …\\nHypothesis: …", as in the PaLM prompts.

    The answer is one of entailment / neutral / contradiction. ``metadata.index`` aligns the PaLM
    rationale files.
    """
    split = split_from_name(path)
    for position, (where, record) in enumerate(iter_jsonl(path)):
        label = field(record, "label", "number", where)
        if label not in (0, 1, 2):
            raise where.error(f"field 'label': expected 0, 1 or 2, got {label!r}")
        premise = field(record, "premise", "string", where)
        hypothesis = field(record, "hypothesis", "string", where)
        given = (record.get(f"explanation_{i}") for i in (1, 2, 3))
        explanations = [text for text in given if isinstance(text, str) and text]
        yield entry(
            where,
            options,
            id=str(record.get("id") or f"{path.stem}-{position}"),
            question=f"Premise: {premise}\nHypothesis: {hypothesis}",
            gold=ESNLI_LABELS[int(label)],
            answer_type="choice",
            choices=ESNLI_LABELS,
            metadata={"index": position, "split": split, "explanations": explanations},
        )
