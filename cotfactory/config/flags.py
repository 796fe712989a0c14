"""Command-line flags derived from a config model, so a setting is declared once (as in
``HfArgumentParser``): its name, type, default and help come from the pydantic field.

- ``bool`` → ``--name/--no-name``; ``list[X]`` → a repeatable flag that also takes ``a,b,c``;
  ``Literal``/``int``/``float``/``str`` → a typed flag, validated by the model (errors name the field).
- ``argument()`` fields are positional; ``flag("x")`` renames a flag (``templates`` → ``--template``).
- The teacher's options come from every registered adapter's ``Options`` (``--model``, ``--base-url``, …):
  flags stay flat as they always were, and the config folds them under ``teacher``.

Every flag defaults to "unset" (None), so precedence is defaults < ``--config FILE`` < flags.
"""

from __future__ import annotations

import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from cotfactory.config.fields import field_extra
from cotfactory.config.files import build_config, read_config_file
from cotfactory.errors import ConfigError
from cotfactory.teachers.base import TeacherOptions

CONFIG_HELP = "YAML/JSON file with the same keys as the flags (flags win)."


@dataclass(frozen=True)
class Flag:
    """One command-line parameter of a config field."""

    field: str  # the config key it sets
    name: str  # "--base-url", or the metavar of a positional argument
    kind: type  # bool, int, float, str, or list (of ``item``)
    item: type
    help: str
    argument: bool = False
    metavar: str | None = None

    @property
    def flags(self) -> list[str]:
        """Every spelling ``--help`` shows."""
        if self.argument:
            return []
        if self.kind is bool:
            return [self.name, "--no-" + self.name.removeprefix("--")]
        return [self.name]


def model_flags(model: type[BaseModel]) -> list[Flag]:
    """The flags of ``model``'s fields, in declaration order (a teacher field becomes its options' flags)."""
    flags: list[Flag] = []
    for name, field in model.model_fields.items():
        if _is_teacher(field):
            flags.extend(teacher_flags(name, field))
        else:
            flags.append(_flag(model, name, field))
    return flags


def teacher_flags(name: str, field: FieldInfo) -> list[Flag]:
    """``--teacher`` plus the union of the registered adapters' options; a shared option's help names each."""
    from cotfactory.teachers import TEACHERS

    flags = [Flag(name, "--" + name, str, str, f"{field.description} One of: {', '.join(TEACHERS.names())}.")]
    helps: dict[str, list[str]] = {}
    fields: dict[str, tuple[type[BaseModel], FieldInfo]] = {}
    for kind in TEACHERS.names():
        options = TEACHERS.get(kind).Options
        for option, info in options.model_fields.items():
            if option == "kind":
                continue
            helps.setdefault(option, []).append(f"{kind}: {info.description}")
            fields.setdefault(option, (options, info))
    for option, (options, info) in fields.items():
        flag = _flag(options, option, info)
        flags.append(Flag(option, flag.name, flag.kind, flag.item, " ".join(helps[option])))
    return flags


def _flag(model: type[BaseModel], name: str, field: FieldInfo) -> Flag:
    extra = field_extra(model, name)
    kind, item = _cli_type(field.annotation)
    spelled = extra.get("flag", name.replace("_", "-"))
    help_text = field.description or ""
    if kind is list:
        help_text += " Repeat the flag or comma-separate."
    if extra.get("argument"):
        return Flag(name, name.upper(), kind, item, help_text, argument=True)
    return Flag(name, "--" + spelled, kind, item, help_text, metavar=extra.get("metavar"))


def _cli_type(annotation: Any) -> tuple[type, type]:
    """(kind, item) of a field's annotation: Optional unwrapped, Literal read as str, list kept as list."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        inner = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        return _cli_type(inner[0])
    if origin is list:
        return list, _cli_type(typing.get_args(annotation)[0])[0]
    if origin is typing.Literal:
        return str, str
    if annotation in (bool, int, float, str):
        return annotation, annotation
    return str, str


def _is_teacher(field: FieldInfo) -> bool:
    annotation = field.annotation
    return isinstance(annotation, type) and issubclass(annotation, TeacherOptions)


def parameters(flags: list[Flag]) -> list[inspect.Parameter]:
    """typer parameters (positional arguments first), every one defaulting to None: unset."""
    params = []
    for flag in sorted(flags, key=lambda f: not f.argument):
        if flag.argument:
            annotation: Any = Annotated[str, typer.Argument(help=flag.help, show_default=False)]
            params.append(inspect.Parameter(flag.field, inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=annotation))
            continue
        if flag.kind is bool:
            option = typer.Option(f"{flag.name}/--no-{flag.name.removeprefix('--')}", help=flag.help)
            annotation = Annotated[bool | None, option]
        elif flag.kind is list:
            metavar = flag.metavar or f"{flag.item.__name__.upper()},…"
            annotation = Annotated[list[str] | None, typer.Option(flag.name, help=flag.help, metavar=metavar)]
        else:
            option = typer.Option(flag.name, help=flag.help, metavar=flag.metavar)
            annotation = Annotated[flag.kind | None, option]  # type: ignore[operator]
        params.append(
            inspect.Parameter(flag.field, inspect.Parameter.KEYWORD_ONLY, annotation=annotation, default=None)
        )
    return params


def flag_values(flags: list[Flag], values: dict[str, Any]) -> dict[str, Any]:
    """Typer's values as config keys: lists split on commas and cast to their item type."""
    by_field = {flag.field: flag for flag in flags}
    resolved: dict[str, Any] = {}
    for field, value in values.items():
        flag = by_field[field]
        if flag.kind is list and value:
            items = [part.strip() for entry in value for part in entry.split(",") if part.strip()]
            try:
                value = [flag.item(item) for item in items]
            except ValueError:
                raise ConfigError(
                    f"{flag.name}: cannot read {','.join(items)!r} as a list of {flag.item.__name__}"
                ) from None
        elif flag.kind is list:
            value = None
        resolved[field] = value
    return resolved


def config_command(model: type[BaseModel]) -> Callable[[Callable[[Any], None]], Callable[..., None]]:
    """Turn ``run(config)`` into a typer command whose parameters are ``--config`` and ``model``'s flags."""
    flags = model_flags(model)

    def decorate(run: Callable[[Any], None]) -> Callable[..., None]:
        def command(config: Path | None = None, **values: Any) -> None:
            file_values = read_config_file(config) if config else {}
            source = str(config) if config else "flags"
            run(build_config(model, file_values, flag_values(flags, values), source=source))

        config_param = inspect.Parameter(
            "config",
            inspect.Parameter.KEYWORD_ONLY,
            annotation=Annotated[Path | None, typer.Option("--config", help=CONFIG_HELP)],
            default=None,
        )
        params = parameters(flags)
        positional = [p for p in params if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD]
        keyword = [p for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY]
        command.__signature__ = inspect.Signature([*positional, config_param, *keyword])  # type: ignore[attr-defined]
        command.__name__ = run.__name__
        command.__doc__ = run.__doc__
        return command

    return decorate


def default_text(field: FieldInfo) -> str:
    """A field's default as the reference shows it."""
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
        return f"`{value.kind!r}`" if isinstance(value, TeacherOptions) else f"`{value!r}`"
    return "required" if field.default is PydanticUndefined else f"`{field.default!r}`"
