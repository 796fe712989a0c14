"""The README's configuration reference, generated from the same declaration as the CLI's flags.

Each table row is a config field; its flag column is the flag ``cotfactory.config.flags`` makes of
that field for the command named in the section, so the reference shows exactly the flags ``--help``
shows. ``python -m cotfactory.docs`` prints it; a test checks the README holds the current text and
that every command's flags equal its section's.
"""

from __future__ import annotations

from dataclasses import dataclass

from pydantic import BaseModel

from cotfactory.config.eval import EvalConfig
from cotfactory.config.fields import is_runtime
from cotfactory.config.filter import FilterConfig
from cotfactory.config.flags import Flag, default_text, model_flags
from cotfactory.config.generate import GenerateConfig
from cotfactory.config.pipeline import EvalSection, PipelineConfig, RoundsSection, StudentSection
from cotfactory.config.prune import PruneConfig
from cotfactory.config.train import TrainConfig
from cotfactory.teachers import TEACHERS


@dataclass(frozen=True)
class Section:
    title: str
    model: type[BaseModel]  # the keys the table lists
    command: str | None = None  # the CLI command whose flags the flag column shows
    command_model: type[BaseModel] | None = None  # the model that command is built from


SECTIONS = [
    Section("Pipeline file (top level)", PipelineConfig),
    Section("`generate:` — also `cotfactory generate` flags", GenerateConfig, "generate", GenerateConfig),
    Section("`filter:` — also `cotfactory filter` flags", FilterConfig, "filter", FilterConfig),
    Section(
        "`students:` (a list) — also `cotfactory train-student` flags", StudentSection, "train-student", TrainConfig
    ),
    Section("`eval:` — also `cotfactory eval` flags", EvalSection, "eval", EvalConfig),
    Section("`cotfactory eval` only", EvalConfig, "eval", EvalConfig),
    Section("`rounds:` — hard-problem rounds (pipeline only)", RoundsSection),
    Section("`cotfactory prune` flags", PruneConfig, "prune", PruneConfig),
]


def command_flags(model: type[BaseModel]) -> dict[str, Flag]:
    """Config key → its flag, for the command built from ``model``."""
    return {flag.field: flag for flag in model_flags(model)}


def reference_table(section: Section) -> str:
    flags = command_flags(section.command_model) if section.command_model else {}
    lines = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    shown = section.model.model_fields
    if section.model is EvalConfig:  # the keys only the command has
        shown = {k: v for k, v in shown.items() if k not in EvalSection.model_fields}
    for name, field in shown.items():
        flag = flags.get(name)
        spelled = "" if flag is None else f"`{flag.name}`" if not flag.argument else f"`{flag.name}` (argument)"
        runtime = " *(runtime: not part of the stage's fingerprint)*" if is_runtime(section.model, name) else ""
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {spelled} | {default_text(field)} | {description}{runtime} |")
    return "\n".join(lines)


def teacher_table(kind: str) -> str:
    """The options of one teacher adapter: under ``teacher:`` or flat beside ``teacher: KIND``."""
    options = TEACHERS.get(kind).Options
    flags = command_flags(GenerateConfig)
    lines = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    for name, field in options.model_fields.items():
        if name == "kind":
            continue
        runtime = " *(runtime)*" if is_runtime(options, name) else ""
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | `{flags[name].name}` | {default_text(field)} | {description}{runtime} |")
    return "\n".join(lines)


def generate_reference() -> str:
    parts = []
    for section in SECTIONS:
        parts.append(f"#### {section.title}\n\n{reference_table(section)}")
        if section.model is GenerateConfig:
            for kind in TEACHERS.names():
                parts.append(f"##### `teacher: {kind}` options\n\n{teacher_table(kind)}")
    return "\n\n".join(parts)


if __name__ == "__main__":
    print(generate_reference())
