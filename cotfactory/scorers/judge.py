"""An LLM judge through any teacher adapter: it reads the candidate and replies ``{"score": N}``, 1-10.

The judge prompt is a template (bundled ``judge`` by default) that sees the candidate through the
``candidate`` and ``candidate_answer`` variables. A reply that does not parse, a score outside 1-10
and a failed request are all a verdict (score None, reason "unparseable judge reply"), never a crash.

Each ``score`` call runs its teacher inside one ``asyncio.run`` and closes it there: an OpenAI
client's connection pool belongs to the event loop it first ran in.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import jinja2
import jinja2.meta
from pydantic import BaseModel, Field, ValidationError

from cotfactory.errors import ConfigError
from cotfactory.hashing import stable_hash
from cotfactory.prompts import Template, load_template
from cotfactory.records import RenderedPrompt, Request, Sample
from cotfactory.scorers.base import Score, ScoreItem, Scorer
from cotfactory.teachers import make_teacher, teacher_options
from cotfactory.teachers.base import Teacher, TeacherOptions

if TYPE_CHECKING:
    from cotfactory.config.filter import FilterConfig

JUDGE_TEACHERS = ("openai", "hf")
MAX_TOKENS = 64
REPLY_CHARS = 200
UNPARSEABLE = "unparseable judge reply"

_JSON_OBJECT = re.compile(r"\{[^{}]*\}")
_SCORE_LABEL = re.compile(r"\bscore\s*[:=]\s*(-?\d+(?:\.\d+)?)", re.I)
_OUT_OF_TEN = re.compile(r"(-?\d+(?:\.\d+)?)\s*/\s*10\b")


class JudgeReply(BaseModel):
    score: float = Field(ge=1, le=10)


def parse_reply(text: str) -> float | None:
    """The judge's score: a JSON object with "score" anywhere in the text, else "Score: 7", else "7/10".

    The first form found decides; an out-of-range or non-numeric score there gives None.
    """
    raw = _first_score(text)
    if raw is None:
        return None
    try:
        return JudgeReply(score=raw).score
    except ValidationError:
        return None


def _first_score(text: str) -> Any:
    for match in _JSON_OBJECT.finditer(text):
        try:
            value = json.loads(match.group(0))
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict) and "score" in value:
            return value["score"]
    for pattern in (_SCORE_LABEL, _OUT_OF_TEN):
        if match := pattern.search(text):
            return match.group(1)
    return None


def verdict(sample: Sample | None) -> Score:
    """Score and details of one judge reply (None when the request failed or gave nothing)."""
    text = sample.text if sample is not None else ""
    details: dict[str, Any] = {"reply": text[:REPLY_CHARS]}
    if sample is None or sample.failed:
        details["error"] = sample.error if sample is not None else "no reply"
        return None, {"reason": UNPARSEABLE, **details}
    value = parse_reply(text)
    if value is None:
        return None, {"reason": UNPARSEABLE, **details}
    return value, details


class JudgeScorer(Scorer):
    name = "judge"

    def __init__(self, config: FilterConfig):
        super().__init__(config)
        self.teacher_options = judge_teacher_options(config)
        self.template = load_template(config.judge_template)
        _check_template(self.template)
        teacher = make_teacher(self.teacher_options)
        teacher.check_prompt(_sample_prompt(self.template))
        asyncio.run(_preflight(teacher))
        #: kept for the next batch only when it holds nothing tied to an event loop (see _reusable)
        self._teacher: Teacher | None = teacher if _reusable(teacher) else None
        self.model = teacher.model_label

    def settings(self) -> dict[str, Any]:
        return {"teacher": self.config.judge_teacher, "model": self.model, "template": self.template.hash}

    def score(self, items: list[ScoreItem]) -> list[Score]:
        teacher = self._teacher or make_teacher(self.teacher_options)
        requests = [self.request(item) for item in items]
        replies = asyncio.run(_judge(teacher, requests))
        self._teacher = teacher if _reusable(teacher) else None
        return [verdict(sample) for sample in replies]

    def request(self, item: ScoreItem) -> Request:
        problem, sample = item.problem, item.sample
        prompt = self.template.render(problem, extra={"candidate": sample.text, "candidate_answer": sample.answer})
        return Request(
            problem_id=problem.id,
            # the reply depends on the candidate too: two samples of one problem are two requests
            problem_hash=stable_hash([problem.content_hash, sample.text, sample.answer], 12),
            template=self.template.name,
            template_hash=self.template.hash,
            teacher=self.config.judge_teacher,
            model=self.model,
            temperature=0.0,
            seed=0,
            max_tokens=MAX_TOKENS,
            mode="judge",
            prompt=prompt,
        )


def judge_teacher_options(config: FilterConfig) -> TeacherOptions:
    """The judge's teacher, built from the judge_* keys by that adapter's own options."""
    if config.judge_teacher not in JUDGE_TEACHERS:
        raise ConfigError(f"judge_teacher '{config.judge_teacher}': choose one of {', '.join(JUDGE_TEACHERS)}")
    if config.judge_teacher == "openai" and not config.judge_model:
        raise ConfigError("judge_model is required with judge_teacher 'openai' (the served model's name)")
    values: dict[str, Any] = {"kind": config.judge_teacher, "model": config.judge_model}
    if config.judge_teacher == "openai":
        values |= {
            "base_url": config.judge_base_url,
            "api_key_env": config.judge_api_key_env,
            "concurrency": config.judge_concurrency,
        }
    else:
        values |= {"batch_size": config.reward_batch_size, "device": config.device}
    try:
        return teacher_options(values)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"judge: {'.'.join(map(str, first['loc']))}: {first['msg']}") from None


def _check_template(template: Template) -> None:
    """A judge template that never shows ``{{ candidate }}`` would judge every sample the same."""
    spec = template.spec
    snippets = [spec.prompt] if spec.prompt is not None else []
    for entry in spec.model_dump()["messages"] or []:
        snippets.extend(m["content"] for m in entry.get("messages", [entry]))
    environment = jinja2.Environment()
    if not any("candidate" in jinja2.meta.find_undeclared_variables(environment.parse(s)) for s in snippets):
        raise ConfigError(f"judge_template '{template.path}': never shows the sample ({{{{ candidate }}}})")


def _sample_prompt(template: Template) -> RenderedPrompt:
    """A prompt of the template's form, for the teacher's check that it can take that form."""
    if template.spec.form == "chat":
        return RenderedPrompt(messages=[{"role": "user", "content": "?"}])
    return RenderedPrompt(text="?")


def _reusable(teacher: Teacher) -> bool:
    """A teacher without its own ``aclose`` holds no connections, so it may outlive an event loop
    (this keeps a local judge model loaded across batches)."""
    return type(teacher).aclose is Teacher.aclose


async def _preflight(teacher: Teacher) -> None:
    try:
        await teacher.preflight()
    finally:
        await teacher.aclose()


async def _judge(teacher: Teacher, requests: list[Request]) -> list[Sample | None]:
    """Every request's sample, in request order (teachers may finish them in any order)."""
    slots: dict[str, list[int]] = defaultdict(list)
    for index, request in enumerate(requests):
        slots[request.key].append(index)
    replies: list[Sample | None] = [None] * len(requests)
    try:
        async for batch in teacher.generate(iter(requests)):
            for sample in batch:
                waiting = slots.get(sample.key)
                if waiting:  # equal keys have equal prompts: any of them may take this reply
                    replies[waiting.pop(0)] = sample
    finally:
        await teacher.aclose()
    return replies
