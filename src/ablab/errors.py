"""Errors that ablab reports to the user as one clear message (exit code 2; 74 for ``StoreIOError``)."""

from __future__ import annotations


class AblabError(Exception):
    """Base class: a problem with the user's input, reported without a traceback."""


class SpecError(AblabError):
    """A study spec is invalid: names the file, the field and what is allowed."""

    def __init__(self, message: str, *, field: str | None = None, file: str | None = None):
        self.message = message
        self.field = field
        self.file = file
        super().__init__(self.render())

    def render(self) -> str:
        where = ": ".join(p for p in (self.file, self.field) if p)
        return f"{where}: {self.message}" if where else self.message

    def located(self, *, file: str | None = None, prefix: str | None = None) -> "SpecError":
        """The same error with the file and/or a field prefix filled in."""
        field = self.field
        if prefix:
            field = f"{prefix}.{field}" if field else prefix
        return SpecError(self.message, field=field, file=file or self.file)


class DataError(AblabError):
    """A dataset file is missing, truncated or does not have the expected format."""


class StoreError(AblabError):
    """A results directory is missing or is not an ablab store."""


class StoreIOError(StoreError):
    """A results directory cannot be read or written as it is (damaged, read-only, disk full): exit 74."""


def split_located(field: str | None, message: str) -> tuple[str | None, str]:
    """Move a nested error's own ``"sub.field: message"`` prefix onto ``field``."""
    inner, sep, rest = message.partition(": ")
    if sep and inner and " " not in inner and not inner.startswith("("):
        return (f"{field}.{inner}" if field else inner), rest
    return field, message
