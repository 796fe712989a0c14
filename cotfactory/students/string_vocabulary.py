"""A run's vocabulary of token strings, read as a tokenizer by the distillation code.

An API teacher recorded with ``--logprobs`` but no tokenizer keeps the token strings its server
returned (``TokenDistributions.strings``); the store numbers them run-wide. Training needs of a
teacher tokenizer only what such a table can answer: each id's text (to find each teacher token's
characters in the target and to map ids into the student's vocabulary by text) and which ids are
special (none are). It always differs from the student's vocabulary, so it distils with ``--align``.
"""

from __future__ import annotations

from collections.abc import Iterable


class StringVocabulary:
    """The duck-typed subset of a Hugging Face tokenizer that ``teacher_targets`` and
    ``token_alignment`` use, over a list of token strings (id = position)."""

    all_special_ids: list[int] = []

    def __init__(self, strings: list[str], name: str):
        self.strings = strings
        self.name_or_path = name

    def __len__(self) -> int:
        return len(self.strings)

    def decode(self, ids: Iterable[int], **_: object) -> str:
        """The strings joined; an id the table lacks (-1: a string the server sent that was never kept) adds nothing."""
        return "".join(self.strings[i] for i in ids if 0 <= i < len(self.strings))

    def convert_ids_to_tokens(self, ids: list[int]) -> list[str]:
        return [self.strings[i] for i in ids]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        return "".join(tokens)

    def get_vocab(self) -> dict[str, int]:
        return {text: i for i, text in enumerate(self.strings)}
