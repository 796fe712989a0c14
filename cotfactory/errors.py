"""One exception hierarchy. User errors become one line and exit code 2; anything else is a bug."""


class CotfactoryError(Exception):
    """A problem the user can fix. The message is one line naming the file, line or field."""

    exit_code = 2


class ConfigError(CotfactoryError):
    """A bad flag, config file key or value."""


class DataError(CotfactoryError):
    """A bad input file: malformed line, missing field, wrong type."""


class TemplateError(CotfactoryError):
    """An unknown template, a template that does not parse, or an unknown template variable."""


class TeacherError(CotfactoryError):
    """A teacher that cannot be set up: unreachable URL, missing key, unloadable model."""


def first_line(exc: BaseException) -> str:
    """An exception as one line: library errors (transformers, OSError) often span many."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
