"""The teacher's recorded distributions, placed on the student's label positions (``--distill``).

A training example's target contains the text of the teacher sample it came from (``sample_key``),
tokenized the student's way. Each student target token that covers exactly the characters of one
teacher token (``token_alignment.align_positions``) receives that teacher token's top-K
distribution, its ids mapped into the student's vocabulary; every other label position keeps the
hard label only. With the same tokenizer that pairs id-identical tokens; with ``--align`` it pairs
tokens of different vocabularies that cover the same text (the exact case of Fu et al. 2023's
dynamic-programming alignment, since the target holds the teacher's text verbatim). A target that
holds the teacher's text only edited (whitespace rewritten by a method) is paired by the
edit-distance alignment instead (``token_alignment.dp_align``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cotfactory.errors import ConfigError
from cotfactory.run_dir import RunDir
from cotfactory.store import Store
from cotfactory.students.features import IGNORE
from cotfactory.students.methods.base import TrainingExample
from cotfactory.students.string_vocabulary import StringVocabulary
from cotfactory.students.token_alignment import (
    VocabularyMap,
    align_positions,
    check_vocabularies,
    dp_align,
    token_spans,
)

ANCHOR = 40  # characters of the teacher's text looked up in the target to place it


@dataclass(frozen=True)
class TeacherTargets:
    """One example's teacher distributions at some of its label positions."""

    positions: np.ndarray  # (n,) indices into the example's ``labels``
    ids: np.ndarray  # (n, K) int32 student-vocabulary ids, -1 for an empty slot or a token the student lacks
    logprobs: np.ndarray  # (n, K) float16, as recorded (widened per batch: memory stays 6 bytes a slot)
    tail: np.ndarray  # (n,) float16: log of the teacher's mass outside the K


@dataclass
class Coverage:
    examples: int = 0
    with_teacher: int = 0
    label_tokens: int = 0
    aligned_tokens: int = 0

    def line(self, k: int) -> str:
        share = self.aligned_tokens / max(self.label_tokens, 1)
        return (
            f"teacher distributions (K={k}): {self.with_teacher}/{self.examples} examples, "
            f"{self.aligned_tokens}/{self.label_tokens} label tokens ({share:.0%}) aligned to a teacher token"
        )


def open_distributions(path: str, student_tokenizer: Any, align: bool) -> tuple[Store, Any, VocabularyMap]:
    """The run's store, its teacher tokenizer and the vocabulary map; refused (ConfigError) before any
    training when the input holds no recorded distributions or the vocabularies differ without --align."""
    from transformers import AutoTokenizer

    run = RunDir(path)
    if not Path(path).is_dir() or not run.has_store():
        raise ConfigError(f"{path}: --distill needs a run directory whose teacher distributions were recorded")
    store = Store(run.store)
    strings = store.token_strings()
    if store.distribution_bytes()[1] == 0 or not (run.teacher_tokenizer.is_dir() or strings):
        store.close()
        raise ConfigError(f"{path}: no teacher distributions recorded; run generate with --logprobs K first")
    if strings:  # an API teacher recorded without a tokenizer: its token strings are the vocabulary
        teacher_tokenizer: Any = StringVocabulary(strings, f"the token strings of {path}")
    else:
        teacher_tokenizer = AutoTokenizer.from_pretrained(str(run.teacher_tokenizer))
    try:
        vocabulary = check_vocabularies(teacher_tokenizer, student_tokenizer, align)
    except ConfigError:
        store.close()
        raise
    return store, teacher_tokenizer, vocabulary


def build_teacher_targets(
    examples: list[TrainingExample],
    features: list[dict[str, Any]],
    store: Store,
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    vocabulary: VocabularyMap,
) -> tuple[list[TeacherTargets | None], Coverage, int]:
    """Per example (in order) its teacher targets or None, the coverage, and K."""
    keys = [e.sample_key for e in examples if e.sample_key]
    recorded = dict(store.distributions(dict.fromkeys(keys)))
    k = max((d.k for d in recorded.values()), default=0)
    coverage = Coverage(examples=len(examples))
    targets: list[TeacherTargets | None] = []
    for example, feature in zip(examples, features, strict=True):
        labelled = [i for i, label in enumerate(feature["labels"]) if label != IGNORE]
        coverage.label_tokens += len(labelled)
        found = recorded.get(example.sample_key)
        placed = _place(found, example, feature, labelled, k, teacher_tokenizer, student_tokenizer, vocabulary)
        targets.append(placed)
        if placed is not None:
            coverage.with_teacher += 1
            coverage.aligned_tokens += len(placed.positions)
    return targets, coverage, k


def _place(
    found: Any,
    example: TrainingExample,
    feature: dict[str, Any],
    labelled: list[int],
    k: int,
    teacher_tokenizer: Any,
    student_tokenizer: Any,
    vocabulary: VocabularyMap,
) -> TeacherTargets | None:
    if found is None or not len(found):
        return None
    teacher_ids = found.token_ids.tolist()
    special = set(teacher_tokenizer.all_special_ids)
    while teacher_ids and teacher_ids[-1] in special:  # the EOS that ended the reply is in no target text
        teacher_ids.pop()
    teacher_text = teacher_tokenizer.decode(teacher_ids)
    target_ids = student_tokenizer(example.target, add_special_tokens=False)["input_ids"]
    target_text = student_tokenizer.decode(target_ids)
    teacher_spans = token_spans(teacher_tokenizer, teacher_ids)
    student_spans = token_spans(student_tokenizer, target_ids)
    core = teacher_text.lstrip()
    at = target_text.find(core[:ANCHOR]) if core else -1
    if at >= 0:  # the target holds the teacher's text: tokens over the same characters pair exactly
        pairs = align_positions(teacher_spans, at - (len(teacher_text) - len(core)), student_spans)
    else:  # an edited text (whitespace, a cut): pair tokens by an edit-distance alignment of the texts
        pairs = dp_align([teacher_text[a:b] for a, b in teacher_spans], [target_text[a:b] for a, b in student_spans])
    positions, rows = [], []
    for j, i in enumerate(pairs):
        # the j-th target token is the j-th labelled position (truncation keeps a prefix of the target)
        if i < 0 or j >= len(labelled) or feature["labels"][labelled[j]] != target_ids[j]:
            continue
        positions.append(labelled[j])
        rows.append(i)
    if not rows:
        return None
    chosen = np.asarray(rows)
    ids = np.full((len(rows), k), -1, dtype=np.int32)
    logprobs = np.full((len(rows), k), -np.inf, dtype=np.float16)
    ids[:, : found.k] = vocabulary.map(found.top_ids[chosen].astype(np.int64))
    logprobs[:, : found.k] = found.top_logprobs[chosen]
    return TeacherTargets(np.asarray(positions), ids, logprobs, found.tail[chosen].copy())


def collate_teacher(targets: list[TeacherTargets | None], width: int, k: int) -> dict[str, Any]:
    """Batch tensors aligned with the padded labels: ids (B, L, K) with -1 where there is no teacher,
    logprobs (B, L, K), tail (B, L)."""
    import torch

    batch = len(targets)
    ids = torch.full((batch, width, k), -1, dtype=torch.long)
    logprobs = torch.full((batch, width, k), float("-inf"))
    tail = torch.full((batch, width), float("-inf"))
    for row, found in enumerate(targets):
        if found is None:
            continue
        positions = torch.from_numpy(found.positions)
        ids[row, positions] = torch.from_numpy(found.ids).long()
        logprobs[row, positions] = torch.from_numpy(found.logprobs).float()
        tail[row, positions] = torch.from_numpy(found.tail).float()
    return {"teacher_ids": ids, "teacher_logprobs": logprobs, "teacher_tail": tail}
