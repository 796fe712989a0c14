"""Which teacher token predicts the same thing as each student token, and teacher ids as student ids.

The teacher's per-token record (its token id and top-K ids) lives in the teacher's tokenization of the
teacher's text; the student learns from a target text that contains that text, tokenized its own way.
Token-level distillation needs both links:

* positions: ``token_spans`` gives every token its character span in the decoded text;
  ``align_positions`` pairs teacher and student tokens with exactly the same span (the exact method,
  for a teacher text copied verbatim into the target); ``dp_align`` pairs tokens by an edit-distance
  alignment of the two texts (for texts that differ slightly, e.g. in whitespace).
* vocabularies: ``VocabularyMap`` sends teacher ids to the student id with the same text, or -1;
  ``check_vocabularies`` refuses different vocabularies unless alignment by text was asked for.

A token is left unaligned (-1) rather than risk a wrong pair: a student position fed the teacher's
distribution for a different prefix learns the wrong thing, while a missing pair only loses signal.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from cotfactory.errors import ConfigError

REPLACEMENT = "\ufffd"  # what a decoder writes for the bytes of a character it has not seen the end of
SPACE_MARKERS = str.maketrans({"Ġ": " ", "▁": " "})  # byte-level BPE and SentencePiece spellings of a space
MAX_CHAR_TOKENS = 4  # a UTF-8 character has at most 4 bytes, so at most 4 tokens end without completing it
DECODE_WINDOW = 8  # tokens of left context decoded with each new token (see token_spans)

Span = tuple[int, int]


# ---------------------------------------------------------------- character spans of tokens


def token_spans(tokenizer: Any, ids: list[int]) -> list[Span]:
    """The character span of each token in ``tokenizer.decode(ids)``.

    Tokens are decoded incrementally: each new token is decoded together with the few tokens before
    it (a window that starts on a character boundary about ``DECODE_WINDOW`` tokens back), and its
    text is what the window's text grows by. Decoding the window rather than each token alone keeps
    the tokenizer's context effects right (SentencePiece drops the leading space of the first token
    of a decode); decoding a window rather than the whole prefix keeps the cost at O(n) decodes of
    bounded length instead of O(n^2) characters.

    A token that completes no character (a byte-fallback token, or a byte-level token holding the
    first bytes of an emoji) gets an empty span at the current end; the token that completes the
    character gets the whole character. If the windowed texts do not add up to the full decode (a
    tokenizer with wider context effects), the spans are recomputed from whole prefixes.
    """
    text = tokenizer.decode(ids)
    for window in (DECODE_WINDOW, None):
        spans = _incremental_spans(tokenizer, ids, window, text)
        if spans is not None:
            return spans
    raise ValueError(
        f"tokenizer '{tokenizer_name(tokenizer)}': decoded prefixes of {len(ids)} tokens do not add up to their decode"
    )


def _incremental_spans(tokenizer: Any, ids: list[int], window: int | None, text: str) -> list[Span] | None:
    """Spans from decoding ``ids[start:k + 1]`` for each k, or None when they do not rebuild ``text``."""
    spans: list[Span] = []
    pieces: list[str] = []
    boundaries: deque[int] = deque([0], maxlen=None if window is None else window + 1)
    start, done, cur = 0, "", ""  # window start; its text already given to tokens; its full text
    for k in range(len(ids)):
        cur = tokenizer.decode(ids[start : k + 1])
        stalled = k + 1 - boundaries[-1]  # tokens since the last complete character, this one included
        if not cur.startswith(done) or (cur.endswith(REPLACEMENT) and stalled < MAX_CHAR_TOKENS):
            spans.append((_end(spans), _end(spans)))  # completes no character yet
            pieces.append("")
            continue
        piece = cur[len(done) :]
        spans.append((_end(spans), _end(spans) + len(piece)))
        pieces.append(piece)
        done = cur
        boundaries.append(k + 1)
        if boundaries[0] != start:  # slide the window; its text is decoded afresh from the new start
            start = boundaries[0]
            cur = done = tokenizer.decode(ids[start : k + 1])
    if ids and done != cur:  # the text ends inside a character: the last token gets what is left
        if not cur.startswith(done):
            return None
        pieces[-1] += cur[len(done) :]
        spans[-1] = (spans[-1][0], spans[-1][1] + len(cur) - len(done))
    return spans if "".join(pieces) == text else None


def _end(spans: list[Span]) -> int:
    return spans[-1][1] if spans else 0


def _alignable(spans: list[Span], i: int) -> bool:
    """A token with text of its own: tokens that only complete a character begun by earlier tokens are
    not, since their span does not say which of the character's bytes they carry."""
    start, end = spans[i]
    if start == end:
        return False
    return i == 0 or spans[i - 1] != (start, start)


def align_positions(teacher_spans: list[Span], teacher_text_offset: int, student_spans: list[Span]) -> list[int]:
    """For each student token, the teacher token with exactly the same character span, else -1.

    ``teacher_spans`` are spans in the teacher's text, which starts at character
    ``teacher_text_offset`` of the student's target text (the text of ``student_spans``). With the
    same vocabulary this pairs id-identical tokens wherever the two tokenizations agree; with different
    vocabularies it pairs tokens that cover the same text. Empty spans and tokens that only complete
    a multi-token character are never paired.
    """
    teacher_at = {
        (start + teacher_text_offset, end + teacher_text_offset): i
        for i, (start, end) in enumerate(teacher_spans)
        if _alignable(teacher_spans, i)
    }
    return [teacher_at.get(span, -1) if _alignable(student_spans, j) else -1 for j, span in enumerate(student_spans)]


# ---------------------------------------------------------------- alignment by edit distance


def normalize_token(token: str) -> str:
    """A token's text with the byte-level ('Ġ') and SentencePiece ('▁') space markers as spaces."""
    return token.translate(SPACE_MARKERS)


def dp_align(teacher_tokens: list[str], student_tokens: list[str]) -> list[int]:
    """For each student token, the teacher token it is aligned to by minimal edit distance, else -1.

    Fu et al. 2023 (Specializing Smaller Language Models towards Multi-Step Reasoning, Fig. 1C, their
    released ``dtw`` helper) and FuseLLM (Wan et al. 2024, ``dtw`` + ``transform_step_logits``) align
    two tokenizations by dynamic time warping over the token sequences, with the edit distance
    between two token strings as the cost of pairing them; a student token paired with exactly one
    teacher token of equal text takes that teacher's distribution. Warping lets one teacher token pair
    with several student tokens, and equal text at another place counts: for teacher ``["100", "0"]``
    and student ``["1", "0", "0", "0"]`` it pairs all three student "0"s with the teacher "0", though
    only the last one follows the same prefix.

    Here the dynamic program runs on characters instead: a minimal insert/delete edit script between
    the two concatenated texts (markers normalized by ``normalize_token``) maps each teacher character
    to a student character or to nothing, and a student token is aligned to a teacher token when both
    have the same text and each character of one is matched to the corresponding character of the
    other. Among the minimal scripts the one whose matched characters agree most on token starts and
    ends wins, so an extra space pairs with the student's lone " " token, not with the space of the
    following " answer". Same texts give the identity map, so this is exactly ``align_positions``
    (the span method); where the texts differ, the edit script skips the difference and the tokens
    around it still pair. Tokens whose text is empty or holds a replacement character, or that follow
    an empty token (the end of a multi-token character), are never aligned.

    Cost: the common prefix and suffix (cut back to token boundaries both sides share) are matched
    directly; the O(N·M) table (numpy, a row at a time) covers only the differing middle, so nearly
    equal texts cost O(N + M) and two different 1024-token texts well under a second.
    """
    teacher = [normalize_token(t) for t in teacher_tokens]
    student = [normalize_token(t) for t in student_tokens]
    char_map = _char_alignment(teacher, student)
    student_at = {start: j for j, start in enumerate(_starts(student)) if _text_alignable(student, j)}
    aligned = [-1] * len(student)
    for i, (token, start) in enumerate(zip(teacher, _starts(teacher), strict=True)):
        if not _text_alignable(teacher, i) or char_map[start] < 0:
            continue
        first = char_map[start]
        j = student_at.get(first, -1)
        if (
            j >= 0
            and student[j] == token
            and char_map[start : start + len(token)] == list(range(first, first + len(token)))
        ):
            aligned[j] = i
    return aligned


def _text_alignable(tokens: list[str], i: int) -> bool:
    token = tokens[i]
    return bool(token) and REPLACEMENT not in token and (i == 0 or tokens[i - 1] != "")


def _starts(tokens: list[str]) -> list[int]:
    """The character offset of each token in the concatenated text."""
    return [int(x) for x in np.cumsum([0] + [len(t) for t in tokens[:-1]])] if tokens else []


def _char_alignment(teacher: list[str], student: list[str]) -> list[int]:
    """For each character of the teacher's text, the student character a minimal edit script matches
    it to, else -1."""
    a, b = "".join(teacher), "".join(student)
    bounds_a = set(_starts(teacher)) | {len(a)}
    bounds_b = set(_starts(student)) | {len(b)}
    prefix = 0
    while prefix < min(len(a), len(b)) and a[prefix] == b[prefix]:
        prefix += 1
    while prefix not in bounds_a or prefix not in bounds_b:
        prefix -= 1
    suffix = 0
    while suffix < min(len(a), len(b)) - prefix and a[-1 - suffix] == b[-1 - suffix]:
        suffix += 1
    while len(a) - suffix not in bounds_a or len(b) - suffix not in bounds_b:
        suffix -= 1
    a_flags = _boundary_flags(len(a), bounds_a)[:, prefix : len(a) - suffix]
    b_flags = _boundary_flags(len(b), bounds_b)[:, prefix : len(b) - suffix]
    middle = _edit_alignment(a[prefix : len(a) - suffix], b[prefix : len(b) - suffix], a_flags, b_flags)
    shifted = [j + prefix if j >= 0 else -1 for j in middle]
    return list(range(prefix)) + shifted + list(range(len(b) - suffix, len(b)))


def _boundary_flags(length: int, bounds: set[int]) -> np.ndarray:
    """Row 0: the character starts a token; row 1: it ends one."""
    at = np.zeros(length + 1, dtype=np.int64)
    at[sorted(bounds)] = 1
    return np.stack([at[:-1], at[1:]])


def _edit_alignment(a: str, b: str, a_flags: np.ndarray, b_flags: np.ndarray) -> list[int]:
    """The minimal insert/delete edit script of ``a`` into ``b``, as the ``b`` index of each character
    of ``a`` (-1: deleted). Costs are lexicographic: an insert or delete costs ``unit``, more than all
    tie-break penalties together; matching equal characters costs 1 for each of start and end of token
    on which they disagree. Filled a row at a time; then traced back from the end."""
    n, m = len(a), len(b)
    if n == 0 or m == 0:
        return [-1] * n
    unit = 2 * min(n, m) + 1
    dtype = np.int32 if (n + m) * unit < 2**31 - 1 else np.int64
    unreachable = (n + m) * unit + 1
    a_codes = np.fromiter(map(ord, a), dtype=np.int64, count=n)
    b_codes = np.fromiter(map(ord, b), dtype=np.int64, count=m)
    steps = np.arange(m + 1, dtype=np.int64) * unit
    table = np.empty((n + 1, m + 1), dtype=dtype)
    table[0] = steps
    penalties = np.empty((n, m), dtype=np.int8)
    for i in range(1, n + 1):
        above = table[i - 1].astype(np.int64)
        penalties[i - 1] = (b_flags != a_flags[:, i - 1 : i]).sum(axis=0)
        matched = np.where(b_codes == a_codes[i - 1], above[:-1] + penalties[i - 1], unreachable)
        row = np.concatenate(([i * unit], np.minimum(above[1:] + unit, matched)))
        table[i] = np.minimum.accumulate(row - steps) + steps  # runs of inserts: min over k <= j of row[k] + (j-k)·unit
    result = [-1] * n
    i, j = n, m
    while i > 0 and j > 0:
        if a[i - 1] == b[j - 1] and table[i, j] == table[i - 1, j - 1] + penalties[i - 1, j - 1]:
            i, j = i - 1, j - 1
            result[i] = j
        elif table[i, j] == table[i - 1, j] + unit:
            i -= 1
        else:
            j -= 1
    return result


# ---------------------------------------------------------------- vocabularies


class VocabularyMismatch(ConfigError, ValueError):
    """Teacher and student tokenizers differ and no alignment by text was asked for."""


def tokenizer_name(tokenizer: Any) -> str:
    return getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__


def same_vocabulary(a: Any, b: Any) -> bool:
    """Whether two tokenizers give every token string the same id (added tokens included)."""
    return a is b or a.get_vocab() == b.get_vocab()


def token_texts(tokenizer: Any) -> list[str]:
    """The text of every id, decoded by the tokenizer's own decoder (byte-level bytes become
    characters, byte-fallback tokens become their character), with spaces as spaces. A SentencePiece
    decoder strips the leading space of a lone token; it is put back so ' the' stays ' the'."""
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    texts = []
    for token in tokens:
        if token is None:  # an id with no token (a gap in the vocabulary)
            texts.append("")
            continue
        text = normalize_token(tokenizer.convert_tokens_to_string([token]))
        if token.startswith("▁") and not text.startswith(" "):
            text = " " + text
        texts.append(text)
    return texts


class VocabularyMap:
    """Teacher ids → student ids by token text; -1 where the student has no token with that text."""

    def __init__(self, table: np.ndarray | None, teacher_name: str = "", student_name: str = "") -> None:
        self.table = table  # None: the same vocabulary, ids map to themselves
        self.identity = table is None
        self.teacher_name = teacher_name
        self.student_name = student_name
        self._device_tables: dict[str, Any] = {}

    @classmethod
    def between(cls, teacher_tok: Any, student_tok: Any) -> VocabularyMap:
        """Map each teacher id to the student id with identical decoded text.

        Texts that are empty or hold a replacement character (a lone partial byte) map to -1: equal
        text there says nothing about equal bytes. Where several student ids share a text (a
        byte-fallback ``<0x41>`` next to ``A``), the one whose own token string is that text wins —
        the id the student's tokenizer would produce — else the lowest id.
        """
        if same_vocabulary(teacher_tok, student_tok):
            return cls(None, tokenizer_name(teacher_tok), tokenizer_name(student_tok))
        student_ids: dict[str, int] = {}
        literal: set[str] = set()
        student_tokens = student_tok.convert_ids_to_tokens(list(range(len(student_tok))))
        for student_id, (text, token) in enumerate(zip(token_texts(student_tok), student_tokens, strict=True)):
            if not text or REPLACEMENT in text or text in literal:
                continue
            is_literal = normalize_token(token or "") == text
            if text not in student_ids or is_literal:
                student_ids[text] = student_id
            if is_literal:
                literal.add(text)
        table = np.array(
            [-1 if REPLACEMENT in text else student_ids.get(text, -1) for text in token_texts(teacher_tok)],
            dtype=np.int64,
        )
        return cls(table, tokenizer_name(teacher_tok), tokenizer_name(student_tok))

    @property
    def coverage(self) -> float:
        """The share of teacher ids that have a student id (1.0 for the same vocabulary)."""
        if self.table is None:
            return 1.0
        return float((self.table >= 0).mean()) if len(self.table) else 0.0

    def map(self, ids: Any) -> Any:
        """Teacher ids (a torch tensor or numpy array, any shape) as student ids, same shape and type.

        -1 stays -1, and so does an id past the teacher's tokenizer (models pad their output layer
        beyond the vocabulary, so top-K ids can land there).
        """
        if self.identity:
            return ids
        if isinstance(ids, np.ndarray):
            valid = (ids >= 0) & (ids < len(self.table))
            return np.where(valid, self.table[np.clip(ids, 0, len(self.table) - 1)], -1)
        import torch

        table = self._device_tables.get(str(ids.device))
        if table is None:
            table = self._device_tables[str(ids.device)] = torch.from_numpy(self.table).to(ids.device)
        valid = (ids >= 0) & (ids < len(table))
        return torch.where(valid, table[ids.clamp(0, len(table) - 1)], torch.full_like(ids, -1))


def check_vocabularies(teacher_tok: Any, student_tok: Any, align: bool) -> VocabularyMap:
    """The map for distilling the teacher's top-K into the student; different vocabularies need ``align``."""
    if same_vocabulary(teacher_tok, student_tok):
        return VocabularyMap(None, tokenizer_name(teacher_tok), tokenizer_name(student_tok))
    if not align:
        raise VocabularyMismatch(
            f"teacher tokenizer '{tokenizer_name(teacher_tok)}' ({len(teacher_tok)} tokens) and student tokenizer "
            f"'{tokenizer_name(student_tok)}' ({len(student_tok)} tokens) differ: token-level distillation needs the "
            "same vocabulary, or --align to align them by text"
        )
    return VocabularyMap.between(teacher_tok, student_tok)
