"""Reading config files and merging defaults < file < flags, with one-line errors naming the field."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from cotfactory.errors import ConfigError


def read_config_file(path: str | Path) -> dict[str, Any]:
    """A YAML or JSON mapping of config keys; errors name the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}:{mark.line + 1}" if mark else str(path)
        raise ConfigError(f"{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config file is a mapping of keys to values")
    return data


def build_config(
    model: type[BaseModel], file_values: dict[str, Any], flag_values: dict[str, Any], source: str = "config"
) -> Any:
    """Merge defaults < file < flags (a flag left unset is ``None`` and does not override)."""
    flags = {k: v for k, v in flag_values.items() if v is not None}
    for key, value in list(flags.items()):
        section = file_values.get(key)
        if isinstance(section, dict) and isinstance(value, str) and section.get("kind") == value:
            del flags[key]  # "--teacher openai" over a file's {kind: openai, …} keeps the file's options
    merged = {**file_values, **flags}
    try:
        return model.model_validate(merged)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc, model, source)) from None


def describe_validation_error(exc: ValidationError, model: type[BaseModel], source: str) -> str:
    """The first error as one line: where, which field, what is wrong, and a suggestion."""
    errors = exc.errors()
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])  # a typo explains the rest
    field = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        close = difflib.get_close_matches(str(err["loc"][-1]), list(model.model_fields), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"{source}: unknown key '{field}'{hint}"
    if err["type"] == "missing":
        return f"{source}: '{field}' is required"
    message = err["msg"].removeprefix("Value error, ")
    if not field:
        return f"{source}: {message}"
    got = err.get("input")
    shown = "" if isinstance(got, dict) else f" (got {got!r})"  # a whole section says nothing more
    return f"{source}: field '{field}': {message}{shown}"
