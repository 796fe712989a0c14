"""One registry shape for every pluggable kind: loaders, teachers, filters, scorers, student methods.

An entry is registered by name, either as the object itself or as a lazy ``"module:attr"`` path that
is imported only when the entry is first used (``--teacher openai`` never pays for importing torch).
Adding a capability is one new file plus one ``register`` line — from inside the package or from
user code (a plugin, a test module)::

    TEACHERS.register("toy", ToyTeacher)            # an object
    TEACHERS.register("hf", "cotfactory.teachers.hf:HFTeacher")   # imported on first use

A lookup of an unknown name is one line a user can act on:
``unknown teacher 'opnai' (did you mean 'openai'?); available: hf, openai, replay``.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from cotfactory.errors import ConfigError

T = TypeVar("T")


class Registry(Generic[T]):
    """Named entries of one kind (``kind`` is the word used in errors: "teacher", "filter", …)."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T | str] = {}

    @overload
    def register(self, name: str, entry: T | str) -> T | str: ...
    @overload
    def register(self, name: str) -> Callable[[T], T]: ...

    def register(self, name: str, entry: T | str | None = None) -> T | str | Callable[[T], T]:
        """Add ``entry`` under ``name``; without ``entry``, a decorator. A name is registered once."""
        if entry is None:

            def decorator(obj: T) -> T:
                self.register(name, obj)
                return obj

            return decorator
        if name in self._entries:
            raise ValueError(f"{self.kind} '{name}' is already registered")
        self._entries[name] = entry
        return entry

    def unregister(self, name: str) -> None:
        """Remove an entry (tests that register a toy entry clean up with this)."""
        self._entries.pop(name, None)

    def get(self, name: str, where: str = "") -> T:
        """The entry, imported if it was registered lazily; an unknown name is a ConfigError."""
        if name not in self._entries:
            raise ConfigError(f"{where}{self.unknown(name)}")
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def unknown(self, name: str) -> str:
        """``unknown KIND 'name' (did you mean …); available: …``."""
        close = difflib.get_close_matches(name, list(self._entries), n=1)
        hint = f" (did you mean '{close[0]}'?)" if close else ""
        return f"unknown {self.kind} '{name}'{hint}; available: {', '.join(self.names())}"

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())
