"""Teachers turn requests into samples. One interface; a new adapter is one file plus a line here.

Adapters are imported only when chosen, so ``cotfactory generate --teacher openai`` never pays for
importing torch.
"""

from __future__ import annotations

import difflib
import importlib
from typing import TYPE_CHECKING

from cotfactory.errors import ConfigError

if TYPE_CHECKING:
    from cotfactory.config import GenerateConfig
    from cotfactory.teachers.base import Teacher

#: adapter name → module defining a ``Teacher`` subclass named ``TEACHER``.
ADAPTERS = {
    "openai": "cotfactory.teachers.openai_api",
    "hf": "cotfactory.teachers.hf",
    "replay": "cotfactory.teachers.replay",
}


def make_teacher(config: GenerateConfig) -> Teacher:
    if config.teacher not in ADAPTERS:
        close = difflib.get_close_matches(config.teacher, list(ADAPTERS), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        raise ConfigError(f"unknown teacher '{config.teacher}'{hint}; choose one of: {', '.join(ADAPTERS)}")
    module = importlib.import_module(ADAPTERS[config.teacher])
    return module.TEACHER(config)
