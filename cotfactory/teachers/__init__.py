"""Teachers turn requests into samples. One interface; a new adapter is one file plus its registration.

Adapters are imported only when chosen, so ``cotfactory generate --teacher openai`` never pays for
importing torch. Each adapter class carries its ``Options`` model: a config's ``teacher`` section is
validated by the chosen adapter's own options, never by a shared bag of every adapter's keys.
"""

from __future__ import annotations

from typing import Any

from cotfactory.registry import Registry
from cotfactory.teachers.base import Teacher, TeacherOptions

TEACHERS: Registry[type[Teacher]] = Registry("teacher")
TEACHERS.register("openai", "cotfactory.teachers.openai_api:OpenAITeacher")
TEACHERS.register("hf", "cotfactory.teachers.hf:HFTeacher")
TEACHERS.register("replay", "cotfactory.teachers.replay:ReplayTeacher")


def teacher_options(values: dict[str, Any], where: str = "") -> TeacherOptions:
    """``{kind: NAME, …}`` validated by adapter NAME's options (a ConfigError for an unknown kind)."""
    kind = values.get("kind")
    if not isinstance(kind, str):
        raise ValueError("teacher: 'kind' (the adapter's name) is required")
    options = TEACHERS.get(kind, where).Options.model_validate(values)
    options.check()
    return options


def make_teacher(options: TeacherOptions, retry_tokens: int = 0) -> Teacher:
    return TEACHERS.get(options.kind)(options, retry_tokens)
