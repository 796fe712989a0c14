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
