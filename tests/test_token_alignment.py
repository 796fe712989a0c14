"""Token alignment between a teacher's tokens and a student's target: spans, DP alignment, vocabulary maps."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytest
import torch

from cotfactory.errors import ConfigError
from cotfactory.students.token_alignment import (
    MAX_CHAR_TOKENS,
    REPLACEMENT,
    VocabularyMap,
    VocabularyMismatch,
    align_positions,
    check_vocabularies,
    dp_align,
    same_vocabulary,
    token_spans,
)

TEXT = "Tom has 12 apples, costs 3.50€ each 😀 café\n  so 12 × 3.50 = 42."


@pytest.fixture(scope="module")
def smol() -> Any:
    from cotfactory.model_loading import load_tokenizer, resolve_model_path

    return load_tokenizer(resolve_model_path(None))


@pytest.fixture(scope="module")
def byt5() -> Any:
    from transformers import ByT5Tokenizer

    return ByT5Tokenizer()


@pytest.fixture(scope="module")
def sentencepiece() -> Any:
    """A tiny SentencePiece-style tokenizer: '▁' spaces, byte fallback, a decoder that strips the first space."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<unk>": 0, "▁the": 1, "▁": 2, "the": 3, "<0x41>": 4, "A": 5, "▁A": 6, "<0xC3>": 7, "<0xA9>": 8, "a": 9}
    model = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>", byte_fallback=True))
    model.pre_tokenizer = pre_tokenizers.Metaspace()
    model.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    return PreTrainedTokenizerFast(tokenizer_object=model, unk_token="<unk>")


def prefix_spans(tokenizer: Any, ids: list[int]) -> list[tuple[int, int]]:
    """The obviously-correct O(n^2) reference: decode every prefix; a prefix that ends inside a character
    (fewer than MAX_CHAR_TOKENS tokens after the last complete one) gives its token an empty span."""
    spans, end, last_complete = [], 0, 0
    for k in range(len(ids)):
        prefix = tokenizer.decode(ids[: k + 1])
        if prefix.endswith(REPLACEMENT) and k + 1 - last_complete < MAX_CHAR_TOKENS and k < len(ids) - 1:
            spans.append((end, end))
            continue
        spans.append((end, len(prefix)))
        end, last_complete = len(prefix), k + 1
    return spans


def check_spans(tokenizer: Any, ids: list[int], spans: list[tuple[int, int]]) -> str:
    text = tokenizer.decode(ids)
    assert len(spans) == len(ids)
    assert "".join(text[start:end] for start, end in spans) == text
    assert all(prev[1] == cur[0] for prev, cur in zip(spans, spans[1:], strict=False))
    return text


# ---------------------------------------------------------------- token_spans


def test_spans_on_smollm2_cover_the_decoded_text(smol: Any) -> None:
    ids = smol.encode(TEXT)
    spans = token_spans(smol, ids)
    text = check_spans(smol, ids, spans)
    pieces = [text[start:end] for start, end in spans]
    assert pieces[ids.index(smol.convert_tokens_to_ids("ĠcafÃ©"))] == " café"  # two bytes of é in one token
    assert pieces.count("1") == 2 and pieces.count("2") == 3  # SmolLM2 writes numbers digit by digit
    emoji_start = smol.convert_tokens_to_ids("ĠðŁĺ")  # ' ' plus the first bytes of 😀: completes no character
    k = ids.index(emoji_start)
    assert spans[k][0] == spans[k][1] and pieces[k + 1] == " 😀"


def test_spans_on_bytes_give_a_multibyte_character_to_its_last_byte(byt5: Any) -> None:
    ids = byt5.encode("é€1", add_special_tokens=False)
    assert len(ids) == 6
    spans = token_spans(byt5, ids)
    check_spans(byt5, ids, spans)
    assert spans == [(0, 0), (0, 1), (1, 1), (1, 1), (1, 2), (2, 3)]


def test_spans_keep_sentencepiece_spaces(sentencepiece: Any) -> None:
    ids = [1, 1, 6, 7, 8, 2, 9, 1]  # the the A é ▁a the
    spans = token_spans(sentencepiece, ids)
    text = check_spans(sentencepiece, ids, spans)
    assert text == "the the Aé a the"
    assert [text[s:e] for s, e in spans] == ["the", " the", " A", "", "é", " ", "a", " the"]


def test_spans_match_prefix_decoding_on_random_token_soup(smol: Any) -> None:
    rng = random.Random(0)
    words = smol.encode(TEXT)
    partial = [smol.convert_tokens_to_ids(t) for t in ("ĠðŁĺ", "ðŁ", "Ģ", "âĤ", "ĺ")]
    for _ in range(25):
        ids = [rng.choice((rng.choice(words), rng.choice(partial), rng.randrange(len(smol)))) for _ in range(40)]
        spans = token_spans(smol, ids)
        check_spans(smol, ids, spans)
        assert spans == prefix_spans(smol, ids), ids


def test_spans_of_nothing(smol: Any) -> None:
    assert token_spans(smol, []) == []


# ---------------------------------------------------------------- align_positions


def test_same_tokenizer_aligns_identical_ids_inside_the_target(smol: Any) -> None:
    rationale = TEXT
    target = f" {rationale} --> 42"
    teacher_ids, student_ids = smol.encode(rationale), smol.encode(target)
    aligned = align_positions(token_spans(smol, teacher_ids), 1, token_spans(smol, student_ids))
    pairs = [(j, i) for j, i in enumerate(aligned) if i >= 0]
    assert all(student_ids[j] == teacher_ids[i] for j, i in pairs)
    assert aligned[0] == -1  # ' Tom' in the target is not the teacher's 'Tom'
    multi_token_chars = 1  # the byte-level pieces of 😀 stay unaligned
    assert len(pairs) == len(teacher_ids) - 1 - 2 * multi_token_chars
    assert all(i == -1 for i in aligned[-3:])  # ' -->', ' ', '4', '2' come after the teacher's text


def test_teacher_tokenization_that_differs_leaves_those_tokens_out(smol: Any) -> None:
    apples = smol.convert_tokens_to_ids("Ġapples")
    teacher_ids = smol.encode(TEXT)
    k = teacher_ids.index(apples)
    split = teacher_ids[:k] + smol.encode(" app") + smol.encode("les") + teacher_ids[k + 1 :]
    assert smol.decode(split) == smol.decode(teacher_ids)
    student_ids = smol.encode(TEXT)
    aligned = align_positions(token_spans(smol, split), 0, token_spans(smol, student_ids))
    assert aligned[k] == -1
    assert aligned[k - 1] == k - 1 and aligned[k + 1] == k + 2


def test_different_vocabularies_align_tokens_covering_the_same_text(smol: Any, byt5: Any) -> None:
    teacher_ids = smol.encode("so 12 × 3.50")
    student_ids = byt5.encode("so 12 × 3.50", add_special_tokens=False)
    aligned = align_positions(token_spans(smol, teacher_ids), 0, token_spans(byt5, student_ids))
    teacher = [smol.decode([i]) for i in teacher_ids]
    student = [byt5.decode([j]) for j in student_ids]
    digits = [j for j, text in enumerate(student) if text.isdigit()]
    assert all(teacher[aligned[j]] == student[j] for j in digits)
    assert all(aligned[j] == -1 for j, text in enumerate(student) if text in ("", "×", "s", "o"))


def test_spans_that_only_complete_a_character_are_not_aligned() -> None:
    teacher = [(0, 1), (1, 1), (1, 2), (2, 3)]  # x, [2 bytes of é], [last byte] , y
    student = [(0, 1), (1, 1), (1, 1), (1, 2), (2, 3)]
    assert align_positions(teacher, 0, student) == [0, -1, -1, -1, 3]
    assert align_positions([(0, 2)], 3, [(0, 3), (3, 5)]) == [-1, 0]


# ---------------------------------------------------------------- dp_align


def test_dp_align_pairs_equal_tokens_at_the_same_place() -> None:
    teacher = ["The", " answer", " is", " 42"]
    student = ["The", " ans", "wer", " is", " 4", "2"]
    assert dp_align(teacher, student) == [0, -1, -1, 2, -1, -1]


def test_dp_align_does_not_pair_equal_text_after_a_different_prefix() -> None:
    assert dp_align(["100", "0"], ["1", "0", "0", "0"]) == [-1, -1, -1, 1]
    assert dp_align(["1", "1", "11"], ["11", "1", "1"]) == [-1, -1, -1]


def test_dp_align_recovers_pairs_around_a_whitespace_difference() -> None:
    teacher = ["The", " answer", " is", " 42", "."]
    student = ["The", " ", " answer", " is", " 42", "."]
    assert dp_align(teacher, student) == [0, -1, 1, 2, 3, 4]
    assert dp_align(["It", " costs", " 5", "$"], ["It", " cost", " 5", "$"]) == [0, -1, 2, 3]


def test_dp_align_normalizes_space_markers_and_skips_partial_characters() -> None:
    assert dp_align(["ĠThe", "Ġanswer"], ["▁The", "▁answer"]) == [0, 1]
    assert dp_align(["a", "", " 😀", "b"], ["a", "", " 😀", "b"]) == [0, -1, -1, 3]
    assert dp_align(["a", " \ufffd", "\ufffd"], ["a", " \ufffd", "\ufffd"]) == [0, -1, -1]
    assert dp_align([], ["a"]) == [-1] and dp_align(["a"], []) == []


def test_dp_align_equals_the_span_method_when_texts_are_equal() -> None:
    rng = random.Random(1)
    for _ in range(50):
        text = "".join(rng.choice("ab 01.") for _ in range(rng.randrange(1, 40)))
        teacher, student = random_split(text, rng), random_split(text, rng)
        expected = align_positions(spans_of(teacher), 0, spans_of(student))
        assert dp_align(teacher, student) == expected, (teacher, student)


def random_split(text: str, rng: random.Random) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), rng.randrange(len(text)))) if len(text) > 1 else []
    return [text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def spans_of(tokens: list[str]) -> list[tuple[int, int]]:
    ends = np.cumsum([len(t) for t in tokens]).tolist()
    return list(zip([0, *ends[:-1]], ends, strict=True))


# ---------------------------------------------------------------- vocabularies


def test_same_tokenizer_maps_to_itself(smol: Any) -> None:
    from transformers import AutoTokenizer

    again = AutoTokenizer.from_pretrained(smol.name_or_path)
    assert same_vocabulary(smol, again)
    vocab_map = VocabularyMap.between(smol, again)
    assert vocab_map.identity and vocab_map.coverage == 1.0
    ids = torch.tensor([[5, -1, 9]])
    assert vocab_map.map(ids) is ids
    assert check_vocabularies(smol, again, align=False).identity


def test_smollm2_to_bytes_maps_single_byte_tokens(smol: Any, byt5: Any) -> None:
    vocab_map = VocabularyMap.between(smol, byt5)
    assert not vocab_map.identity
    tok = smol.convert_tokens_to_ids
    teacher = [tok("a"), tok("Ġ"), tok("7"), tok("Ġthe"), tok("Ã©"), tok("ðŁ"), -1, len(smol) + 10]
    expected = [byt5.convert_tokens_to_ids("a"), byt5.convert_tokens_to_ids(" "), byt5.convert_tokens_to_ids("7")]
    expected += [-1] * 5  # ' the' and 'é' are several bytes; 'ðŁ' is part of a character; -1; past the vocabulary
    assert vocab_map.map(np.array(teacher)).tolist() == expected
    as_tensor = vocab_map.map(torch.tensor(teacher).view(2, 4))
    assert as_tensor.shape == (2, 4) and as_tensor.dtype == torch.long
    assert as_tensor.flatten().tolist() == expected
    assert 0 < vocab_map.coverage < 0.01


def test_sentencepiece_spaces_and_byte_fallback_map_by_text(sentencepiece: Any, smol: Any) -> None:
    to_smol = VocabularyMap.between(sentencepiece, smol)
    tok = smol.convert_tokens_to_ids
    expected = [tok("Ġthe"), tok("Ġ"), tok("the"), tok("ĠA"), tok("A"), -1]  # '<0xC3>' alone is no character
    assert to_smol.map(np.array([1, 2, 3, 6, 4, 7])).tolist() == expected
    from_smol = VocabularyMap.between(smol, sentencepiece)
    assert from_smol.map(np.array([tok("A"), tok("Ġthe")])).tolist() == [5, 1]  # 'A', not the fallback <0x41>


def test_different_vocabularies_need_align(smol: Any, byt5: Any) -> None:
    assert not same_vocabulary(smol, byt5)
    with pytest.raises(VocabularyMismatch) as caught:
        check_vocabularies(smol, byt5, align=False)
    message = str(caught.value)
    assert smol.name_or_path in message and "ByT5Tokenizer" in message
    assert "(49152 tokens)" in message and f"({len(byt5)} tokens)" in message and "--align" in message
    assert isinstance(caught.value, ValueError) and isinstance(caught.value, ConfigError)
    assert not check_vocabularies(smol, byt5, align=True).identity
