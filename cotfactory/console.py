"""The consoles every command prints through: rich's layout on a terminal; on a pipe or a file, a
wide one, so that a table row, a path or a listing is never cut or wrapped (grep and scripts get
whole lines) and no bar redraws itself."""

from __future__ import annotations

from rich.console import Console

PIPED_WIDTH = 400  # wide enough for any row we print; not so wide that a rule is a wall of dashes


def make_console(stderr: bool = False) -> Console:
    probe = Console(stderr=stderr)
    return probe if probe.is_terminal else Console(stderr=stderr, width=PIPED_WIDTH)


def section(console: Console, title: str) -> None:
    """A stage heading: a rule on a terminal, one plain line elsewhere."""
    if console.is_terminal:
        console.rule(title)
    else:
        console.print(f"== {title} ==", highlight=False)
