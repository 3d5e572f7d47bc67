"""Checks on what callers hand us; every refusal is an `InvalidInput` naming the argument."""

from __future__ import annotations

from notifier.errors import InvalidInput

# The host's ids are integer columns; ours are 64-bit. Anything larger cannot name a row anywhere.
MAX_ID = 2**63 - 1


def check_id(name: str, value: object) -> int:
    """A positive integer that fits a 64-bit column (bool is refused, though Python calls it an int)."""
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise InvalidInput(f"{name} must be a positive integer, got {_show(value)}")
    if value > MAX_ID:
        raise InvalidInput(f"{name} must be at most 2**63 - 1, got {value}")
    return value


def check_optional_id(name: str, value: object) -> int | None:
    return None if value is None else check_id(name, value)


def check_text(name: str, value: object, max_length: int, *, optional: bool = False) -> str | None:
    """A string (or None when `optional`) of at most `max_length` characters, with no NUL."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidInput(f"{name} must be a string{' or None' if optional else ''}, got {type(value).__name__}")
    if len(value) > max_length:
        raise InvalidInput(f"{name} must be at most {max_length} characters, got {len(value)}")
    if "\x00" in value:
        raise InvalidInput(f"{name} must not contain NUL characters")
    return value


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
