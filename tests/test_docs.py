"""The README's configuration reference is generated from the pydantic model: it must not drift."""

from pathlib import Path

from cotfactory.docs import generate_reference

ROOT = Path(__file__).resolve().parent.parent


def test_readme_reference_is_current() -> None:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- generate-reference:start -->") + len("<!-- generate-reference:start -->")
    end = readme.index("<!-- generate-reference:end -->")
    assert readme[start:end].strip() == generate_reference().strip(), "run: python -m cotfactory.docs"


def test_readme_shows_the_two_commands() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "make demo" in readme and "make test" in readme


def _cli_spellings(command: str) -> set[str]:
    """Every flag (and positional argument's name) the command's --help shows."""
    import typer.main

    from cotfactory.cli import app

    click_command = typer.main.get_command(app).commands[command]  # type: ignore[attr-defined]
    spellings = set()
    for param in click_command.params:
        spellings |= set(param.opts) | set(param.secondary_opts) if param.param_type_name == "option" else set()
        if param.param_type_name == "argument":
            spellings.add(param.name.upper())
    return spellings - {"--config", "--help"}


def test_reference_flags_equal_the_cli_flags() -> None:
    """The reference's flag column is the CLI's flags, command by command, in both directions."""
    from cotfactory.docs import SECTIONS, command_flags

    for section in SECTIONS:
        if section.command is None or section.command_model is None:
            continue
        documented = {s for flag in command_flags(section.command_model).values() for s in flag.flags}
        documented |= {flag.name for flag in command_flags(section.command_model).values() if flag.argument}
        assert documented == _cli_spellings(section.command), section.command


def test_reference_names_no_flag_the_cli_lacks() -> None:
    """Every `--flag` in the README reference exists on some command (the old reference listed
    `--run-dir` and `--name`, which never did)."""
    import re

    readme = (ROOT / "README.md").read_text()
    start = readme.index("<!-- generate-reference:start -->")
    end = readme.index("<!-- generate-reference:end -->")
    shown = set(re.findall(r"`(--[a-z][a-z0-9-]*)`", readme[start:end]))
    existing = set().union(*(_cli_spellings(c) for c in ("generate", "filter", "train-student", "eval", "prune")))
    assert shown and shown <= existing, sorted(shown - existing)


def test_version_and_piped_listings_are_whole() -> None:
    from helpers import invoke_ok

    from cotfactory import __version__

    assert invoke_ok("--version").strip() == f"cotfactory {__version__}"
    lines = invoke_ok("templates").strip().splitlines()  # the test runner is no terminal
    names = [line.split("\t")[0] for line in lines]
    assert "few-shot-cot-gsm8k-completion" in names and all(len(line.split("\t")) == 5 for line in lines)


def test_piped_tables_keep_whole_rows(tmp_path) -> None:  # noqa: ANN001
    """Summaries printed to a pipe are neither cut nor wrapped: a long run directory stays on one line."""
    from helpers import invoke_ok

    cqa = ROOT / "data" / "cqa"
    run = tmp_path / ("a-run-directory-with-a-name-long-enough-to-be-cut-at-eighty-columns-" * 2)
    output = invoke_ok(
        "generate", "--input", cqa / "test_sample.json", "--format", "cqa", "--teacher", "replay",
        "--replay", cqa / "palm_test_sample.json", "--template", "few-shot-cot-cqa", "--out", run,
    )  # fmt: skip
    assert f"generate: {run}" in output and f"samples: {run / 'samples.jsonl'}" in output
    funnel = invoke_ok("filter", run, "--correct")
    assert f"filter: {run}" in funnel
    assert any(line.split("│")[1:2] == [" correct     "] for line in funnel.splitlines() if "│" in line)
