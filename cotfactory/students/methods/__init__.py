"""Student methods: one file per distillation method, each holding its example builder, its reader
(inference) and its prompt strings, registered by name in ``METHODS``.

Adding a method is one file ending in ``METHOD = Method(...)`` plus one ``METHODS.register`` line —
here, or from user code (a plugin, a test module)::

    METHODS.register("toy", Method("toy", build, predict))

The built-ins are registered lazily: naming one imports only its file.
"""

from __future__ import annotations

from cotfactory.errors import ConfigError
from cotfactory.registry import Registry
from cotfactory.students.methods.base import (
    Method,
    MethodSettings,
    Prediction,
    PromptFormat,
    TrainingExample,
)
from cotfactory.students.records import TeachingRecord

__all__ = [
    "METHODS",
    "UNTRAINED_METHOD",
    "Method",
    "MethodSettings",
    "Prediction",
    "PromptFormat",
    "TrainingExample",
    "build_examples",
    "check_method",
]

METHODS: Registry[Method] = Registry("method")
for _name, _entry in (
    ("label-only", "label_only:METHOD"),
    ("step-by-step", "step_by_step:METHOD"),
    ("finetune-cot", "finetune_cot:METHOD"),
    ("socratic", "socratic:METHOD"),
    ("socratic-unified", "socratic:UNIFIED"),
    ("scott", "scott:METHOD"),
):
    METHODS.register(_name, f"{__name__}.{_entry}")

# A model evaluated untrained is asked as a label-only student: the "before" of every student trained from it.
UNTRAINED_METHOD = "label-only"


def check_method(name: str, where: str = "") -> Method:
    """The method called ``name``, refused in one line when unknown or when it has no reader (a student
    trained with it could not be evaluated). Cheap: call it before any data is read or model loaded."""
    method = METHODS.get(name, where)
    if method.predict is None:
        raise ConfigError(
            f"{where}method '{name}' has no inference (predict); a student trained with it could not be evaluated"
        )
    return method


def build_examples(name: str, records: list[TeachingRecord], settings: MethodSettings) -> list[TrainingExample]:
    """The training examples of method ``name``; none at all is an error (the input lacks what it needs)."""
    examples = METHODS.get(name).build(records, settings)
    if not examples:
        raise ConfigError(f"method '{name}': the input gives no training examples (see its requirements)")
    return examples
