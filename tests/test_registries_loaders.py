"""The format registry: a loader registered from outside the package, and the did-you-mean error."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cotfactory.errors import ConfigError
from cotfactory.loaders.common import Entry, LoadOptions, Where, make_problem
from cotfactory.problems import LOADERS, available_formats, load_problems


def load_toy(path: Path, options: LoadOptions) -> Iterator[Entry]:
    """A toy format: one ``question = answer`` a line."""
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        question, _, answer = line.partition(" = ")
        where = Where(str(path), line=number)
        problem = make_problem(
            where, id=f"toy-{number}", question=question, gold=answer, answer_type="number", source=options.source
        )
        yield where, problem


@pytest.fixture
def toy_format() -> Iterator[str]:
    LOADERS.register("toy", load_toy)
    try:
        yield "toy"
    finally:
        LOADERS.unregister("toy")


def test_a_loader_registered_from_a_test_module(toy_format: str, tmp_path: Path) -> None:
    path = tmp_path / "sums.txt"
    path.write_text("1 + 1 = 2\n2 + 3 = 5\n", encoding="utf-8")
    assert toy_format in available_formats()
    problems = load_problems(toy_format, path)
    assert [(p.id, p.question, p.gold, p.answer_type) for p in problems] == [
        ("toy-1", "1 + 1", "2", "number"),
        ("toy-2", "2 + 3", "5", "number"),
    ]
    assert {p.source for p in problems} == {"toy:sums.txt"}
    assert load_problems(toy_format, path, limit=1)[0].id == "toy-1"


def test_unregister_removes_the_toy_format(tmp_path: Path) -> None:
    LOADERS.register("toy", load_toy)
    LOADERS.unregister("toy")
    assert "toy" not in LOADERS
    with pytest.raises(ConfigError, match="unknown format 'toy'"):
        load_problems("toy", tmp_path / "x.txt")


def test_unknown_format_names_the_closest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_problems("gsm8kk", tmp_path / "x.jsonl")
    message = str(caught.value)
    assert message.startswith("unknown format 'gsm8kk' (did you mean 'gsm8k'?); available: ")
    assert "\n" not in message


def test_built_in_loaders_are_imported_on_first_use() -> None:
    """Importing ``cotfactory.problems`` imports no loader module; a lookup imports that one only."""
    code = (
        "import sys; from cotfactory.problems import LOADERS; "
        "loaded = {m for m in sys.modules if m.startswith('cotfactory.loaders.')}; "
        "assert loaded == {'cotfactory.loaders.common'}, loaded; "
        "from cotfactory.loaders.gsm8k import load_gsm8k; assert LOADERS.get('gsm8k') is load_gsm8k; "
        "assert 'cotfactory.loaders.svamp' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
