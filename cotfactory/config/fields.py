"""What a config field declares beyond pydantic's name, type, default and help.

Three facts, each set once on the field through ``json_schema_extra`` and read by the CLI builder,
the README reference and the pipeline's fingerprints:

- ``RUNTIME``: the field changes how a stage runs (speed, retries, logging, where it runs) but never
  what it writes, so it is left out of the stage's fingerprint — changing it reruns nothing.
- ``argument()``: on the command line the field is a positional argument, not a ``--flag``.
- ``flag("name")``: the flag is spelled differently from the field (``templates`` → ``--template``).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

RUNTIME: dict[str, Any] = {"runtime": True}


def argument(**extra: Any) -> dict[str, Any]:
    return {"argument": True, **extra}


def flag(name: str, **extra: Any) -> dict[str, Any]:
    return {"flag": name, **extra}


def field_extra(model: type[BaseModel], name: str) -> dict[str, Any]:
    extra = model.model_fields[name].json_schema_extra
    return extra if isinstance(extra, dict) else {}


def is_runtime(model: type[BaseModel], name: str) -> bool:
    return bool(field_extra(model, name).get("runtime"))


def output_settings(config: BaseModel) -> dict[str, Any]:
    """The settings that can change what a stage writes: every field not declared ``RUNTIME``,
    nested models (the teacher's options) included. A stage's fingerprint is built from this."""
    kept: dict[str, Any] = {}
    for name in type(config).model_fields:
        if is_runtime(type(config), name):
            continue
        value = getattr(config, name)
        if isinstance(value, BaseModel):
            kept[name] = output_settings(value)
        elif isinstance(value, list) and value and all(isinstance(v, BaseModel) for v in value):
            kept[name] = [output_settings(v) for v in value]
        else:
            kept[name] = config.model_dump(include={name}, mode="json")[name]
    return kept
