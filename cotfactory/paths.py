"""Where bundled files live: beside the package in a wheel, at the repository root in a checkout."""

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent


def bundled(name: str) -> Path:
    """The bundled folder ``name`` (``prompts``, ``data``, ``pipelines``)."""
    inside_wheel = _PACKAGE / "_bundled" / name
    if inside_wheel.exists():
        return inside_wheel
    return _PACKAGE.parent / name
