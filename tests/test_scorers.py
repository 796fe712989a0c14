"""Scorers: reward model, answer gain (against a plain reference), and the LLM judge."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fake_openai_server import MODEL_ID, FakeServer
from helpers import make_sample

from cotfactory.config.filter import FilterConfig
from cotfactory.errors import ConfigError, CotfactoryError, TeacherError, TemplateError
from cotfactory.hashing import stable_hash
from cotfactory.prompts import load_template
from cotfactory.records import Problem
from cotfactory.scorers import make_scorer
from cotfactory.scorers.base import ScoreItem
from cotfactory.scorers.judge import UNPARSEABLE, parse_reply

ITEMS = [
    ("Tom has 3 apples and buys 4 more. How many apples does he have?", "3 + 4 = 7. The answer is 7.", "7"),
    (
        "A box holds 6 eggs. How many eggs are in 5 boxes?",
        "Each box has 6 eggs, so 6 * 5 = 30. The answer is 30.",
        "30",
    ),
    ("Is the sky green?", "No. The sky is blue on a clear day, not green. The answer is no.", "no"),
    ("What is 2 + 2?", "2 + 2 = 5. The answer is 5.", "5"),
    ("Where do people read books? Think about quiet public places.", "A library. The answer is (b) library.", "b"),
]


def item(question: str, text: str, answer: str | None, rationale: str = "", **problem: Any) -> ScoreItem:
    problem_id = f"p-{stable_hash([question, text], 8)}"
    sample = make_sample(answer, text, rationale=rationale, problem_id=problem_id, temperature=0.0, seed=0)
    return ScoreItem(Problem(id=problem_id, question=question, **problem), sample)


def scorer_config(reward: str, **values: Any) -> FilterConfig:
    return FilterConfig(run_dir=".", reward=reward, device="cpu", **values)


def one_line_error(exc: pytest.ExceptionInfo[CotfactoryError]) -> str:
    message = str(exc.value)
    assert "\n" not in message and message
    return message


# ---------------------------------------------------------------------------------------- reward model


def build_reward_model(path: Path, num_labels: int, chat: bool = True, max_positions: int = 256) -> Path:
    import torch
    from tiny_models import build_tokenizer
    from transformers import AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

    build_tokenizer(path / "tokenizer")
    tokenizer = AutoTokenizer.from_pretrained(path / "tokenizer")
    if not chat:
        tokenizer.chat_template = None
    tokenizer.save_pretrained(path / "model")
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        pad_token_id=tokenizer.pad_token_id,
        num_labels=num_labels,
    )
    torch.manual_seed(1)
    LlamaForSequenceClassification(config).save_pretrained(path / "model")
    return path / "model"


@pytest.fixture(scope="module")
def reward_one_label(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_reward_model(tmp_path_factory.mktemp("rm1"), num_labels=1)


def test_reward_model_batched_equals_one_at_a_time(reward_one_label: Path) -> None:
    items = [item(q, t, a) for q, t, a in ITEMS]
    scorer = make_scorer(scorer_config(str(reward_one_label), reward_batch_size=2))
    assert scorer.name == "reward-model" and scorer.tokenizer.chat_template
    batched = scorer.score(items)
    alone = [scorer.score([x])[0] for x in items]
    assert [s for s, _ in batched] == pytest.approx([s for s, _ in alone], abs=1e-4)
    assert scorer.score(items) == batched  # deterministic
    assert len({round(s, 6) for s, _ in batched}) == len(items)  # the texts matter
    again = make_scorer(scorer_config(str(reward_one_label), reward_batch_size=5))
    assert again.identity == scorer.identity  # batch size is not a setting


def test_reward_model_two_labels_plain_format(tmp_path: Path) -> None:
    import math

    folder = build_reward_model(tmp_path, num_labels=2, chat=False)
    scorer = make_scorer(scorer_config(str(folder), reward_batch_size=2))
    assert not scorer.tokenizer.chat_template
    assert scorer.format("Q?", "R.") == "Q?\n\nR."
    items = [item(q, t, a) for q, t, a in ITEMS]
    batched = [s for s, _ in scorer.score(items)]
    alone = [scorer.score([x])[0][0] for x in items]
    assert batched == pytest.approx(alone, abs=1e-4)
    assert all(s < 0 and math.exp(s) <= 1 for s in batched)  # log-probabilities of the "good" class


def test_reward_model_truncates_the_question_not_the_rationale(tmp_path: Path) -> None:
    folder = build_reward_model(tmp_path, num_labels=1, max_positions=48)
    scorer = make_scorer(scorer_config(str(folder), reward_batch_size=2))
    long_question = "How many apples? " * 40
    rationale = "Tom has 3 apples and buys 4 more, so 3 + 4 = 7. The answer is 7."
    ids = scorer.encode(item(long_question, rationale, "7"))
    assert len(ids) <= 48 and rationale in scorer.tokenizer.decode(ids)
    short = item("What is 2 + 2?", "2 + 2 = 4. The answer is 4.", "4")
    batched = scorer.score([item(long_question, rationale, "7"), short])
    assert batched[1][0] == pytest.approx(scorer.score([short])[0][0], abs=1e-4)


def test_reward_model_bad_paths_are_one_line_errors(tmp_path: Path, tiny_llama: Path) -> None:
    with pytest.raises((ConfigError, TeacherError)) as exc:
        make_scorer(scorer_config(str(tmp_path / "nowhere")))
    assert f"reward model '{tmp_path / 'nowhere'}': not a model folder (no config.json)" == one_line_error(exc)
    with pytest.raises(ConfigError) as exc:
        make_scorer(scorer_config(str(tiny_llama)))  # a causal LM has no trained score head
    assert "LlamaForCausalLM is not a sequence classifier" in one_line_error(exc)


# ----------------------------------------------------------------------------------------- answer gain


def reference_logp(model: Any, tokenizer: Any, context: str, answer: str) -> tuple[float, int]:
    """log p(answer tokens | context): one unpadded forward, tokens of context + answer after the context's."""
    import torch

    context_ids = tokenizer(context)["input_ids"]
    full_ids = tokenizer(context + answer)["input_ids"]
    assert full_ids[: len(context_ids)] == context_ids
    with torch.no_grad():
        logits = model(torch.tensor([full_ids])).logits[0]
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    total = sum(float(logprobs[pos - 1, full_ids[pos]]) for pos in range(len(context_ids), len(full_ids)))
    return total, len(full_ids) - len(context_ids)


def test_answer_gain_matches_the_plain_reference(tiny_llama: Path) -> None:
    items = [
        item(ITEMS[0][0], "ignored", "7", rationale="Tom has 3 apples and buys 4 more, so 3 + 4 = 7."),
        item(ITEMS[1][0], "6 * 5 = 30 eggs in all. The answer is 30.", "30"),  # no rationale: the text is used
        item(
            "Where do people read books?",
            "Quiet places.",
            "wooded area",
            rationale="Books are read in a quiet wooded area.",
            answer_type="choice",
            choices=["zoo", "wooded area", "ocean"],
        ),
        item("Is the sky green?", "", None),  # no answer
        item("What is 9 / 2?", "", "4.5", rationale="9 / 2 = 4.5"),  # a "." inside the answer
    ]
    scorer = make_scorer(scorer_config("answer-gain", scorer_model=str(tiny_llama), reward_batch_size=4))
    results = scorer.score(items)
    assert results[3] == (None, {"reason": "no_answer"})

    contexts = {
        0: ("Q: Tom has 3 apples and buys 4 more. How many apples does he have?\nA: ", " 7"),
        1: ("Q: A box holds 6 eggs. How many eggs are in 5 boxes?\nA: ", " 30"),
        2: ("Q: Where do people read books?\n(a) zoo (b) wooded area (c) ocean\nA: ", " wooded area"),
        4: ("Q: What is 9 / 2?\nA: ", " 4.5"),
    }
    rationales = {0: items[0].sample.rationale, 1: items[1].sample.text, 2: items[2].sample.rationale, 4: "9 / 2 = 4.5"}
    lengths = []
    for index, (head, answer) in contexts.items():
        with_, n = reference_logp(scorer.model, scorer.tokenizer, f"{head}{rationales[index]} The answer is", answer)
        without, _ = reference_logp(scorer.model, scorer.tokenizer, f"{head}The answer is", answer)
        score, details = results[index]
        assert details["answer_tokens"] == n
        lengths.append(n)
        assert details["with"] == pytest.approx(with_, abs=1e-4)
        assert details["without"] == pytest.approx(without, abs=1e-4)
        assert score == pytest.approx(with_ - without, abs=1e-4)
    assert max(lengths) >= 3  # multi-token answers are summed
    assert scorer.settings() == {"model": str(tiny_llama), "format": 1}


def test_answer_gain_runs_a_shared_prompt_once(tiny_llama: Path) -> None:
    question = ITEMS[0][0]
    rationales = ["3 + 4 = 7.", "Tom buys 4 more: 7.", "Three and four make seven.", "3 + 5 = 8."]
    answers = ["7", "7", "7", "8"]
    items = [item(question, "", a, rationale=r) for r, a in zip(rationales, answers, strict=True)]
    scorer = make_scorer(scorer_config("answer-gain", scorer_model=str(tiny_llama), reward_batch_size=8))
    results = scorer.score(items)
    assert scorer.rows_run == 4 + 2  # 4 "with" prompts, and "without" once per distinct answer (not 8 rows)
    for (score, _), rationale, answer in zip(results, rationales, answers, strict=True):
        head = f"Q: {question}\nA: "
        with_, _ = reference_logp(scorer.model, scorer.tokenizer, f"{head}{rationale} The answer is", f" {answer}")
        without, _ = reference_logp(scorer.model, scorer.tokenizer, f"{head}The answer is", f" {answer}")
        assert score == pytest.approx(with_ - without, abs=1e-4)


GAIN_PROBLEMS = [
    (
        "Tom has 3 apples and buys 4 more. How many apples does he have?",
        "7",
        "Tom starts with 3 apples and buys 4 more, so he has 3 + 4 = 7 apples.",
        "Tom starts with 3 apples and buys 4 more, so he has 3 + 5 = 8 apples.",
    ),
    (
        "A box holds 6 eggs. How many eggs are in 5 boxes?",
        "30",
        "Each box holds 6 eggs and there are 5 boxes, so there are 6 * 5 = 30 eggs.",
        "Each box holds 6 eggs and there are 5 boxes, so there are 6 * 4 = 24 eggs.",
    ),
    (
        "Sara had 10 candies and ate 3. How many candies are left?",
        "7",
        "Sara had 10 candies and ate 3, so 10 - 3 = 7 candies are left.",
        "Sara had 10 candies and ate 3, so 10 - 2 = 8 candies are left.",
    ),
    (
        "A pencil costs 2 dollars. How much do 4 pencils cost in dollars?",
        "8",
        "Each pencil costs 2 dollars, so 4 pencils cost 4 * 2 = 8 dollars.",
        "Each pencil costs 2 dollars, so 4 pencils cost 4 * 3 = 12 dollars.",
    ),
    (
        "12 cookies are shared equally among 3 friends. How many cookies does each friend get?",
        "4",
        "12 cookies shared equally among 3 friends gives 12 / 3 = 4 cookies each.",
        "12 cookies shared equally among 3 friends gives 12 / 2 = 6 cookies each.",
    ),
    (
        "Ben is 9 years old. How old will he be in 5 years?",
        "14",
        "Ben is 9 years old now, so in 5 years he will be 9 + 5 = 14 years old.",
        "Ben is 9 years old now, so in 5 years he will be 9 + 6 = 15 years old.",
    ),
]


@pytest.mark.slow
def test_answer_gain_smollm2_prefers_rationales_that_support_the_gold(smollm2: str) -> None:
    """Both rationales are scored for the gold answer: one supports it, the other argues for another number."""
    scorer = make_scorer(scorer_config("answer-gain", reward_batch_size=6))  # default: embedded SmolLM2
    correct = [item(q, r, gold, rationale=r) for q, gold, r, _ in GAIN_PROBLEMS]
    wrong = [item(q, w, gold, rationale=w) for q, gold, _, w in GAIN_PROBLEMS]
    correct_gains = [s for s, _ in scorer.score(correct)]
    wrong_gains = [s for s, _ in scorer.score(wrong)]
    mean_correct = sum(correct_gains) / len(correct_gains)
    mean_wrong = sum(wrong_gains) / len(wrong_gains)
    print(
        f"SmolLM2 answer gain for the gold answer: correct rationales {mean_correct:.3f}, "
        f"wrong-answer rationales {mean_wrong:.3f}; per problem {correct_gains} vs {wrong_gains}"
    )
    assert mean_correct > mean_wrong


# ----------------------------------------------------------------------------------------------- judge


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"score": 8}', 8.0),
        ('Sure! {"score": 7.5} done', 7.5),
        ("Score: 6", 6.0),
        ("9/10", 9.0),
        ('{"score": 11}', None),
        ("great", None),
        ('{"score": "x"}', None),
        ("", None),
    ],
)
def test_judge_reply_parser(reply: str, expected: float | None) -> None:
    assert parse_reply(reply) == expected


def test_judge_template_shows_the_candidate() -> None:
    template = load_template("judge")
    problem = Problem(id="m1", question="What is 2 + 2?", gold="4", answer_type="number")
    prompt = template.render(problem, extra={"candidate": "2 + 2 = 4. The answer is 4.", "candidate_answer": "4"})
    text = prompt.messages[0]["content"]
    assert "2 + 2 = 4. The answer is 4." in text and "Reference answer: 4" in text and '{"score": N}' in text
    with pytest.raises(TemplateError, match="'candidate' is undefined"):
        template.render(problem)  # only the judge scorer provides the candidate


def judge_items() -> list[ScoreItem]:
    # two samples of one problem: their judge requests must not be confused
    same = Problem(id="same", question=ITEMS[0][0], gold="7", answer_type="number")
    twins = [ScoreItem(same, item(same.question, text, answer).sample) for _, text, answer in ITEMS[:2]]
    return [*(item(q, t, a) for q, t, a in ITEMS[2:]), *twins]


def test_judge_through_fake_server_gives_unparseable_verdicts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JUDGE_TEST_KEY", "k")
    items = judge_items()
    with FakeServer("--latency", "0") as server:
        config = scorer_config(
            "judge",
            judge_teacher="openai",
            judge_model=MODEL_ID,
            judge_base_url=[server.base_url],
            judge_api_key_env="JUDGE_TEST_KEY",
            reward_batch_size=4,
        )
        scorer = make_scorer(config)
        results = scorer.score(items)
        again = scorer.score(items)  # a second batch: a new event loop, a fresh client
        stats = server.stats()
    assert stats["ok"] == 2 * len(items) and stats["by_body"] == len(items)  # one judge prompt per candidate
    assert again == results
    for score, details in results:
        assert score is None and details["reason"] == UNPARSEABLE
        assert details["reply"].endswith(".") and "The answer is" in details["reply"]
    assert len({details["reply"] for _, details in results}) == len(items)  # one reply per candidate
    assert scorer.settings() == {"teacher": "openai", "model": MODEL_ID, "template": load_template("judge").hash}


def test_judge_setup_errors_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("JUDGE_MISSING_KEY", raising=False)
    monkeypatch.setenv("JUDGE_TEST_KEY", "k")
    cases = [
        ({"judge_teacher": "replay", "judge_model": "x"}, ConfigError, "judge_teacher 'replay'"),
        ({"judge_teacher": "openai"}, ConfigError, "judge_model is required"),
        ({"judge_model": "m", "judge_api_key_env": "JUDGE_MISSING_KEY"}, TeacherError, "JUDGE_MISSING_KEY is not set"),
        (
            {"judge_model": "m", "judge_api_key_env": "JUDGE_TEST_KEY", "judge_base_url": ["http://127.0.0.1:9/v1"]},
            TeacherError,
            "cannot reach base URL http://127.0.0.1:9/v1",
        ),
        ({"judge_model": "m", "judge_template": "zero-shot-cot"}, ConfigError, "never shows the sample"),
    ]
    for values, error, text in cases:
        with pytest.raises(error) as exc:
            make_scorer(scorer_config("judge", **values))
        assert text in one_line_error(exc)


def test_judge_with_local_hf_model(tiny_llama: Path) -> None:
    scorer = make_scorer(scorer_config("judge", judge_teacher="hf", judge_model=str(tiny_llama), reward_batch_size=2))
    items = judge_items()
    results = scorer.score(items)
    assert len(results) == len(items)
    for score, details in results:  # a random model writes no score; that is a verdict, not a crash
        assert score is None and details["reason"] == UNPARSEABLE and len(details["reply"]) <= 200
    assert scorer.score(items) == results  # temperature 0: the same replies, model kept loaded
