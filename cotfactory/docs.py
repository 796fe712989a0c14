"""Reference tables for the README, generated from the pydantic models so they cannot drift.

``python -m cotfactory.docs`` prints them; a test checks the README holds the current text.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cotfactory.config import GenerateConfig
from cotfactory.filter_config import FilterConfig
from cotfactory.pipeline import EvalSection, PipelineConfig, StudentSection

SECTIONS: list[tuple[str, type[BaseModel], str]] = [
    ("Pipeline file (top level)", PipelineConfig, ""),
    ("`generate:` — also `cotfactory generate` flags", GenerateConfig, "--"),
    ("`filter:` — also `cotfactory filter` flags", FilterConfig, "--"),
    ("`students:` (a list) — also `cotfactory train-student` flags", StudentSection, "--"),
    ("`eval:` — also `cotfactory eval` flags", EvalSection, "--"),
]


def reference_table(model: type[BaseModel], flag_prefix: str = "--") -> str:
    lines = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        default = "required" if field.default is PydanticUndefined else f"`{field.default!r}`"
        if field.default_factory is not None:
            default = f"`{field.default_factory()!r}`"
        flag = "" if not flag_prefix else "`--template`" if name == "templates" else f"`--{name.replace('_', '-')}`"
        description = (field.description or "").replace("|", "\\|")
        lines.append(f"| `{name}` | {flag} | {default} | {description} |")
    return "\n".join(lines)


def generate_reference() -> str:
    return "\n\n".join(f"#### {title}\n\n{reference_table(model, prefix)}" for title, model, prefix in SECTIONS)


if __name__ == "__main__":
    print(generate_reference())
