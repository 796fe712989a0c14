"""A few-shot template's exemplars show the teacher the answer format it will imitate; if our
extractor (with the template's ``answer_pattern``) cannot read that format back, every sample of the
run would be dropped as ``no_answer``. So a template is refused at load time, before any request,
when one of its own exemplars does not extract to that exemplar's answer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from cotfactory.answers import answers_match, extract, states_answer
from cotfactory.errors import TemplateError
from cotfactory.records import Problem

if TYPE_CHECKING:
    from cotfactory.prompts import Template

PROBE = "cotfactory-exemplar-check"


def check_exemplars(template: Template) -> None:
    """Raise TemplateError naming the first exemplar whose demonstrated answer does not extract."""
    answer_types = template.spec.answer_types or []
    if not template.exemplars or len(answer_types) != 1 or "answer" in template.variables_used:
        return  # without one answer type the answers cannot be read; answer-first templates are given theirs
    answer_type = answer_types[0]
    labels = sorted({str(ex["answer"]) for ex in template.exemplars if "answer" in ex})
    for number, (exemplar, text) in enumerate(_demonstrations(template), start=1):
        if "answer" not in exemplar:
            continue
        problem = Problem(
            id=f"{PROBE}-{number}",
            question=str(exemplar.get("question") or PROBE),
            answer_type=answer_type,
            choices=exemplar.get("choices") or (labels if answer_type == "choice" else None),
        )
        _, answer = extract(text, problem, template.spec.answer_pattern)
        stated = states_answer(text, template.spec.answer_pattern)
        if not stated or not answers_match(answer, str(exemplar["answer"]), problem):
            read = repr(answer) if stated else "no final-answer statement"
            raise TemplateError(
                f"{template.path}: exemplar {number} demonstrates the answer {exemplar['answer']!r}, but the "
                f"extractor reads {read} from it ({_ending(text)!r}); a teacher imitating it would give answers "
                "no one can read — end the exemplars with 'The answer is …' or set answer_pattern"
            )


def _demonstrations(template: Template) -> list[tuple[dict[str, Any], str]]:
    """Each exemplar with the text it shows the teacher: its assistant turns (chat), or its part of
    the prompt (completion, cut at the template's stop string, or blank lines)."""
    probe = Problem(
        id=PROBE,
        question=PROBE,
        answer_type=(template.spec.answer_types or ["text"])[0],
        choices=template.exemplars[0].get("choices") or ["a", "b"],
    )
    rendered = template.render(probe)
    if rendered.messages is None:
        separator = template.spec.stop[0] if template.spec.stop else "\n\n"
        parts = (rendered.text or "").split(separator)
        return list(zip(template.exemplars, parts, strict=False))
    answers = [m["content"] for m in rendered.messages if m["role"] == "assistant"]
    per_exemplar = len(answers) // len(template.exemplars) if answers else 0
    if per_exemplar == 0:
        return []
    return [
        (exemplar, "\n".join(answers[i * per_exemplar : (i + 1) * per_exemplar]))
        for i, exemplar in enumerate(template.exemplars)
    ]


def _ending(text: str, chars: int = 80) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= chars else "…" + flat[-chars:]
