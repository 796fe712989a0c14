"""Prompt templates: versioned YAML files rendered in Jinja2's sandbox with strict variables.

A template file holds front-matter style keys (name, version, description, form, stop, …) and
either ``messages`` (chat form) or ``prompt`` (completion form). A messages entry may be
``{for_each: exemplars, messages: [...]}``, which repeats its messages once per few-shot exemplar
with ``ex`` bound, so few-shot chat prompts are real alternating user/assistant turns.
"""

from __future__ import annotations

import difflib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import jinja2
import jinja2.meta
import yaml
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cotfactory.errors import DataError, TemplateError
from cotfactory.hashing import stable_hash
from cotfactory.paths import bundled
from cotfactory.records import Problem, RenderedPrompt, choice_letter
from cotfactory.registry import Registry

#: The variables a template may use. Anything else is an error when the template is loaded.
VARIABLES = {
    "question": "the problem's question",
    "choices": "list of answer options (choice problems), else None",
    "options": "choices as [{letter, text}] for '(a) …' formatting, else []",
    "gold": "the gold answer, or None (templates with requires_gold: true refuse problems without)",
    "answer_type": "number | choice | yes_no | text",
    "metadata": "the problem's metadata dict",
    "exemplars": "the few-shot exemplars loaded from the template's exemplars file",
    "ex": "the current exemplar inside a for_each block",
    "answer": "the answer the rationale must support, e.g. '(c) wooded area' (answer-first, contrastive templates)",
    "candidate": "the sample text being judged (judge templates)",
    "candidate_answer": "the sample's extracted answer (judge templates)",
}

_ENV = ImmutableSandboxedEnvironment(undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False)


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid")
    role: Literal["system", "user", "assistant"]
    content: str


class _ForEach(BaseModel):
    model_config = ConfigDict(extra="forbid")
    for_each: Literal["exemplars"]
    messages: list[_Message]


class TemplateSpec(BaseModel):
    """The validated contents of a template file."""

    model_config = ConfigDict(extra="forbid")

    name: str
    version: int = 1
    description: str = ""
    form: Literal["chat", "completion"]
    messages: list[_Message | _ForEach] | None = None
    prompt: str | None = None
    exemplars: str | None = Field(None, description="JSONL file of exemplars, relative to the template.")
    stop: list[str] = Field(default_factory=list)
    requires_gold: bool = False
    answer_types: list[Literal["number", "choice", "yes_no", "text"]] | None = None
    answer_pattern: str | None = Field(None, description="Regex whose group 1 is the final answer.")

    @field_validator("answer_pattern")
    @classmethod
    def _pattern_compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                groups = re.compile(value).groups
            except re.error as exc:
                raise ValueError(f"not a valid regular expression ({exc})") from None
            if groups < 1:
                raise ValueError("needs a group: group 1 is the final answer")
        return value

    @model_validator(mode="after")
    def _form_matches_body(self) -> TemplateSpec:
        if self.form == "chat" and (self.messages is None or self.prompt is not None):
            raise ValueError("form 'chat' needs 'messages' (and no 'prompt')")
        if self.form == "completion" and (self.prompt is None or self.messages is not None):
            raise ValueError("form 'completion' needs 'prompt' (and no 'messages')")
        return self


class Template:
    """A loaded, checked template. ``hash`` covers the file and its exemplars file."""

    def __init__(self, spec: TemplateSpec, path: Path, source_text: str, exemplars: list[dict], ex_text: str):
        self.spec = spec
        self.path = path
        self.exemplars = exemplars
        self.hash = stable_hash([source_text, ex_text], 12)
        self._compiled = self._compile()

    @property
    def name(self) -> str:
        return self.spec.name

    def _compile(self) -> list[tuple[str, Any]]:
        """Parse every Jinja snippet once and check it only uses known variables."""
        compiled: list[tuple[str, Any]] = []
        self.variables_used: set[str] = set()
        for snippet in self._snippets():
            try:
                ast = _ENV.parse(snippet)
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{self.path}:{exc.lineno}: template syntax error: {exc.message}") from exc
            used = jinja2.meta.find_undeclared_variables(ast)
            self.variables_used |= used
            unknown = used - VARIABLES.keys()
            if unknown:
                name = sorted(unknown)[0]
                raise TemplateError(
                    f"{self.path}: unknown template variable '{name}'"
                    f"{_suggest(name, VARIABLES)}; available: {', '.join(sorted(VARIABLES))}"
                )
            compiled.append((snippet, _ENV.from_string(snippet)))
        return compiled

    def _snippets(self) -> list[str]:
        if self.spec.prompt is not None:
            return [self.spec.prompt]
        out: list[str] = []
        for entry in self.spec.messages or []:
            inner = entry.messages if isinstance(entry, _ForEach) else [entry]
            out.extend(m.content for m in inner)
        return out

    @cached_property
    def _by_source(self) -> dict[str, jinja2.Template]:
        return dict(self._compiled)

    def _render_one(self, snippet: str, variables: dict[str, Any], problem_id: str) -> str:
        try:
            return self._by_source[snippet].render(**variables).strip()
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"{self.path}: problem '{problem_id}': {exc.message}") from exc
        except jinja2.exceptions.SecurityError as exc:
            raise TemplateError(f"{self.path}: refused by the sandbox: {exc}") from exc
        except Exception as exc:  # the template is the user's code: 1/0, a too-big range(), str + int, ...
            message = str(exc).replace("\n", " ")
            raise TemplateError(f"{self.path}: problem '{problem_id}': {type(exc).__name__}: {message}") from exc

    def variables_for(self, problem: Problem) -> dict[str, Any]:
        if self.spec.requires_gold and problem.gold is None:
            raise DataError(
                f"problem '{problem.id}' ({problem.source}) has no gold answer; template '{self.name}' needs one"
            )
        if self.spec.answer_types and problem.answer_type not in self.spec.answer_types:
            raise DataError(
                f"problem '{problem.id}' has answer type '{problem.answer_type}'; template '{self.name}' "
                f"is for {', '.join(self.spec.answer_types)}"
            )
        options = [{"letter": choice_letter(index), "text": text} for index, text in enumerate(problem.choices or [])]
        return {
            "question": problem.question,
            "choices": problem.choices,
            "options": options,
            "gold": problem.gold,
            "answer_type": problem.answer_type,
            "metadata": problem.metadata,
            "exemplars": self.exemplars,
        }

    def render(self, problem: Problem, extra: dict[str, Any] | None = None) -> RenderedPrompt:
        variables = {**self.variables_for(problem), **(extra or {})}
        if self.spec.prompt is not None:
            text = self._render_one(self.spec.prompt, variables, problem.id)
            return RenderedPrompt(text=text, stop=self.spec.stop)
        messages: list[dict[str, str]] = []
        for entry in self.spec.messages or []:
            if isinstance(entry, _ForEach):
                for ex in self.exemplars:
                    for m in entry.messages:
                        content = self._render_one(m.content, {**variables, "ex": ex}, problem.id)
                        messages.append({"role": m.role, "content": content})
            else:
                messages.append({"role": entry.role, "content": self._render_one(entry.content, variables, problem.id)})
        return RenderedPrompt(messages=messages, stop=self.spec.stop)


def _suggest(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


#: templates registered by user code (name → YAML file); a --prompts-dir folder still wins over these
TEMPLATES: Registry[Path] = Registry("template")


def available_templates(extra_dirs: list[Path] | None = None) -> dict[str, Path]:
    """Template name → file: the bundled ones, then registered ones, then --prompts-dir folders (the
    earlier folder winning); a later source wins a name."""
    found: dict[str, Path] = {path.stem: path for path in sorted(bundled("prompts").glob("*.yaml"))}
    found |= {name: Path(TEMPLATES.get(name)) for name in TEMPLATES}
    for folder in reversed(extra_dirs or []):
        found |= {path.stem: path for path in sorted(Path(folder).glob("*.yaml"))}
    return found


def load_template(name_or_path: str, extra_dirs: list[Path] | None = None) -> Template:
    """Load a template by bundled name or by path to a YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in {".yaml", ".yml"} and candidate.exists():
        path = candidate
    else:
        known = available_templates(extra_dirs)
        if name_or_path not in known:
            raise TemplateError(
                f"unknown template '{name_or_path}'{_suggest(name_or_path, known)}; "
                f"available: {', '.join(sorted(known))} (or give a path to a .yaml file)"
            )
        path = known[name_or_path]
    try:
        source_text = path.read_text(encoding="utf-8")
        raw = yaml.safe_load(source_text)
    except (OSError, UnicodeDecodeError) as exc:
        raise TemplateError(f"{path}: cannot read template: {exc}") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise TemplateError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if not isinstance(raw, dict):
        raise TemplateError(f"{path}: a template is a YAML mapping with keys name, form, messages|prompt")
    raw.setdefault("name", path.stem)
    try:
        spec = TemplateSpec.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "(top level)"
        raise TemplateError(f"{path}: field '{field}': {err['msg']}") from exc
    exemplars, ex_text = _load_exemplars(path, spec.exemplars)
    template = Template(spec, path, source_text, exemplars, ex_text)
    from cotfactory.exemplar_check import check_exemplars  # answers → records; imported after the template

    check_exemplars(template)
    return template


def _load_exemplars(template_path: Path, relative: str | None) -> tuple[list[dict], str]:
    if relative is None:
        return [], ""
    path = (template_path.parent / relative).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise TemplateError(f"{template_path}: exemplars file '{relative}' cannot be read: {exc.strerror}") from exc
    exemplars = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as exc:
            raise TemplateError(f"{path}:{number}: exemplar is not valid JSON ({exc.msg})") from exc
        if not isinstance(item, dict):
            raise TemplateError(f"{path}:{number}: an exemplar is a JSON object")
        exemplars.append(item)
    return exemplars, text
