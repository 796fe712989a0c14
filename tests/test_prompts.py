"""Prompt templates: every bundled one renders; bad templates fail with file and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from cotfactory.errors import DataError, TemplateError
from cotfactory.prompts import available_templates, load_template
from cotfactory.records import Problem

MATH = Problem(id="m1", question="Tom has 3 apples and buys 4 more. How many?", gold="7", answer_type="number")
CHOICE = Problem(
    id="c1",
    question="Where do beavers get wood?",
    gold="wooded area",
    answer_type="choice",
    choices=["zoo", "wooded area", "ocean", "desert", "sky"],
)
YES_NO = Problem(id="y1", question="Is the sky green?", gold="no", answer_type="yes_no")


def test_bundled_templates_are_listed() -> None:
    names = set(available_templates())
    assert {
        "zero-shot-cot",
        "few-shot-cot-gsm8k",
        "few-shot-cot-gsm8k-completion",
        "few-shot-cot-cqa",
        "rationalize",
        "decompose",
    } <= names


def test_zero_shot_cot_renders_each_answer_type() -> None:
    template = load_template("zero-shot-cot")
    math = template.render(MATH).messages[0]["content"]
    assert math.startswith("Q: Tom has 3 apples") and math.endswith("A: Let's think step by step.")
    choice = template.render(CHOICE).messages[0]["content"]
    assert "(b) wooded area" in choice and "(e) sky" in choice and "(x) choice" in choice
    assert "yes or no" in template.render(YES_NO).messages[0]["content"]


def test_few_shot_chat_makes_alternating_turns() -> None:
    template = load_template("few-shot-cot-gsm8k")
    messages = template.render(MATH).messages
    assert len(template.exemplars) == 4
    roles = [m["role"] for m in messages]
    assert roles == ["system"] + ["user", "assistant"] * 4 + ["user"]
    assert messages[2]["content"].endswith(f"The answer is {template.exemplars[0]['answer']}.")
    assert messages[-1]["content"] == f"Q: {MATH.question}"
    assert "<<" not in messages[2]["content"]  # calculator annotations stripped from exemplars


def test_few_shot_cqa_letters_the_exemplar_answer() -> None:
    template = load_template("few-shot-cot-cqa")
    messages = template.render(CHOICE).messages
    ex = template.exemplars[0]
    letter = "abcde"[ex["choices"].index(ex["answer"])]
    assert messages[2]["content"].endswith(f"So the answer is ({letter}) {ex['answer']}.")
    assert "(a) zoo" in messages[-1]["content"]


def test_completion_form_and_stop_strings() -> None:
    prompt = load_template("few-shot-cot-gsm8k-completion").render(MATH)
    assert prompt.messages is None and prompt.text.endswith(f"Q: {MATH.question}\nA:")
    assert prompt.text.count("\nA: ") == 4 and "\n\nQ:" in prompt.stop


def test_rationalize_needs_gold_and_states_it() -> None:
    template = load_template("rationalize")
    assert "The correct answer is 7." in template.render(MATH).messages[0]["content"]
    with pytest.raises(DataError, match="problem 'nogold' .* has no gold answer; template 'rationalize'"):
        template.render(Problem(id="nogold", question="q"))


def test_decompose_is_socratic() -> None:
    messages = load_template("decompose").render(MATH).messages
    assert " ** " in messages[2]["content"] and messages[-1]["content"].startswith("Tom has 3 apples")


def test_template_hash_changes_with_content(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text("form: completion\nprompt: 'Q: {{ question }}'\n")
    first = load_template(str(path))
    assert first.name == "mine" and first.render(MATH).text == f"Q: {MATH.question}"
    path.write_text("form: completion\nprompt: 'Question: {{ question }}'\n")
    assert load_template(str(path)).hash != first.hash


def test_answer_types_guard(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="answer type 'choice'; template 'few-shot-cot-gsm8k' is for number"):
        load_template("few-shot-cot-gsm8k").render(CHOICE)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "form: completion\nprompt: '{{ questoin }}'\n",
            "unknown template variable 'questoin' (did you mean 'question'?)",
        ),
        ("form: completion\nprompt: '{{ question '\n", "template syntax error"),
        ("form: chat\nprompt: 'x'\n", "field '(top level)': Value error, form 'chat' needs 'messages'"),
        ("form: completion\nprompt: x\ncolour: red\n", "field 'colour': Extra inputs are not permitted"),
        ("form: completion\nprompt: [unclosed\n", "invalid YAML"),
        ("- just\n- a list\n", "a template is a YAML mapping"),
        ("form: completion\nprompt: x\nanswer_pattern: 'answer is ('\n", "field 'answer_pattern'"),
        ("form: completion\nprompt: x\nanswer_pattern: 'answer is \\d+'\n", "needs a group"),
        ("form: completion\nprompt: x\nexemplars: nowhere.jsonl\n", "exemplars file 'nowhere.jsonl' cannot be read"),
    ],
)
def test_bad_templates_fail_with_the_file(tmp_path: Path, body: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(body)
    with pytest.raises(TemplateError) as info:
        load_template(str(path))
    assert str(path) in str(info.value) and message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_template_name_suggests() -> None:
    with pytest.raises(TemplateError, match="unknown template 'zero-shot-cto' \\(did you mean 'zero-shot-cot'\\?\\)"):
        load_template("zero-shot-cto")


@pytest.mark.parametrize(
    "attack",
    [
        "{{ question.__class__.__mro__[1].__subclasses__() }}",
        "{{ ''.__class__.__base__.__subclasses__() }}",
        "{{ metadata.__init__.__globals__ }}",
        "{{ exemplars.append(1) }}",
        "{{ cycler.__init__.__globals__.os.popen('id').read() }}",
    ],
)
def test_sandbox_blocks_escapes(tmp_path: Path, attack: str) -> None:
    path = tmp_path / "attack.yaml"
    path.write_text(f'form: completion\nprompt: "{attack}"\n')
    try:
        template = load_template(str(path))
    except TemplateError:
        return  # refused when loading (unknown variable such as 'cycler')
    with pytest.raises(TemplateError, match="sandbox|undefined|unsafe|has no attribute"):
        template.render(MATH)
