"""Reference tables for the README, generated from the pydantic models so they cannot drift.

``python -m cotfactory.docs`` prints them; a test checks the README holds the current text.
"""

from __future__ import annotations

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from cotfactory.config import GenerateConfig


def reference_table(model: type[BaseModel]) -> str:
    lines = ["| key | flag | default | meaning |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        default = "required" if field.default is PydanticUndefined else f"`{field.default!r}`"
        flag = "--template" if name == "templates" else f"--{name.replace('_', '-')}"
        lines.append(f"| `{name}` | `{flag}` | {default} | {field.description or ''} |")
    return "\n".join(lines)


def generate_reference() -> str:
    return reference_table(GenerateConfig)


if __name__ == "__main__":
    print(generate_reference())
